"""Django settings: the one place that reads the environment (SPEC §2).

Every variable goes through django-environ and a small validator; a malformed
value raises :class:`django.core.exceptions.ImproperlyConfigured` with one line
naming the variable, the value and what is allowed. ``manage.py`` and the
Celery app print that line and exit with status 2 instead of a traceback.
"""

from __future__ import annotations

import os
import warnings
import zoneinfo
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

import environ
from django.core.exceptions import ImproperlyConfigured

from scheduler_app.redis_urls import SENTINEL_EXAMPLE, is_sentinel_url, split_master_name

BASE_DIR = Path(__file__).resolve().parent.parent
RUN_DIR = BASE_DIR / ".run"

env = environ.Env()

#: The variables that name the Redis. The environment and ``.env`` each name
#: it as a whole: when the environment sets REDIS_URL, REDIS_HOST or
#: REDIS_PORT, none of these comes from ``.env``, so ``REDIS_HOST=cache``
#: in a shell is never overridden by a REDIS_URL in ``.env``.
_REDIS_VARIABLES = ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB")

# A local `.env` fills in the variables the environment does not set. `make
# run` writes it for development (DJANGO_DEBUG and a generated
# DJANGO_SECRET_KEY) and, while it runs an embedded Redis, adds a marked
# REDIS_URL line (devtools/launcher.py): the one route by which `manage.py`
# in other shells finds that Redis.
if (BASE_DIR / ".env").is_file():
    _redis_named_by_environment = any(os.environ.get(var) for var in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT"))
    _set_by_environment = set(os.environ)
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
    if _redis_named_by_environment:
        for _var in _REDIS_VARIABLES:
            if _var not in _set_by_environment:
                os.environ.pop(_var, None)


#: Variables whose value is a URL that may carry a password (and a DSN, whose user part is its key).
_URL_VARIABLES = ("REDIS_URL", "DATABASE_URL", "EMAIL_URL", "SENTRY_DSN")


def _secrets_in(var: str, value: str) -> list[str]:
    """The parts of ``value`` that must never be printed: a URL's password; for a DSN, its key too.

    Apprise URLs (``ALERT_URLS``) carry tokens anywhere after the scheme
    (``slack://T1/B2/token``, ``mailto:user:pw@host``): all of that is secret.
    """
    if var == "ALERT_URLS":
        return [url.strip().partition("://")[2] or url.strip().partition(":")[2] for url in value.split(",")
                if url.strip()]
    if var not in _URL_VARIABLES or "@" not in value:
        return []
    if var == "REDIS_URL" and is_sentinel_url(value) and ";" in value:
        # One part per sentinel (``sentinel://:pw@h1:26379;sentinel://:pw@h2:26379``), each with its userinfo.
        return [secret for part in value.split(";") for secret in _secrets_in(var, part)]
    # Not urlparse: a value bad enough to be reported may not parse (a port "abc" raises).
    userinfo = value.partition("://")[2].rpartition("@")[0] if "://" in value else value.rpartition("@")[0]
    if not userinfo:
        return []
    user, colon, password = userinfo.partition(":")
    if var == "SENTRY_DSN":
        return [userinfo]
    return [password] if colon and password else []


def _mask(var: str, value: str, text: str) -> str:
    """``text`` with every secret of ``value`` replaced by ``**``, as the logs show URLs (``redis://:**@host``)."""
    for secret in sorted(_secrets_in(var, value), key=len, reverse=True):
        text = text.replace(secret, "**")
        # An exception message may quote the URL-decoded form.
        text = text.replace(unquote(secret), "**")
    return text


def _bad(var: str, value: object, allowed: str) -> ImproperlyConfigured:
    """The one-line start-up error for ``var``; passwords and DSN keys in ``value`` are masked (``:**@``)."""
    message = f"{var}={value!r} is invalid: {allowed}"
    if isinstance(value, str):
        message = _mask(var, value, message)
    return ImproperlyConfigured(message)


def env_str(var: str, default: str | None = None) -> str | None:
    value = os.environ.get(var)
    return default if value is None or value == "" else value


def env_int(var: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Read an integer; raise ImproperlyConfigured naming ``var`` when malformed or out of range."""
    raw = env_str(var)
    if raw is None:
        return default
    allowed = "an integer"
    if minimum is not None and maximum is not None:
        allowed = f"an integer from {minimum} to {maximum}"
    elif minimum is not None:
        allowed = f"an integer >= {minimum}"
    try:
        value = int(raw.strip())
    except ValueError:
        raise _bad(var, raw, allowed) from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise _bad(var, raw, allowed)
    return value


def env_float(var: str, default: float, *, minimum: float, maximum: float) -> float:
    raw = env_str(var)
    if raw is None:
        return default
    allowed = f"a number from {minimum} to {maximum}"
    try:
        value = float(raw)
    except ValueError:
        raise _bad(var, raw, allowed) from None
    if not minimum <= value <= maximum:
        raise _bad(var, raw, allowed)
    return value


def env_bool(var: str, default: bool) -> bool:
    raw = env_str(var)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise _bad(var, raw, "one of true/false, 1/0, yes/no, on/off")


def env_choice(var: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env_str(var)
    if raw is None:
        return default
    value = raw.strip().upper() if choices[0].isupper() else raw.strip().lower()
    if value not in choices:
        raise _bad(var, raw, "one of " + ", ".join(choices) + " (case-insensitive)")
    return value


def env_crontab(var: str) -> str | None:
    """Validate a five-field crontab expression such as ``"0 3 * * *"`` (minute hour dom month dow)."""
    raw = env_str(var)
    if raw is None:
        return None
    fields = raw.split()
    allowed = 'a crontab with 5 fields "minute hour day_of_month month_of_year day_of_week", e.g. "0 3 * * *"'
    if len(fields) != 5:
        raise _bad(var, raw, allowed)
    from scheduler_app.schedules import validate_crontab_fields

    try:
        # Field by field, and that it fires at all (30 February never does).
        validate_crontab_fields(*fields)
    except ValueError as exc:
        raise _bad(var, raw, f"{allowed}; {exc}") from None
    return " ".join(fields)


# --- Core Django -----------------------------------------------------------

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = (env_str("DJANGO_SECRET_KEY") or "").strip() or None
if not SECRET_KEY:
    if DEBUG:
        SECRET_KEY = "django-insecure-dev-key-only-used-with-DJANGO_DEBUG-true"  # noqa: S105 - DEBUG only, by design
    else:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is unset: set it, or set DJANGO_DEBUG=true to use the development key"
        )
_allowed_hosts = os.environ.get("DJANGO_ALLOWED_HOSTS")
ALLOWED_HOSTS = [h.strip() for h in (_allowed_hosts if _allowed_hosts is not None else "localhost,127.0.0.1").split(",")
                 if h.strip()]
if not ALLOWED_HOSTS and not DEBUG:
    # Django would answer every request with 400; say so now instead.
    raise _bad("DJANGO_ALLOWED_HOSTS", _allowed_hosts, "a comma-separated list of host names, e.g. sched.example.org "
               "(empty is allowed only with DJANGO_DEBUG=true)")

# --- HTTPS (production behind a TLS-terminating proxy; `manage.py check --deploy`) ---

#: The proxy terminates TLS and sets X-Forwarded-Proto: trust it, and make
#: HTTPS the default for redirects and cookies.
BEHIND_TLS_PROXY = env_bool("DJANGO_BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", BEHIND_TLS_PROXY)
# Probes and Prometheus reach these over plain HTTP inside the network
# (Django matches the path without its leading slash).
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$", r"^metrics/?$"]
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", BEHIND_TLS_PROXY)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", BEHIND_TLS_PROXY)
#: Off (0) by default: once sent, browsers refuse plain HTTP for this long.
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0, minimum=0, maximum=2 * 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "scheduler_app",
    "audit",
    "groups",
    "contributions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

if not DEBUG:
    # Serves the admin's static files under gunicorn (after collectstatic);
    # with DEBUG, runserver does.
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database --------------------------------------------------------------

_database_url = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
try:
    with warnings.catch_warnings():
        # django-environ warns "Engine not recognized" before our one line says the same.
        warnings.simplefilter("ignore")
        _db = env.db_url_config(_database_url)
except Exception as exc:
    raise _bad("DATABASE_URL", _database_url,
               f"a database URL such as sqlite:///db.sqlite3 or postgres://user@host:5432/name ({exc})") from None
if _db.get("ENGINE") not in ("django.db.backends.sqlite3", "django.db.backends.postgresql"):
    raise _bad("DATABASE_URL", _database_url, "a sqlite:///path or postgres://user@host:5432/name URL")
if not _db.get("NAME"):
    raise _bad("DATABASE_URL", _database_url, "a URL that names the database, e.g. postgres://user@host:5432/name")
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the worker, beat and web processes read while one writes; the
    # busy timeout makes a writer wait for the lock instead of failing at once.
    _db.setdefault("OPTIONS", {})
    # The busy timeout (seconds a statement waits for another process's lock) is 30 s unless the URL
    # sets it, e.g. sqlite:///db.sqlite3?timeout=5.
    _db["OPTIONS"].setdefault("timeout", 30)
    _db["OPTIONS"].update({"transaction_mode": "IMMEDIATE",
                           "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"})
    _test_name = env_str("DJANGO_TEST_SQLITE_NAME")
    _db["TEST"] = {"NAME": _test_name or str(RUN_DIR / "test-db.sqlite3")}
else:
    _db["CONN_MAX_AGE"] = 0
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Time ------------------------------------------------------------------

TIME_ZONE = env_str("TIME_ZONE", "UTC") or "UTC"
try:
    zoneinfo.ZoneInfo(TIME_ZONE)
except (zoneinfo.ZoneInfoNotFoundError, ValueError):
    raise _bad("TIME_ZONE", TIME_ZONE, "an IANA time zone name such as UTC or Europe/Berlin") from None
USE_TZ = True
USE_I18N = True
LANGUAGE_CODE = "en-us"

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Redis -----------------------------------------------------------------


def _redis_url() -> str:
    url = env_str("REDIS_URL")
    if url and is_sentinel_url(url):
        return _sentinel_url(url)
    if url:
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
            raise _bad("REDIS_URL", url, "a URL like redis://[:password@]host:port/db, rediss://... for TLS "
                       f"or, for Redis Sentinel, {SENTINEL_EXAMPLE}")
        port = _url_port(parsed)
        if port is not None and not 1 <= port <= 65535:
            raise _bad("REDIS_URL", url, "a URL whose port is a number from 1 to 65535")
        _check_redis_db(url, parsed)
        return url
    host = env_str("REDIS_HOST", "localhost")
    redis_port = env_int("REDIS_PORT", 6379, minimum=1, maximum=65535)
    redis_db = env_int("REDIS_DB", 0, minimum=0, maximum=15)
    password = env_str("REDIS_PASSWORD")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{redis_port}/{redis_db}"


def _url_port(parsed) -> int | None:
    """The port of a parsed URL: None when it names none, -1 when it is not a number."""
    try:
        return parsed.port
    except ValueError:
        return -1


def _check_redis_db(url: str, parsed) -> None:
    """Stop start-up unless the URL's path, the Redis database, is empty or a number from 0 to 15."""
    db = parsed.path.lstrip("/")
    if db and not (db.isdigit() and 0 <= int(db) <= 15):
        raise _bad("REDIS_URL", url, "a URL whose database (the path) is a number from 0 to 15")


def _sentinel_url(url: str) -> str:
    """Check a Redis Sentinel ``REDIS_URL`` (``sentinel://host:port;...?master_name=NAME``) and return it."""
    try:
        _, master_name = split_master_name(url)
    except ValueError as exc:
        raise _bad("REDIS_URL", url, f"{exc}; name it once, e.g. {SENTINEL_EXAMPLE}") from None
    if not master_name:
        raise _bad("REDIS_URL", url, "a Sentinel URL needs the master's name, ?master_name=NAME "
                   f"(required), e.g. {SENTINEL_EXAMPLE}")
    for part in url.split(";"):
        parsed = urlparse(part.strip())
        if parsed.scheme != "sentinel" or not parsed.hostname:
            raise _bad("REDIS_URL", url, "a Sentinel URL whose every ';'-separated part is "
                       f"sentinel://[:password@]host:port[/db], e.g. {SENTINEL_EXAMPLE}")
        port = _url_port(parsed)
        # No default: kombu would take Redis's 6379 where a sentinel listens on 26379.
        if port is None or not 1 <= port <= 65535:
            raise _bad("REDIS_URL", url, "a Sentinel URL whose every sentinel's port is given, "
                       "a number from 1 to 65535")
        _check_redis_db(url, parsed)
    return url


REDIS_URL = _redis_url()
#: The master's name when REDIS_URL names Redis Sentinel (its ``master_name`` option), else None.
REDIS_SENTINEL_MASTER_NAME: str | None = None
#: REDIS_URL as Celery is given it: kombu refuses options it does not know in
#: a broker URL, so a Sentinel URL's master_name goes into the transport options.
_CELERY_REDIS_URL = REDIS_URL
if is_sentinel_url(REDIS_URL):
    _CELERY_REDIS_URL, REDIS_SENTINEL_MASTER_NAME = split_master_name(REDIS_URL)
_SENTINEL_TRANSPORT_OPTIONS = {"master_name": REDIS_SENTINEL_MASTER_NAME} if REDIS_SENTINEL_MASTER_NAME else {}

# --- Celery ----------------------------------------------------------------

# Broker and result store; for Redis Sentinel both ask the sentinels for the
# current master (kombu's SentinelChannel, Celery's SentinelBackend), so they
# follow a failover.
CELERY_BROKER_URL = _CELERY_REDIS_URL
CELERY_RESULT_BACKEND = _CELERY_REDIS_URL
CELERY_TIMEZONE = TIME_ZONE
CELERY_ENABLE_UTC = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TASK_TRACK_STARTED = True
# Jobs are acknowledged when they start (Celery's default): a killed worker's
# run is recorded as lost and the next scheduled time runs; it is never re-run
# behind the operator's back (SPEC §6).
CELERY_TASK_ACKS_LATE = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# django-celery-beat's DatabaseScheduler with scheduled times (SPEC §3); also what `beat -S django` runs.
CELERY_BEAT_SCHEDULER = "scheduler_app.beat:JobScheduler"
# Longest a job may run (hard time limit) plus its retry countdowns must stay
# below this, or Redis would hand a retry message to a second worker while it
# is still waiting (checked when a job is registered, scheduler_app.registry).
CELERY_BROKER_VISIBILITY_TIMEOUT = 4 * 3600
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT,
                                   **_SENTINEL_TRANSPORT_OPTIONS}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT,
                                           **_SENTINEL_TRANSPORT_OPTIONS}
