"""The Celery app: ``celery -A config worker`` and ``celery -A config beat -S django``.

Configuration comes from Django settings (``CELERY_*``). Logging uses Django's
``LOGGING`` in every process, so worker, beat and ``manage.py`` lines look the
same (SPEC §7).

The beat scheduler is named in settings: ``CELERY_BEAT_SCHEDULER`` is
:class:`scheduler_app.beat.JobScheduler`, django-celery-beat's
``DatabaseScheduler`` that keeps reading and writing its tables but aligns
interval schedules to the Unix epoch and stamps each message with the
scheduled time it belongs to (SPEC §3, "exactly one run per scheduled time").
Operators start beat as django-celery-beat documents it, ``-S django``; that
name asks for "the database scheduler", so it resolves to the configured
scheduler whenever that is a ``DatabaseScheduler`` subclass (any other ``-S``
value is used as given).
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


class ConfiguredDatabaseSchedulerService(Service):
    """Beat service for which ``-S django`` means the ``DatabaseScheduler`` named in ``CELERY_BEAT_SCHEDULER``."""

    def get_scheduler(self, lazy=False, extension_namespace="celery.beat_schedulers"):
        configured = self.app.conf.beat_scheduler
        # celery.beat.Service sets scheduler_cls in __init__ without an annotation.
        requested = self.scheduler_cls  # type: ignore[has-type]
        if requested in DJANGO_SCHEDULER_NAMES and configured not in DJANGO_SCHEDULER_NAMES:
            from celery.utils.imports import symbol_by_name
            from django_celery_beat.schedulers import DatabaseScheduler

            if issubclass(symbol_by_name(configured), DatabaseScheduler):
                self.scheduler_cls = configured
        return super().get_scheduler(lazy=lazy, extension_namespace=extension_namespace)


class ConfiguredBeat(Beat):
    Service = ConfiguredDatabaseSchedulerService


class JobsCelery(Celery):
    """Celery app whose ``beat -S django`` runs the configured database scheduler."""

    @property
    def Beat(self):  # noqa: N802 - Celery's name
        return self.subclass_with_self(ConfiguredBeat)


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
