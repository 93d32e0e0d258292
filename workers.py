"""Serving with several worker processes (``WORKERS=N``): one machine's cores, one port.

uvicorn's supervisor starts N processes, each listening on the port with a socket of its own
(``SO_REUSEPORT``: the kernel spreads connections over them), and replaces any that dies. Each
worker loads the saved artifacts: the supervisor first trains and saves them if they are missing
or stale, in a child process, so N workers never train N times and the supervisor itself holds no
model. A worker accepts connections only once its model is loaded. SIGHUP to the supervisor (or
``POST /admin/reload`` on any worker, which sends it) is passed on to every worker, and each reloads
in place as a single process does: the new model loads beside the old one, which serves until the
swap, so no worker stops and no connection is closed.

The workers share a directory: prometheus_client's multiprocess files, so ``/metrics`` on any
worker counts every worker's requests, and one marker per ready worker, so ``/health`` on any
worker is 200 only when all N are ready.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path

from uvicorn.supervisors import Multiprocess

from settings import Settings

logger = logging.getLogger(__name__)

SHARED_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name for it
WORKER_START_SECONDS = 600  # a worker loads the saved artifacts; the supervisor waits this long for a new one


def shared_dir() -> Path | None:
    """The pool's shared directory, or None when this process serves alone."""
    value = os.environ.get(SHARED_DIR_VARIABLE)
    return Path(value) if value else None


def mark_ready(directory: Path) -> None:
    (directory / "ready").mkdir(exist_ok=True)
    (directory / "ready" / str(os.getpid())).touch()


def mark_gone(directory: Path, pid: int | None = None) -> None:
    """A worker leaves the pool: its marker and its live gauges go (a worker that was killed is
    cleared by the next worker that counts the pool)."""
    from prometheus_client import multiprocess

    pid = pid or os.getpid()
    (directory / "ready" / str(pid)).unlink(missing_ok=True)
    multiprocess.mark_process_dead(pid, str(directory))