CELERY_ONCE: dict[str, Any] = {
    "backend": "scheduler_app.locks.OwnedRedisBackend",
    # celery-once's meaning: with blocking on, taking a held lock waits up to
    # blocking_timeout seconds before giving up (off: one try). A beat trigger
    # follows these settings, so it waits up to 1 s for a run of an earlier
    # scheduled time to release the lock before it is skipped as lock_held; a
    # manual trigger never waits (JobTask._take_lock passes wait=0).
    "settings": {"url": REDIS_URL, "default_timeout": 600, "blocking": True, "blocking_timeout": 1.0},
}
DJANGO_CELERY_BEAT_TZ_AWARE = True

# --- Jobs ------------------------------------------------------------------

AUDIT_LOG_RETENTION_DAYS = env_int("AUDIT_LOG_RETENTION_DAYS", 90, minimum=1, maximum=36500)
INACTIVE_GROUP_DAYS = env_int("INACTIVE_GROUP_DAYS", 30, minimum=1, maximum=36500)
ARCHIVE_BATCH_SIZE = env_int("ARCHIVE_BATCH_SIZE", 5000, minimum=1, maximum=100_000)
SUMMARY_EMAIL_BATCH_SIZE = env_int("SUMMARY_EMAIL_BATCH_SIZE", 100, minimum=1, maximum=10_000)
# A scheduled time without a run this many seconds after it is missed (a run
# starting later is late); beat applies a job's catch-up policy to due times
# older than this (SPEC §9, §10).
SCHEDULE_GRACE_SECONDS = env_int("SCHEDULE_GRACE_SECONDS", 300, minimum=1, maximum=7 * 24 * 3600)
# Seconds between two heartbeats of a running run (JobRun.heartbeat_at, written by the
# worker or the `run_job --local` process running it, with the lock renewal). The
# database is the fence (issue 11): a RUNNING run is judged lost only when its
# heartbeat is older than 3 periods; `run_job` presumes its worker dead after
# 1.25 periods + 1 s without one.
RUN_HEARTBEAT_SECONDS = env_float("RUN_HEARTBEAT_SECONDS", 10.0, minimum=0.2, maximum=3600.0)
# JobRun rows older than this many days are pruned by the prune-job-runs job.
RUN_HISTORY_DAYS = env_int("RUN_HISTORY_DAYS", 90, minimum=1, maximum=36500)
# Bearer token for /metrics (compared in constant time); unset: a staff session only.
METRICS_TOKEN = (env_str("METRICS_TOKEN") or "").strip() or None
# Apprise URLs (comma-separated) that missed, broken and failed jobs are alerted to, once, with a recovery message.
ALERT_URLS = [u.strip() for u in (env_str("ALERT_URLS", "") or "").split(",") if u.strip()]
for _url in ALERT_URLS:
    if "://" not in _url:
        raise _bad("ALERT_URLS", _url, "comma-separated Apprise URLs such as mailto://user:pw@example.com or json://host/path")
