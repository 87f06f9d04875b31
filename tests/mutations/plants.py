"""The seven bugs of issue 12, as text replacements, and the tests that must catch each.

Each :class:`Plant` names the files and exact texts it changes (``old`` must
occur once in the file) and the pytest node ids that must fail with it. Run
them with ``python -m tests.mutations.run_plants`` (see that module).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Edit:
    """Replace ``old`` (which must occur exactly once) by ``new`` in ``path`` (relative to the project root)."""

    path: str
    old: str
    new: str


@dataclasses.dataclass(frozen=True)
class Plant:
    """A planted bug: ``edits`` to apply and ``tests`` (pytest node ids) that must fail with it."""

    name: str
    description: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]


#: Plant 6: the worker's duplicate check and the (job, scheduled_for) unique constraint (model and migrations) gone.
WORKER_DUPLICATE_GUARDS_REMOVED = (
    Edit("scheduler_app/task.py",
         "            return existing, JobRun.objects.is_known_duplicate(",
         "            return existing, False and JobRun.objects.is_known_duplicate("),
    Edit("scheduler_app/models.py",
         "        constraints = [\n            models.UniqueConstraint(",
         "        constraints = [] and [\n            models.UniqueConstraint("),
    Edit("scheduler_app/migrations/0001_initial.py",
         "'constraints': [models.UniqueConstraint(",
         "'constraints': [] and [models.UniqueConstraint("),
    Edit("scheduler_app/migrations/0007_dry_runs_take_no_scheduled_time.py",
         "    operations = [", "    operations = [] and ["),
)

PLANTS: list[Plant] = [
    # -- the seven holes of issue 12 -------------------------------------------------------
    Plant(
        name="owner-only-release",
        description="1. JobTask.after_return releases the job lock without comparing the token",
        edits=(Edit(
            "scheduler_app/task.py",
            "            return\n        self.once_backend.clear_lock(self.spec.lock_key, token=task_id)",
            "            return\n        self.once_backend.clear_lock(self.spec.lock_key)",
        ),),
        tests=("tests/scheduler/test_worker_runs.py::"
               "test_an_attempt_refused_the_lock_leaves_the_holders_key_value_and_ttl",),
    ),
    Plant(
        name="delivered-ever",
        description=("2. one delivery ever means never another: deliveries point at the group's first summary, "
                     "not the week's"),
        edits=(Edit(
            "contributions/services.py",
            'WeeklySummary.objects.filter(group=OuterRef("group_id"), week_start=week_start).values("pk")',
            'WeeklySummary.objects.filter(group=OuterRef("group_id")).order_by("week_start").values("pk")',
        ),),
        tests=("tests/contributions/test_summary_emails.py::test_the_next_weeks_run_sends_to_the_same_members_again",),
    ),
    Plant(
        name="summary-week-from-now",
        description="3. the summaries job ignores its scheduled time and summarises the week of now",
        edits=(Edit(
            "contributions/tasks.py",
            "summaries = generate_weekly_summaries(now=ctx.scheduled_for, dry_run=ctx.dry_run)",
            "summaries = generate_weekly_summaries(dry_run=ctx.dry_run)",
        ),),
        tests=("tests/contributions/test_summary_job.py::test_a_late_beat_run_summarises_the_week_of_its_scheduled_monday",),
    ),
    Plant(
        name="status-without-transaction",
        description="4. a group's status change and its audit row are not in one transaction",
        edits=(Edit("groups/services.py", "    with transaction.atomic(using=alias):", "    if True:"),),
        tests=("tests/groups/test_group_statuses.py",),
    ),
    Plant(
        name="archive-without-transaction",
        description="5. an archive batch's INSERT and DELETE are not in one transaction",
        edits=(Edit(
            "audit/services.py",
            "        with transaction.atomic(using=self.alias), self.connection.cursor() as cursor:",
            "        with self.connection.cursor() as cursor:",
        ),),
        tests=("tests/audit/test_audit_archive.py", "tests/audit/test_archive_sigkill.py"),
    ),
    Plant(
        name="no-duplicate-guard",
        description="6. no worker-side duplicate check and no (job, scheduled_for) unique constraint",
        edits=WORKER_DUPLICATE_GUARDS_REMOVED,
        # The senders refuse every duplicate before it is queued, so with only the worker's guards gone the
        # three-beat test still sees each time run once; what reaches a worker anyway (a redelivery, a
        # duplicate that took a free lock) is caught here, and the constraint by its own test.
        tests=("tests/scheduler/test_exactly_once.py::test_the_database_holds_one_working_run_per_scheduled_time",
               "tests/scheduler/test_exactly_once.py::"
               "test_a_redelivered_message_for_a_finished_scheduled_time_does_no_work",
               "tests/scheduler/test_exactly_once.py::test_a_duplicate_that_took_the_free_lock_releases_it"),
    ),
    Plant(
        name="no-duplicate-guard-anywhere",
        description="6b. the same, and the senders' checks too: duplicates race at the workers",
        edits=(
            *WORKER_DUPLICATE_GUARDS_REMOVED,
            Edit("scheduler_app/task.py",
                 "        if scheduled_for is not None"
                 " and JobRun.objects.working_run_exists(self.spec.name, scheduled_for):",
                 "        if False:"),
            Edit("scheduler_app/task.py",
                 "            keep_waiting=lambda holder: slot_of_task_id(holder.token) != own_slot,",
                 "            keep_waiting=lambda holder: True,"),
        ),
        tests=("tests/scheduler/test_exactly_once.py::"
               "test_three_beats_one_second_apart_two_workers_each_scheduled_time_runs_once",),
    ),
    Plant(
        name="retry-jitter",
        description="7. retries with jitter: JobTask.retry_jitter = True",
        edits=(Edit("scheduler_app/task.py", "    retry_jitter = False\n", "    retry_jitter = True\n"),),
        tests=("tests/scheduler/test_worker_runs.py::"
               "test_the_retry_countdowns_are_one_then_two_seconds_whatever_the_random_source",
               "tests/scheduler/test_worker_runs.py::"
               "test_three_attempts_with_one_and_two_second_backoff_and_the_lock_held_between"),
    ),
    # -- the right values of SPEC §5 that issue 12 asked for ---------------------------------
    Plant(
        name="archive-memory",
        description="archive memory grows with the rows: every remaining id loaded to find a batch's bound",
        edits=(Edit(
            "audit/services.py",
            'bound = list(remaining.values_list("id", flat=True)[batch_size - 1 : batch_size])',
            'bound = list(remaining.values_list("id", flat=True))[batch_size - 1 : batch_size]',
        ),),
        tests=("tests/audit/test_audit_archive.py::test_memory_does_not_grow_with_the_number_of_rows",),
    ),
    Plant(
        name="summary-one-huge-batch",
        description="summaries recorded once per 10,000 emails: a hard kill re-sends more than one configured batch",
        edits=(Edit(
            "contributions/tasks.py",
            "batch_size=settings.SUMMARY_EMAIL_BATCH_SIZE)",
            "batch_size=10_000)",
        ),),
        tests=("tests/contributions/test_summary_sigkill.py",),
    ),
    Plant(
        name="dry-run-ignored",
        description="run_job --dry-run runs for real",
        edits=(Edit(
            "scheduler_app/management/commands/run_job.py",
            'kwargs = {"trigger": JobRun.Trigger.MANUAL, "dry_run": dry_run}',
            'kwargs = {"trigger": JobRun.Trigger.MANUAL, "dry_run": False}',
        ),),
        tests=("tests/scheduler/test_run_job_dry_run.py",),
    ),
]
