"""Bad settings (issue 11, items 4 and 5): one clear line, no secret printed; production passes ``check --deploy``.

Every case runs a real ``manage.py`` (or celery) subprocess with the bad value
in its environment, as an operator would.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.processes import CELERY, ROOT

#: Distinctive enough that finding it anywhere in the output means it leaked.
PASSWORD = "Zq7xS3cretPw"
DSN_KEY = "f00dfeedcafe4b1d9e2a7c3b5d6e8f90"

# (variable, bad value, what the one line must say besides the variable)
SECRET_VALUES = [
    ("REDIS_URL", f"redis://:{PASSWORD}@localhost:0/0", "port is a number from 1 to 65535"),
    ("REDIS_URL", f"redis://default:{PASSWORD}@localhost:abc/0", "port is a number from 1 to 65535"),
    ("REDIS_URL", f"http://:{PASSWORD}@localhost:6379/0", "redis://"),
    # Redis Sentinel: every sentinel's part is masked; the master's name is required
    ("REDIS_URL", f"sentinel://:{PASSWORD}@localhost:26379/0;sentinel://:{PASSWORD}@localhost:26380/0",
     "?master_name=NAME (required)"),
    ("DATABASE_URL", f"mysql://app:{PASSWORD}@db.internal/app", "sqlite:///path or postgres://"),
    ("DATABASE_URL", f"postgres://app:{PASSWORD}@db.internal:5432/", "names the database"),
    ("EMAIL_URL", f"bogus://mailer:{PASSWORD}@smtp.internal:587", "an email URL"),
    ("SENTRY_DSN", f"https://{DSN_KEY}@o0.ingest.sentry.io/notanumber", "a Sentry DSN"),
    ("SENTRY_DSN", f"https://{DSN_KEY}:{PASSWORD}@o0.ingest.sentry.io/notanumber", "a Sentry DSN"),
]

# (variable, bad value, what the one line must say besides the variable and value)
START_UP_ERRORS = [
    ("EXTRA_JOB_MODULES", "no.such.module", "'no.such.module' is not one"),
    ("EXTRA_JOB_MODULES", "tests.jobs,scheduler_app.no_such_module", "'scheduler_app.no_such_module' is not one"),
    ("DEFAULT_FROM_EMAIL", "bad", "an email address, or 'Name <address>'"),
    ("DEFAULT_FROM_EMAIL", "Savings groups <noreply@>", "an email address, or 'Name <address>'"),
    ("DATABASE_URL", "nonsense", "sqlite:///path or postgres://"),
]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULE_")}
    # Never the checkout's db.sqlite3 (a developer's `make run` database): a throwaway file beside the test DB.
    scratch = os.path.join(os.path.dirname(os.environ["DJANGO_TEST_SQLITE_NAME"]), "settings-inputs.sqlite3")
    env.setdefault("DATABASE_URL", f"sqlite:///{scratch}")
    env.update(extra)
    return env


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize(("variable", "value", "allowed"), SECRET_VALUES)
def test_a_bad_url_setting_is_reported_without_its_password(variable, value, allowed):
    # when
    done = manage("check", env=clean_env(**{variable: value}))

    # then: the one line names the variable and what is wrong, and no secret anywhere
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"Configuration error: {variable}=")
    assert allowed in lines[0]
    assert "**@" in lines[0]
    for secret in (PASSWORD, DSN_KEY):
        assert secret not in done.stdout + done.stderr


@pytest.mark.parametrize(("variable", "value", "allowed"), START_UP_ERRORS)
def test_a_bad_setting_stops_start_up_in_one_line(variable, value, allowed):
    done = manage("check", env=clean_env(**{variable: value}))

    assert done.returncode == 2
    # one line, no warning before it (django-environ warns about an unknown database engine)
    assert done.stderr.strip().splitlines() == [f"Configuration error: {variable}={value!r} is invalid: "
                                                + done.stderr.split(" is invalid: ", 1)[1].strip()]
    assert allowed in done.stderr
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr


@pytest.mark.parametrize("command", [["run_job", "--list"], ["check"]])
def test_an_unknown_extra_job_module_stops_manage_py(command):
    done = manage(*command, env=clean_env(EXTRA_JOB_MODULES="no.such.module"))

    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "EXTRA_JOB_MODULES='no.such.module' is invalid" in done.stderr


def test_an_unknown_extra_job_module_stops_the_worker_in_one_line():
    done = subprocess.run([*CELERY, "worker"], cwd=ROOT, env=clean_env(EXTRA_JOB_MODULES="no.such.module"),
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "Configuration error: EXTRA_JOB_MODULES='no.such.module' is invalid: "
        "comma-separated importable modules; 'no.such.module' is not one"]


@pytest.mark.parametrize("hosts", ["", " , "])
def test_empty_allowed_hosts_without_debug_is_a_start_up_error(hosts):
    env = clean_env(DJANGO_DEBUG="false", DJANGO_SECRET_KEY="k" * 60, DJANGO_ALLOWED_HOSTS=hosts)

    done = manage("check", env=env)

    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "DJANGO_ALLOWED_HOSTS" in done.stderr and "a comma-separated list of host names" in done.stderr


def test_empty_allowed_hosts_with_debug_is_allowed():
    done = manage("check", env=clean_env(DJANGO_DEBUG="true", DJANGO_ALLOWED_HOSTS=""))

    assert done.returncode == 0, done.stderr


#: What the README's production section sets, behind a proxy that terminates TLS.
PRODUCTION_ENV = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "p8Kx2-vQm9ZrT4wLbN7sYc1HfJd6GaUe3oXiRk5Pz0MnVtWq_yB",
    "DJANGO_ALLOWED_HOSTS": "sched.example.org",
    "DJANGO_BEHIND_TLS_PROXY": "true",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "DJANGO_SECURE_HSTS_PRELOAD": "true",
}


def test_production_settings_pass_check_deploy_without_warnings():
    done = manage("check", "--deploy", "--fail-level", "WARNING", env=clean_env(**PRODUCTION_ENV))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout


def test_without_the_proxy_variables_check_deploy_names_what_is_missing():
    env = clean_env(**{k: v for k, v in PRODUCTION_ENV.items() if k.startswith(("DJANGO_DEBUG", "DJANGO_SECRET",
                                                                                "DJANGO_ALLOWED"))})
    done = manage("check", "--deploy", env=env)

    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in done.stderr + done.stdout


PRODUCTION_PROBE = """
from django.conf import settings
from django.test import Client
client = Client(HTTP_HOST="sched.example.org")
for path in ("/admin/login/", "/healthz", "/metrics"):
    plain = client.get(path)
    proxied = client.get(path, HTTP_X_FORWARDED_PROTO="https")
    print(path, plain.status_code, plain.get("Location", "-"), proxied.status_code,
          proxied.cookies["csrftoken"]["secure"] if "csrftoken" in proxied.cookies else "-",
          proxied.get("Strict-Transport-Security", "-"))
"""


def test_behind_the_proxy_plain_http_redirects_except_healthz_and_metrics():
    done = manage("shell", "--no-imports", "-c", PRODUCTION_PROBE, env=clean_env(**PRODUCTION_ENV))

    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()}
    # plain HTTP to the admin: redirected to HTTPS; through the proxy: served, secure cookie, HSTS
    assert rows["/admin/login/"] == ["301", "https://sched.example.org/admin/login/", "200", "True",
                                     "max-age=31536000;", "includeSubDomains;", "preload"]
    # the probes are never redirected (whatever they answer: 404 until /healthz and /metrics exist)
    for path in ("/healthz", "/metrics"):
        assert rows[path][0] != "301" and rows[path][1] == "-", rows[path]


@pytest.mark.parametrize("process", [["worker"], ["beat", "-S", "django"]])
def test_celery_reports_a_bad_redis_url_without_its_password(process):
    env = clean_env(REDIS_URL=f"redis://:{PASSWORD}@localhost:0/0")

    done = subprocess.run([*CELERY, *process], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "Configuration error: REDIS_URL='redis://:**@localhost:0/0' is invalid: "
        "a URL whose port is a number from 1 to 65535"]
    assert PASSWORD not in done.stdout + done.stderr