# A beat whose last heartbeat is older than this many seconds fails /healthz's beat check.
BEAT_HEARTBEAT_MAX_AGE_SECONDS = env_int("BEAT_HEARTBEAT_MAX_AGE_SECONDS", 60, minimum=5, maximum=3600)

# SCHEDULE_<JOB> crontab overrides, read here and applied by `sync_schedules`.
JOB_SCHEDULE_OVERRIDES: dict[str, str] = {}
for _name in ("archive-audit-logs", "send-contribution-summaries", "update-group-statuses", "check-schedules",
              "prune-job-runs"):
    _var = "SCHEDULE_" + _name.upper().replace("-", "_")
    _value = env_crontab(_var)
    if _value:
        JOB_SCHEDULE_OVERRIDES[_name] = _value
_SCHEDULE_VARS = {"SCHEDULE_ARCHIVE_AUDIT_LOGS", "SCHEDULE_SEND_CONTRIBUTION_SUMMARIES",
                  "SCHEDULE_UPDATE_GROUP_STATUSES",
                  "SCHEDULE_CHECK_SCHEDULES", "SCHEDULE_PRUNE_JOB_RUNS",
                  "SCHEDULE_GRACE_SECONDS"}  # a setting, not a job's crontab
for _var in os.environ:
    # Any other SCHEDULE_* (a typo, or the wrong case) would be silently ignored: refuse it.
    if _var.upper().startswith("SCHEDULE_") and _var not in _SCHEDULE_VARS:
        raise _bad(_var, os.environ[_var], ", ".join(sorted(_SCHEDULE_VARS)))

