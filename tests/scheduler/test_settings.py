"""A malformed setting stops start-up with one line naming it, its value and what is allowed (SPEC §2)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.processes import ROOT

BAD_VALUES = [
    ("REDIS_PORT", "abc", "an integer from 1 to 65535"),
    ("LOG_LEVEL", "LOUD", "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("LOG_FORMAT", "xml", "text, json"),
    ("SCHEDULE_ARCHIVE_AUDIT_LOGS", "0 3 * *", "5 fields"),
    ("AUDIT_LOG_RETENTION_DAYS", "-1", "an integer from 1 to 36500"),
    ("AUDIT_LOG_RETENTION_DAYS", "1000000", "an integer from 1 to 36500"),
    ("INACTIVE_GROUP_DAYS", "thirty", "an integer from 1 to 36500"),
    ("TIME_ZONE", "Mars/Olympus", "IANA time zone"),
    ("SENTRY_TRACES_SAMPLE_RATE", "2", "a number from 0.0 to 1.0"),
    ("RUN_HEARTBEAT_SECONDS", "0", "a number from 0.2 to 3600.0"),
    ("RUN_HEARTBEAT_SECONDS", "often", "a number from 0.2 to 3600.0"),
    ("DJANGO_DEBUG", "maybe", "true/false"),
    ("REDIS_URL", "http://localhost:6379", "redis://"),
    ("REDIS_URL", "redis://localhost:6379/99", "from 0 to 15"),
    ("REDIS_URL", "redis://localhost:0/0", "from 1 to 65535"),
    ("REDIS_URL", "sentinel://localhost:26379;sentinel://localhost:26380/0", "?master_name=NAME (required)"),
    ("REDIS_URL", "sentinel://localhost;sentinel://localhost:26380/0?master_name=m", "port is given"),
    ("DATABASE_URL", "mysql://u@h/db", "sqlite:///path or postgres://"),
    ("DATABASE_URL", "postgres://", "names the database"),
    ("SENTRY_DSN", "garbage", "a Sentry DSN"),
    ("SCHEDULE_ARCHIVE_AUDIT_LOG", "0 3 * * *", "SCHEDULE_ARCHIVE_AUDIT_LOGS"),
    ("SCHEDULE_archive_audit_logs", "0 3 * * *", "SCHEDULE_ARCHIVE_AUDIT_LOGS"),
    ("EMAIL_BACKEND", "nosuch.Backend", "an importable backend"),
]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULE_")}
    env.update(extra)
    return env


@pytest.mark.parametrize(("variable", "value", "allowed"), BAD_VALUES)
def test_manage_py_reports_a_bad_setting_in_one_line(variable, value, allowed):
    env = clean_env(**{variable: value})
    if variable == "REDIS_PORT":
        env.pop("REDIS_URL", None)
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert variable in lines[0] and repr(value) in lines[0] and allowed in lines[0]
    assert "Traceback" not in done.stderr


def test_missing_secret_key_without_debug_is_a_start_up_error():
    # (empty, not unset, so a developer's `.env` from `make run` does not fill it in)
    env = clean_env(DJANGO_DEBUG="false", DJANGO_SECRET_KEY="")
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "DJANGO_SECRET_KEY" in done.stderr and "Traceback" not in done.stderr


def test_celery_worker_reports_a_bad_setting_in_one_line():
    env = clean_env(LOG_LEVEL="LOUD")
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "config", "worker"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("Configuration error: LOG_LEVEL='LOUD' is invalid: "
                                   "one of DEBUG, INFO, WARNING, ERROR, CRITICAL (case-insensitive)")
    assert "Traceback" not in done.stderr


def test_redis_url_is_built_from_the_seed_variables():
    env = clean_env(REDIS_HOST="cache.internal", REDIS_PORT="6380", REDIS_PASSWORD="p@ss", REDIS_DB="2")
    env.pop("REDIS_URL", None)
    code = "from django.conf import settings; print(settings.REDIS_URL); print(settings.CELERY_BROKER_URL)"
    done = subprocess.run([sys.executable, "manage.py", "shell", "--no-imports", "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["redis://:p%40ss@cache.internal:6380/2"] * 2
