"""What operators need remembered (issue 9): beat heartbeats, alerts sent once, when a schedule's watch starts.

Imported by :mod:`scheduler_app.models` so Django registers them. Written only
by :mod:`scheduler_app.health`, :mod:`scheduler_app.alerts` and
:mod:`scheduler_app.problems`.
"""

from __future__ import annotations

from django.db import models


class BeatHeartbeat(models.Model):
    """One row per beat process (``hostname:pid``), its ``seen_at`` refreshed every few seconds by its tick.

    ``/healthz`` reports the youngest row's age; rows of beats that stopped
    are left (the age says they stopped) and pruned with the run history.
    """

    beat = models.CharField(max_length=255, unique=True, help_text="hostname:pid of the beat process.")
    seen_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.beat} at {self.seen_at:%Y-%m-%d %H:%M:%S}"


class ScheduleBaseline(models.Model):
    """From when a job's schedule is checked for missed times: the last time it was created, switched on or changed.

    Times before ``since`` belong to an earlier schedule, or passed while the
    job was paused or disabled, and are never reported missed
    (:mod:`scheduler_app.problems`).
    """

    periodic_task = models.CharField(max_length=200, unique=True, help_text="PeriodicTask.name")
    since = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.periodic_task} since {self.since:%Y-%m-%d %H:%M:%S}"


class JobAlert(models.Model):
    """One alert sent: the database fence that makes "alerted once" true across processes.

    ``key`` identifies the problem within its kind: the scheduled time of a
    missed one, the run id of a failed one, the reason of a broken schedule.
    ``recovered_at`` is set when the recovery message went out.
    """

    class Kind(models.TextChoices):
        MISSED = "missed", "missed"
        FAILED = "failed", "failed"
        BROKEN = "broken", "broken"

    job = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    key = models.CharField(max_length=255)
    detail = models.TextField(blank=True)
    created_at = models.DateTimeField()
    recovered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "kind", "key"], name="jobalert_once")]
        permissions = [
            ("view_dashboard", "Can view the scheduled jobs dashboard"),
        ]

    def __str__(self) -> str:
        return f"{self.job} {self.kind} {self.key}"
