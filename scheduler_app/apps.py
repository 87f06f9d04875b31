from django.apps import AppConfig


class SchedulerAppConfig(AppConfig):
    """The job engine's Django app: run history, admin, commands (see the package docstring)."""

    name = "scheduler_app"
    verbose_name = "Scheduler"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connect the Celery signal handlers in every process that loads Django (worker, beat, manage.py).
        # and the schedule audit's model signals.
        from scheduler_app import crons, problems, schedule_services, signals  # noqa: F401
