"""The Celery app: ``celery -A config worker`` and ``celery -A config beat -S django``.

Configuration comes from Django settings (``CELERY_*``). Logging uses Django's
``LOGGING`` in every process, so worker, beat and ``manage.py`` lines look the
same (SPEC §7).

``-S django`` names django-celery-beat's ``DatabaseScheduler``; this app maps
it to :class:`scheduler_app.beat.JobScheduler`, a subclass that keeps reading
and writing django-celery-beat's tables but aligns interval schedules to the
Unix epoch and stamps each message with the scheduled time it belongs to
(SPEC §3, "exactly one run per scheduled time").
"""

from __future__ import annotations

import os
import sys

from celery import Celery, signals
from celery.apps.beat import Beat
from celery.beat import Service

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

#: Names under which operators ask for django-celery-beat's scheduler.
DJANGO_SCHEDULER_NAMES = frozenset({
    "django",
    "django_celery_beat.schedulers:DatabaseScheduler",
    "django_celery_beat.schedulers.DatabaseScheduler",
})
JOB_SCHEDULER = "scheduler_app.beat:JobScheduler"


class JobBeatService(Service):
    """Beat service that resolves django-celery-beat's scheduler to ours."""

    def get_scheduler(self, lazy=False, extension_namespace="celery.beat_schedulers"):
        if self.scheduler_cls in DJANGO_SCHEDULER_NAMES:
            self.scheduler_cls = JOB_SCHEDULER
        return super().get_scheduler(lazy=lazy, extension_namespace=extension_namespace)


class JobBeat(Beat):
    Service = JobBeatService


class JobsCelery(Celery):
    """Celery app whose ``beat`` uses :class:`JobBeatService`."""

    @property
    def Beat(self):  # noqa: N802 - Celery's name
        return self.subclass_with_self(JobBeat)


def _load_settings() -> None:
    from django.core.exceptions import ImproperlyConfigured

    try:
        from django.conf import settings

        settings.INSTALLED_APPS  # noqa: B018 - force the settings to load now
    except ImproperlyConfigured as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


_load_settings()

app = JobsCelery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.setup_logging.connect
def _use_django_logging(**kwargs) -> None:
    """Keep Celery from installing its own handlers; Django's LOGGING applies."""
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
