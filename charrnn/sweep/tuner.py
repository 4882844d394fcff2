"""Running a sweep's trials on Ray Tune: the sink actor on the driver's node, the Tuner (random
search over the space, ASHA early stopping, or Tune's saved experiment on resume), and Ray from
start to shutdown around its fit, with the bookkeeper (charrnn.sweep.book) following the trials."""

from __future__ import annotations

import logging
from pathlib import Path

from charrnn.kernels.threads import usable_cores
from charrnn.sweep import layout
from charrnn.sweep.book import Bookkeeper
from charrnn.sweep.ray_setup import start_ray
from charrnn.sweep.settings import SweepEvent, SweepSettings
from charrnn.sweep.space import Dimension

REDUCTION_FACTOR = 3  # ASHA keeps the best third at each rung
RUNGS = 2  # rungs before the end: at 1/9 and 1/3 of the trial budget
METRIC = "best_val_bpc"  # what ASHA compares and the trials are ranked by (lower is better)


def run_trials(
    ray,
    address: str | None,
    settings: SweepSettings,
    space: dict[str, Dimension],
    budget: dict,
    text_path: Path,
    data: bytes,
    out_dir: Path,
    resume: bool,
    book: Bookkeeper,
) -> None:
    """Ray started (or reached), the trials run by Tune until done or a second Ctrl-C, Ray shut
    down; `book` follows the trials meanwhile."""
    cpus = max(usable_cores(), (settings.concurrent or 1) * settings.threads)
    from charrnn.sweep import ray_parts  # imports ray.tune

    ray_logger = logging.getLogger("ray")
    previous_level = ray_logger.level
    try:
        where = start_ray(ray, address, cpus)
        # Trials' tracebacks go to Tune's error files; the one-line reason comes through the sink.
        ray_logger.setLevel(logging.CRITICAL)
        book.emit(SweepEvent("ray", book.progress(), text=where))
        cluster_cpus = ray.cluster_resources().get("CPU", 0)
        if address is not None and cluster_cpus < settings.threads:
            book.emit(
                SweepEvent(
                    "note",
                    book.progress(),
                    text=(
                        f"note: each trial asks for {settings.threads} CPUs (--threads) and the cluster "
                        f"has {cluster_cpus:g} now; trials wait until a node with that many joins"
                    ),
                )
            )
        sink = _start_sink(ray, ray_parts, out_dir, text_path)
        book.error_of = lambda name: ray.get(sink.error.remote(name))
        tuner = _make_tuner(ray_parts, settings, space, budget, text_path, data, sink, out_dir, resume)
        ray_parts.ACTIVE = book
        tuner.fit()
    except KeyboardInterrupt:  # a second Ctrl-C while Tune was stopping: the state is saved
        pass
    finally:
        ray_parts.ACTIVE = None
        ray_logger.setLevel(previous_level)
        ray.shutdown()


def _start_sink(ray, ray_parts, out_dir: Path, text_path: Path):
    """The sink actor, on this (the driver's) node, so trial directories land in out_dir."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    from charrnn.sweep.sink import TrialSink

    sink = (
        ray.remote(TrialSink)
        .options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
        .remote(str((out_dir / layout.TRIALS_DIR).resolve()), str(text_path.resolve()))
    )
    return sink


def _make_tuner(
    ray_parts,
    settings: SweepSettings,
    space: dict,
    budget: dict,
    text_path: Path,
    data: bytes,
    sink,
    out_dir: Path,
    resume: bool,
):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    job = {
        "corpus_name": text_path.name,
        "corpus_path": str(text_path.resolve()),
        "encoding": settings.encoding,
        "fixed": settings.fixed(),
        "budget": budget,
        "threads": settings.threads,
    }
    trainable = tune.with_resources(
        tune.with_parameters(ray_parts.run_trial, corpus=data, job=job, sink=sink), {"cpu": settings.threads}
    )
    experiment = layout.tune_experiment_dir(out_dir)
    if resume:
        return tune.Tuner.restore(
            str(experiment), trainable=trainable, resume_unfinished=True, resume_errored=False, restart_errored=False
        )
    scheduler: TrialScheduler
    if settings.early_stop:
        # Time is training seconds when the budget is in minutes, steps otherwise; rungs at a
        # ninth and a third of the budget, where the worse two thirds of the trials stop.
        if budget["minutes"] is not None:
            time_attr, max_t = "elapsed", budget["minutes"] * 60.0
        else:
            time_attr, max_t = "step", budget["steps"]
        scheduler = ASHAScheduler(
            time_attr=time_attr,
            max_t=max_t,
            grace_period=max_t / REDUCTION_FACTOR**RUNGS,
            reduction_factor=REDUCTION_FACTOR,
        )
    else:
        scheduler = FIFOScheduler()
    tune_config = tune.TuneConfig(
        metric=METRIC,
        mode="min",
        num_samples=settings.trials,
        scheduler=scheduler,
        # Random search; the generator itself limits the trials at once (Tune ignores
        # max_concurrent_trials when given a BasicVariantGenerator).
        search_alg=BasicVariantGenerator(random_state=settings.seed, max_concurrent=settings.concurrent or 0),
        # A finished or stopped trial's actor takes the next trial: no new process, no imports.
        reuse_actors=True,
        trial_name_creator=ray_parts.trial_name,
        trial_dirname_creator=ray_parts.trial_name,
    )
    run_config = tune.RunConfig(
        name=layout.EXPERIMENT_NAME,
        storage_path=str(experiment.parent),
        verbose=0,
        callbacks=[ray_parts.SweepCallback()],
        failure_config=tune.FailureConfig(max_failures=0),
    )
    param_space = {name: dim.to_tune() for name, dim in space.items()}
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