def ready_workers(directory: Path) -> int:
    """Workers with a ready marker that are still alive."""
    markers = (directory / "ready").glob("*") if (directory / "ready").is_dir() else []
    alive = 0
    for marker in markers:
        if _alive(int(marker.name)):
            alive += 1
        else:
            mark_gone(directory, int(marker.name))
    return alive


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def aggregated_metrics(directory: Path) -> bytes:
    """Every worker's metrics, summed as each metric's multiprocess mode says."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry)


def ask_supervisor_to_reload() -> None:
    """SIGHUP to the supervisor, which passes it on to every worker (:class:`ReloadInPlace`)."""
    os.kill(os.getppid(), signal.SIGHUP)


def serve_workers(settings: Settings) -> int:
    """Prepares the models once, then serves ``settings.workers`` processes until SIGTERM or SIGINT."""
    import uvicorn

    try:
        # bound, never listening: it holds the port from the start (a taken port stops the start before any
        # model is loaded) and receives no connection; each worker listens on a socket of its own (WorkerSockets)
        port_holder = port_socket(settings.host, settings.port)
    except OSError as error:
        logger.error("start-up failed", extra={"reason": f"cannot bind {settings.host}:{settings.port}: {error}"})
        return 1
    directory = Path(tempfile.mkdtemp(prefix="nbp-workers-"))
    try:
        failure = prepare_models()
        if failure:
            logger.error("start-up failed", extra={"reason": failure})
            return 1
        os.environ[SHARED_DIR_VARIABLE] = str(directory)  # the workers inherit it
        share_the_cores(settings.workers)
        config = uvicorn.Config("workers:create_worker_app", factory=True, workers=settings.workers,
                                host=settings.host, port=settings.port, log_config=None, access_log=False,
                                log_level=settings.log_level.lower(),
                                timeout_graceful_shutdown=settings.shutdown_grace_seconds,
                                timeout_worker_healthcheck=WORKER_START_SECONDS)
        ReloadInPlace(config, sockets=WorkerSockets(settings.host, settings.port)).run()
    finally:
        port_holder.close()
        shutil.rmtree(directory, ignore_errors=True)
    return 0


class ReloadInPlace(Multiprocess):
    """uvicorn's supervisor, but SIGHUP reloads every worker in place instead of replacing it.

    uvicorn replaces each worker by a new process and retires the old one once the new one is ready;
    the retiring worker then closes the connections it had accepted and not yet read from, and drops
    what waits in its socket's queue (``SO_REUSEPORT``): a request could fail. Here each worker gets
    SIGHUP and swaps its model in as a single process does, so clients keep their connections. Each
    worker holds two models while it loads the new one."""

    def handle_hup(self) -> None:
        logger.info("SIGHUP: every worker reloads its model in place")
        for process in self.processes:
            try:
                os.kill(process.pid, signal.SIGHUP)
            except (ProcessLookupError, TypeError):  # gone (the supervisor replaces it) or not started
                continue


class WorkerSockets(list):
    """The sockets uvicorn's supervisor hands to every worker it starts, as a recipe: each worker
    unpickles it into a listening socket of its own on the port, bound with ``SO_REUSEPORT``, and the
    kernel spreads new connections over the workers' sockets by their addresses.

    Why not one socket shared by all: asyncio accepts every pending connection when its loop wakes, so
    the first worker to wake took all of a client's connections as often as not (measured, WORKERS=2,
    wrk with 8 connections: 2.0x one worker's throughput in the runs where both workers got connections,
    1.0x in those where one took all 8). A worker that is replaced binds afresh; connections still
    waiting in a retired worker's queue when it closes are refused, as with any ``SO_REUSEPORT`` server.
    """

    def __init__(self, host: str, port: int):
        super().__init__()
        self.host, self.port = host, port

    def __reduce__(self):
        return _worker_sockets, (self.host, self.port)


def _worker_sockets(host: str, port: int) -> list[socket.socket]:
    """In a worker: its own socket on the shared port (see :class:`WorkerSockets`)."""
    return [port_socket(host, port)]


def port_socket(host: str, port: int) -> socket.socket:
    """A socket bound to the workers' port with ``SO_REUSEPORT``, its protocol named. uvicorn's own binds
    with protocol 0, and asyncio sets TCP_NODELAY only on sockets whose protocol is TCP: its workers'
    answers then wait for the client's delayed ACK, 40 ms each (measured: 48 ms a request with two workers
    against 6 ms with one)."""
    family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    bound = socket.socket(family, kind, protocol)
    bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    bound.bind(address)
    return bound


THREAD_POOL_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def share_the_cores(workers: int) -> None:
    """Gives each worker's thread pools (OpenMP in the tree scoring, BLAS, torch) its share of the cores,
    unless set already, so that N workers do not each spin a pool as wide as the machine (as two trainings
    at once on 2 cores are several times slower). A precaution: its own effect on serving was not measured
    apart from the TCP_NODELAY fix (see :func:`port_socket`)."""
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    for variable in THREAD_POOL_VARIABLES:
        os.environ.setdefault(variable, threads)


def create_worker_app():
    """What each worker runs (uvicorn's app factory). A worker is a fresh interpreter, so logging is set
    up here as ``cli.py`` sets it up for a single process."""
    from app import configure_logging, create_app, reload_on_hangup
    from settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    signal.signal(signal.SIGHUP, lambda _signal, _frame: reload_on_hangup(app))  # from the supervisor
    return app


def prepare_models() -> str | None:
    """Migrates the decision log and loads the data and models (training and saving them when the
    saved ones are missing or were fitted on other data) in a child process; returns why it failed,
    or None. The workers then only load what is saved."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_prepare, args=(sender,), name="prepare-models")
    child.start()
    sender.close()
    try:
        failure = receiver.recv()
    except EOFError:
        failure = "the process preparing the models died"
    child.join()
    return failure


def _prepare(sender) -> None:
    from app import configure_logging
    from interactions import open_interactions
    from recommendation_service import RecommendationService
    from settings import get_settings

    try:
        settings = get_settings()
        configure_logging(settings.log_level)
        open_interactions(settings).close()
        RecommendationService.start(settings)
    except Exception as error:  # the reason goes to the supervisor, which refuses to start
        sender.send(f"{type(error).__name__}: {error}")
    else:
        sender.send(None)
