"""Reaching Ray: whether it is installed (and what to install if not), the cluster address checked
before Ray is touched, the environment Ray reads when imported, and ray.init itself."""

from __future__ import annotations

import logging
import os
import socket

from charrnn.errors import CharRNNError, InputError

INSTALL_HINT = 'charrnn sweep needs Ray Tune: pip install "charrnn[sweep]"'
CONNECT_TIMEOUT = 5.0  # seconds to reach a cluster's address before giving up


class RayMissing(CharRNNError):
    """Ray Tune is not installed."""


class SweepError(CharRNNError):
    """Ray could not be started or reached, or the sweep could not run."""


def ray_installed() -> bool:
    """Whether Ray can be imported, without importing it (it reads settings when imported)."""
    import importlib.util

    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def require_ray():
    """Imports Ray Tune, or RayMissing saying what to install."""
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError:
        raise RayMissing(INSTALL_HINT) from None
    return ray


def resolve_address(address: str | None) -> str | None:
    """The cluster to run on: --address, else RAY_ADDRESS, else None (a local Ray for the run).
    A HOST:PORT that does not answer fails here, in one line, before Ray is touched."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None or address in ("auto", "local"):
        return address
    if address.startswith("ray://"):
        raise InputError(
            f"--address {address}: Ray Client addresses are not supported; run "
            "charrnn sweep on a node of the cluster (e.g. its head) with --address "
            "HOST:PORT of the head, or auto"
        )
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--address {address}: expected HOST:PORT (the head's GCS port, 6379 by default), or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise SweepError(
            f"--address {address}: no Ray cluster answers there ({reason}); start "
            "one with `ray start --head` or check the address"
        ) from None
    return address


def _is_loopback(address: str | None) -> bool:
    if address is None:
        return True
    host = address.rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def prepare_ray_environment(address: str | None) -> None:
    """Settings Ray reads from the environment, some when it is imported: so before that.
    A local Ray (or a cluster on this machine's loopback) keeps every address on 127.0.0.1
    instead of the machine's network address."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no prompt, no reporting home
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # our results.jsonl instead
    if address != "auto" and _is_loopback(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def start_ray(ray, address: str | None, cpus: int) -> str:
    """ray.init for the run; a line saying where the trials run."""
    options = dict(logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False, configure_logging=True)
    try:
        if address is None:
            ray.init(address="local", num_cpus=cpus, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        ray.shutdown()
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        hint = ""
        if address is not None and not os.environ.get("RAY_AUTH_MODE"):
            hint = (
                "; if the cluster uses token authentication, set RAY_AUTH_MODE=token (the "
                "token: RAY_AUTH_TOKEN or ~/.ray/auth_token)"
            )
        raise SweepError(f"Ray could not start or connect: {first}{hint}") from None
    resources = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    where = "a local Ray" if address is None else f"the Ray cluster at {address}"
    return f"Ray: {where}, {nodes} node{'s' if nodes != 1 else ''}, {resources.get('CPU', 0):g} CPUs"