# --- Email -----------------------------------------------------------------

_email_url = env_str("EMAIL_URL")
if _email_url:
    try:
        _email = env.email_url_config(_email_url)
    except Exception as exc:
        raise _bad("EMAIL_URL", _email_url,
                   f"an email URL such as smtp://user:pw@host:587 or consolemail:// ({exc})") from None
    vars().update(_email)
else:
    EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
    EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
    EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
    EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(RUN_DIR / "emails"))  # for the file-based backend
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Savings groups <noreply@localhost>")
# django-anymail (EMAIL_BACKEND=anymail.backends.<service>.EmailBackend): its settings from
# ANYMAIL_<NAME> variables, e.g. ANYMAIL_MAILGUN_API_KEY=... -> ANYMAIL["MAILGUN_API_KEY"].
ANYMAIL = {var[len("ANYMAIL_"):]: value for var, value in os.environ.items() if var.startswith("ANYMAIL_") and value}
# The public base URL of this site: the summaries' unsubscribe links point here.
SITE_URL = env_str("SITE_URL", "http://localhost:8000")
if urlparse(SITE_URL).scheme not in ("http", "https") or not urlparse(SITE_URL).netloc:
    raise _bad("SITE_URL", SITE_URL, "an absolute http(s) URL such as https://savings.example.com")


