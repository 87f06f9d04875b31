"""Run history: one :class:`JobRun` row per job run (SPEC §3)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class JobRun(models.Model):
    """One run of a job: every attempt of one trigger, its outcome and timings.

    A run is created by the worker when its first attempt starts (or by the
    sender when the trigger is refused because the lock is held) and updated
    as attempts fail, retry and finish. Retries of a run share its row and its
    Celery task id.

    The partial unique constraint ``jobrun_one_working_run_per_slot`` is the
    exactly-once guard of SPEC §3: for one (job, scheduled_for) at most one
    row that is not SKIPPED can exist, whichever beat or redelivery produced
    the message. Manual runs have ``scheduled_for`` NULL, which never
    conflicts.
    """

    class Trigger(models.TextChoices):
        BEAT = "beat", "beat"
        MANUAL = "manual", "manual"

    class Status(models.TextChoices):
        RUNNING = "RUNNING", "Running"
        SUCCEEDED = "SUCCEEDED", "Succeeded"
        FAILED = "FAILED", "Failed"
        SKIPPED = "SKIPPED", "Skipped"

    class SkipReason(models.TextChoices):
        NONE = "", "-"
        LOCK_HELD = "lock_held", "lock held"
        DUPLICATE = "duplicate", "duplicate"

    job = models.CharField(max_length=100, db_index=True)
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    scheduled_for = models.DateTimeField(null=True, blank=True, help_text="The scheduled time this run belongs to (UTC); empty for manual runs.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    skip_reason = models.CharField(max_length=20, choices=SkipReason.choices, default="", blank=True)
    dry_run = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True, help_text="From the first attempt's start to the end of the last, in milliseconds.")
    items_processed = models.PositiveIntegerField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True, help_text="Celery worker hostname and pid, or the host of a --local run.")
    task_id = models.CharField(max_length=255, unique=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["job", "-started_at"], name="jobrun_job_started")]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "scheduled_for"],
                condition=~Q(status="SKIPPED"),
                name="jobrun_one_working_run_per_slot",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job} #{self.pk} {self.status}"
