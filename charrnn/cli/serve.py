"""`charrnn serve`: a web page to play with models, and an HTTP API (charrnn.serve)."""

from __future__ import annotations

import ipaddress
import socket
import sys
import time
from pathlib import Path

import click

from charrnn.errors import InputError

INSTALL_HINT = 'charrnn serve needs Starlette and uvicorn: pip install "charrnn[serve]"'


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port), or InputError in one line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise InputError(f"--host {host}: not an address this machine has ({error.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        hint = "choose another --port" if port else "check --host"
        raise InputError(f"cannot listen on {host}:{port}: {error.strerror or error}; {hint}") from None
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/"


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise InputError(f"{name} must be 1 or more, got {value}")


@click.command("serve")
@click.argument("model_dirs", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but a loopback address lets every machine "
    "that can reach this one use the server.",
)
@click.option(
    "--port", default=8000, show_default=True, help="Port to listen on (0: any free port; the address is printed)."
)
@click.option(
    "--max-length", default=2000, show_default=True, help="Most characters a request may ask for, per sample."
)
@click.option("--max-num", default=8, show_default=True, help="Most samples one request may ask for.")
@click.option("--max-prime", default=2000, show_default=True, help="Most characters of prime a request may send.")
@click.option(
    "--max-text", default=20000, show_default=True, help="Most characters of text a request may send to /api/score."
)
@click.option("--max-body", default=65536, show_default=True, help="Largest request body, in bytes.")
@click.option(
    "--max-concurrent",
    default=64,
    show_default=True,
    help="Most samples generating at once, over all clients (a request for num "
    "samples takes num); a request past it is refused with status 429.",
)
@click.option(
    "--max-per-client",
    type=int,
    default=None,
    help="Most of those one client (remote address) may hold at once; past it, 429. "
    "[default: a quarter of --max-concurrent, at least --max-num]",
)
@click.option(
    "--max-connections", default=256, show_default=True, help="Most open connections; past it uvicorn answers 503."
)
def serve(
    model_dirs,
    host,
    port,
    max_length,
    max_num,
    max_prime,
    max_text,
    max_body,
    max_concurrent,
    max_per_client,
    max_connections,
):
    """Serve a web page at / to write with models, and a JSON API under /api/.

    MODEL_DIRS: model directories, each offered under its directory's name (default: the
    models bundled with charrnn). Concurrent requests on a model are generated together, as
    one batch. Ctrl-C stops the server.

    \b
    Examples:
      charrnn serve                       # then open http://127.0.0.1:8000/
      charrnn serve models/tiny-shakespeare --port 8080
    """
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise click.ClickException(INSTALL_HINT) from None

    _check_numbers(
        port,
        {
            "--max-length": max_length,
            "--max-num": max_num,
            "--max-prime": max_prime,
            "--max-text": max_text,
            "--max-body": max_body,
            "--max-concurrent": max_concurrent,
            "--max-connections": max_connections,
        },
        max_per_client,
    )

    from charrnn.serve.app import LOOPBACK_HOSTS, create_app
    from charrnn.serve.checks import Limits
    from charrnn.serve.models import model_directories
    from charrnn.serve.protocol import protocol_with_header_deadline

    served = _load_models(model_directories(model_dirs))
    limits = Limits(
        max_length=max_length,
        max_num=max_num,
        max_prime=max_prime,
        max_text=max_text,
        max_body=max_body,
        max_streams=max_concurrent,
        max_per_client=max_per_client,
    )
    loopback = _is_loopback(host)
    app = create_app(served, limits, allowed_hosts=LOOPBACK_HOSTS if loopback else None)
    sock = _listen(host, port)
    port = sock.getsockname()[1]
    if not loopback:
        click.echo(
            f"warning: listening on {host}: anyone who can reach this machine on port {port} can use this server",
            err=True,
        )
    click.echo(f"serving on {_url(host, port)} (Ctrl-C stops)", err=True)
    _run(uvicorn, app, sock, max_connections, protocol_with_header_deadline)
    click.echo("stopped", err=True)
    sys.stderr.flush()


def _check_numbers(port: int, counts: dict[str, int], max_per_client: int | None) -> None:
    """InputError in one line for a port out of range or a cap below 1."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port must be from 0 to 65535, got {port}")
    for name, value in counts.items():
        _positive(name, value)
    if max_per_client is not None:
        _positive("--max-per-client", max_per_client)


def _load_models(found: list) -> list:
    """The ServedModels of `found` ((name, directory) pairs), each described on stderr."""
    from charrnn.serve.models import load_served

    started = time.perf_counter()
    click.echo(f"loading {', '.join(name for name, _ in found)} ...", err=True)
    served = [load_served(name, directory) for name, directory in found]
    for model in served:
        info = model.info()
        bpc = f", {info['best_val_bpc']:.3f} bpc" if info["best_val_bpc"] is not None else ""
        click.echo(
            f"  {model.name}: {info['cell']}, {info['layers']} layer"
            f"{'s' if info['layers'] != 1 else ''}, {info['hidden']} units{bpc}",
            err=True,
        )
    if time.perf_counter() - started > 10:
        click.echo("(the first start compiles the kernels; later starts are quick)", err=True)
    return served


def _run(uvicorn, app, sock: socket.socket, max_connections: int, protocol_with_header_deadline) -> None:
    """uvicorn on `sock` until Ctrl-C (its HTTP protocol: protocol_with_header_deadline's); the
    socket closed after."""

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # End every generation first, so streaming clients get their final event and the
            # connections close at once rather than at the graceful-shutdown timeout.
            app.state.engine.close()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        server_header=False,
        http=protocol_with_header_deadline(),
        limit_concurrency=max_connections,
        timeout_keep_alive=5,
    )
    try:
        Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn hands the Ctrl-C back once it has shut down
        pass
    finally:
        sock.close()


COMMANDS = [serve]