def _check_sender(var: str, value: str) -> None:
    """An address, or ``Name <address>``; one line at start-up rather than every summary email failing."""
    from email.utils import parseaddr

    from django.core.exceptions import ValidationError
    from django.core.validators import validate_email

    _name, address = parseaddr(value)
    try:
        if "\r" in value or "\n" in value or not address:
            raise ValidationError("empty")
        validate_email(address)
    except ValidationError:
        raise _bad(var, value,
                   "an email address, or 'Name <address>', e.g. Savings groups <noreply@example.org>") from None


_check_sender("DEFAULT_FROM_EMAIL", DEFAULT_FROM_EMAIL or "")


def _check_email_backend(path: str) -> None:
    import importlib

    module, _, name = path.rpartition(".")
    try:
        found = hasattr(importlib.import_module(module), name) if module else False
    except ImportError:
        found = False
    if not found:
        raise _bad("EMAIL_BACKEND", path, "an importable backend such as django.core.mail.backends.smtp.EmailBackend")


_check_email_backend(EMAIL_BACKEND or "")

# --- Logging (SPEC §7) -----------------------------------------------------

LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
LOG_FORMAT = env_choice("LOG_FORMAT", "text", ("text", "json"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s [%(name)s] %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(processName)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "filters": {
        # While Redis is down beat logs a traceback per firing; one line per problem per minute instead.
        "once_a_minute": {"()": "config.logfilters.RateLimitFilter", "seconds": 60},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "celery": {"level": LOG_LEVEL},
        "celery.beat": {"level": LOG_LEVEL, "filters": ["once_a_minute"]},
    },
}

# --- Sentry ----------------------------------------------------------------

SENTRY_DSN = env_str("SENTRY_DSN")
SENTRY_ENVIRONMENT = env_str("SENTRY_ENVIRONMENT", "production")
SENTRY_TRACES_SAMPLE_RATE = env_float("SENTRY_TRACES_SAMPLE_RATE", 0.0, minimum=0.0, maximum=1.0)

if SENTRY_DSN:
    from config.sentry import init_sentry

    try:
        init_sentry(dsn=SENTRY_DSN, environment=SENTRY_ENVIRONMENT or "production",
                    traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE)
    except Exception as exc:  # sentry_sdk.utils.BadDsn
        raise _bad("SENTRY_DSN", SENTRY_DSN,
                   f"a Sentry DSN such as https://key@o0.ingest.sentry.io/0 ({exc})") from None

# --- Scheduler -------------------------------------------------------------

#: Writes an audit row; scheduler_app calls it by name so it never imports a domain app.
SCHEDULER_AUDIT_LOG_FUNCTION = "audit.services.create_audit_log"
#: Extra modules whose jobs are registered (comma-separated), e.g. for plug-ins or tests.
EXTRA_JOB_MODULES = [m.strip() for m in (env_str("EXTRA_JOB_MODULES", "") or "").split(",") if m.strip()]


def _check_modules(var: str, modules: list[str]) -> None:
    """Each module can be found (not imported: its jobs need the app registry, which is not ready yet)."""
    import importlib.util

    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package is missing, or the name is malformed
            found = False
        if not found:
            raise _bad(var, os.environ.get(var, ""), f"comma-separated importable modules; {module!r} is not one")


_check_modules("EXTRA_JOB_MODULES", EXTRA_JOB_MODULES)
CELERY_IMPORTS = EXTRA_JOB_MODULES
