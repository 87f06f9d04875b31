"""Missed, late, overrunning and broken jobs, computed from the schedules and the run history (SPEC §9, issue 9).

No second configuration: the times a job should have run come from its
``PeriodicTask`` (django-celery-beat's tables, read as beat reads them,
:func:`scheduler_app.schedule_services.task_schedule`), what happened from
``JobRun``. Nothing here needs beat or a worker, so the same answer comes from
the dashboard, a ``/metrics`` scrape, ``manage.py check_schedules`` and the
``check-schedules`` job (:func:`check_schedules`).

The rules, with ``grace = SCHEDULE_GRACE_SECONDS``:

* **window**: the scheduled times looked at are those after the latest of
  ``now - LOOKBACK`` (24 h), the task's :class:`ScheduleBaseline` (when it
  was last created, switched on or had its schedule changed) and its
  ``start_time``, up to ``now - grace``. So a time that passed while the job
  was paused or disabled, or that belongs to the schedule it had before an
  edit, is never missed; a time younger than the grace is not missed *yet*.
* **missed**: a scheduled time in the window with no ``JobRun`` at all.
  A time whose only runs are SKIPPED (``lock_held``: an earlier run still
  held the lock; ``duplicate``) is not missed: the trigger came and the
  engine decided; an earlier run that overran is reported as overrunning.
  Only enabled jobs with a schedule are checked.
* **late**: a scheduled time whose working run (not SKIPPED) started more
  than ``grace`` after it (``started_at`` is the first attempt's start).
* **overrunning**: a RUNNING run older than the job's expected duration:
  3 x the p95 duration of its last 30 successful runs (at least 60 s) when
  there are at least 5 of them, never more than its soft time limit; with
  fewer, the soft time limit. Past its soft time limit a run should have
  stopped, and 3 x p95 catches a hang long before that for a job whose runs
  are usually short. Checked for every job, paused or not.
* **lost**: a RUNNING run whose process is gone, judged from the database
  alone (issue 11): no heartbeat for 3 periods (``RUN_HEARTBEAT_SECONDS``),
  or a deferred run past its ``deferred_until``. The next run of the job
  records it FAILED; until then it is reported here, not as overrunning.
* **broken**: an enabled task whose schedule cannot be built (what beat would
  drop, see ``scheduler_app.sync._broken``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
from collections.abc import Sequence

from django.conf import settings
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver
from django.utils import timezone
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask

from scheduler_app.context import iso
from scheduler_app.models import JobRun
from scheduler_app.ops_models import ScheduleBaseline
from scheduler_app.registry import JobSpec, load_registry
from scheduler_app.schedule_services import task_schedule
from scheduler_app.schedules import fire_times_between

logger = logging.getLogger("scheduler")

#: How far back scheduled times are checked.
LOOKBACK = dt.timedelta(hours=24)
#: At most this many scheduled times per job are checked (the latest ones; a 1 s interval over 24 h is 86,400).
MAX_TIMES = 2000
#: Runs that make a job's duration statistics.
RECENT_RUNS = 30
#: Successful runs needed before 3 x p95 replaces the soft time limit as the expected duration.
MIN_RUNS_FOR_P95 = 5
#: The expected duration from p95 is never below this (seconds).
MIN_EXPECTED_S = 60.0


#: The kinds of problem, in the order they are listed for a job.
KINDS = ("broken", "missed", "late", "overrunning", "lost")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem of one job; :meth:`line` is how ``check_schedules`` prints it (SPEC §9)."""

    job: str
    kind: str  # one of KINDS
    scheduled_for: dt.datetime | None = None
    started_at: dt.datetime | None = None
    run_id: int | None = None
    why: str = ""

    def line(self) -> str:
        if self.kind == "missed":
            return f"{self.job} missed {iso(self.scheduled_for)}"
        if self.kind == "late":
            return f"{self.job} late {iso(self.scheduled_for)} started {iso(self.started_at)}"
        if self.kind == "overrunning":
            return f"{self.job} overrunning run {self.run_id} since {iso(self.started_at)}"
        if self.kind == "lost":
            return f"{self.job} lost run {self.run_id} last heartbeat {iso(self.started_at)}"
        return f"{self.job} broken: {self.why}"


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile (``share`` 0-1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(share * len(ordered)) - 1, 0)]


def expected_duration_s(spec: JobSpec, recent_ms: list[int]) -> float:
    """Seconds after which a RUNNING run of ``spec`` is overrunning (module docstring).

    Args:
        recent_ms: durations of the job's recent successful runs, in milliseconds.
    """
    if len(recent_ms) < MIN_RUNS_FOR_P95:
        return float(spec.soft_time_limit)
    p95 = percentile([ms / 1000 for ms in recent_ms], 0.95) or 0.0
    return min(max(3 * p95, MIN_EXPECTED_S), float(spec.soft_time_limit))


def recent_durations_ms(job: str, limit: int = RECENT_RUNS) -> list[int]:
    """Durations (ms) of ``job``'s last ``limit`` successful runs, newest first."""
    return [ms for ms in JobRun.objects.filter(job=job, status=JobRun.Status.SUCCEEDED, duration_ms__isnull=False)
            .order_by("-started_at").values_list("duration_ms", flat=True)[:limit] if ms is not None]


def window_start(task: PeriodicTask, now: dt.datetime, baseline: dt.datetime | None = None) -> dt.datetime:
    """The moment after which ``task``'s scheduled times are checked (module docstring)."""
    start = now - LOOKBACK
    if baseline is not None and baseline > start:
        start = baseline
    if task.start_time is not None and task.start_time - dt.timedelta(microseconds=1) > start:
        start = task.start_time - dt.timedelta(microseconds=1)
    return start


def _scheduled_times(task: PeriodicTask, schedule, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    run_every = getattr(schedule, "run_every", None)
    if task.interval is not None and run_every is not None:
        # Only the latest MAX_TIMES of a short interval.
        start = max(start, end - run_every * MAX_TIMES)
    times = fire_times_between(schedule, start, end, limit=MAX_TIMES * 2)
    return times[-MAX_TIMES:]


def schedule_problems(task: PeriodicTask, spec: JobSpec, now: dt.datetime,
                      baseline: dt.datetime | None = None) -> list[Problem]:
    """Broken, missed and late problems of one enabled ``PeriodicTask`` of job ``spec``."""
    try:
        schedule = task_schedule(task)
    except Exception as exc:  # ValueError from a bad crontab, a bad time zone, ...
        return [Problem(spec.name, "broken", why=str(exc))]
    grace = dt.timedelta(seconds=settings.SCHEDULE_GRACE_SECONDS)
    end = now - grace - dt.timedelta(microseconds=1)  # missed once more than the grace has passed
    start = window_start(task, now, baseline)
    if end <= start:
        return []
    try:
        times = _scheduled_times(task, schedule, start, end)
    except TypeError:  # solar: no scheduled times to check
        return []
    if not times:
        return []
    runs: dict[dt.datetime | None, list[tuple[str, dt.datetime]]] = {}
    for scheduled_for, status, started_at in JobRun.objects.filter(
            job=spec.name, scheduled_for__gte=times[0], scheduled_for__lte=times[-1], dry_run=False).values_list(
            "scheduled_for", "status", "started_at"):
        runs.setdefault(scheduled_for, []).append((status, started_at))
    problems = []
    for moment in times:
        found = runs.get(moment)
        if not found:
            problems.append(Problem(spec.name, "missed", scheduled_for=moment))
            continue
        working = [started for status, started in found if status != JobRun.Status.SKIPPED]
        if working and working[0] - moment > grace:
            problems.append(Problem(spec.name, "late", scheduled_for=moment, started_at=working[0]))
    return problems


def overrunning(spec: JobSpec, now: dt.datetime) -> list[Problem]:
    """RUNNING runs of ``spec``: lost ones (``started_at`` holds the last heartbeat), then those past their time."""
    running = list(JobRun.objects.filter(job=spec.name, status=JobRun.Status.RUNNING).values_list(
        "pk", "started_at", "heartbeat_at"))
    if not running:
        return []
    lost = set(JobRun.objects.lost(now, job=spec.name).values_list("pk", flat=True))
    limit = dt.timedelta(seconds=expected_duration_s(spec, recent_durations_ms(spec.name)))
    return [Problem(spec.name, "lost", run_id=pk, started_at=heartbeat or started) if pk in lost
            else Problem(spec.name, "overrunning", run_id=pk, started_at=started)
            for pk, started, heartbeat in running if pk in lost or now - started > limit]


def job_tasks() -> list[tuple[PeriodicTask, JobSpec]]:
    """Each job's ``PeriodicTask`` (the one named after the job, SPEC §3), with the job's spec.

    Another periodic task that happens to run a job's task is not the job's
    schedule: its runs share the job's history, so it is left out here.
    """
    registry = load_registry()
    return [(task, registry[task.name]) for task in PeriodicTask.objects.select_related(
        "crontab", "interval", "clocked", "solar").filter(name__in=list(registry)).order_by("name")
        if task.task == registry[task.name].task_name]


def find_problems(now: dt.datetime | None = None) -> list[Problem]:
    """Every problem of every job, ordered by job then kind then time (module docstring)."""
    now = now or timezone.now()
    baselines = dict(ScheduleBaseline.objects.values_list("periodic_task", "since"))
    problems: list[Problem] = []
    for task, spec in job_tasks():
        if task.enabled:
            problems.extend(schedule_problems(task, spec, now, baselines.get(task.name)))
    for spec in sorted(load_registry().values(), key=lambda s: s.name):
        problems.extend(overrunning(spec, now))
    order = {kind: i for i, kind in enumerate(KINDS)}
    return sorted(problems, key=lambda p: (p.job, order[p.kind], p.scheduled_for or p.started_at or now))


def check_schedules(now: dt.datetime | None = None, *, alert: bool = True) -> list[Problem]:
    """Find the problems and (``alert``) log, report and alert each new one once: what the command and the job run."""
    problems = find_problems(now)
    if alert:
        from scheduler_app.alerts import alert_problems

        alert_problems(problems, now=now)
    return problems


# -- baselines: when a schedule starts being watched ----------------------------------

_SCHEDULE_FIELDS = ("enabled", "crontab_id", "interval_id", "clocked_id", "solar_id", "start_time")


def mark_baseline(names, moment: dt.datetime | None = None) -> None:
    """Check the named tasks' scheduled times only from ``moment`` (default now) on."""
    moment = moment or timezone.now()
    for name in names:
        ScheduleBaseline.objects.update_or_create(periodic_task=name, defaults={"since": moment})


@receiver(pre_save, sender=PeriodicTask, dispatch_uid="scheduler_app.problems.task_pre_save")
def _remember_schedule(sender, instance: PeriodicTask, raw: bool = False, **kwargs) -> None:
    old = PeriodicTask.objects.filter(pk=instance.pk).values(*_SCHEDULE_FIELDS).first() if instance.pk else None
    instance._baseline_before = old


@receiver(post_save, sender=PeriodicTask, dispatch_uid="scheduler_app.problems.task_post_save")
def _task_saved(sender, instance: PeriodicTask, created: bool, raw: bool = False, **kwargs) -> None:
    if raw:
        return
    old = getattr(instance, "_baseline_before", None)
    switched_on = old is not None and not old["enabled"] and instance.enabled
    changed = old is not None and any(old[f] != getattr(instance, f) for f in _SCHEDULE_FIELDS if f != "enabled")
    if created or old is None or switched_on or changed:
        mark_baseline([instance.name])


def _schedule_saved(sender, instance, created: bool, raw: bool = False, **kwargs) -> None:
    if raw or created:
        return
    field = sender._meta.model_name.removesuffix("schedule")
    mark_baseline(PeriodicTask.objects.filter(**{field: instance}).values_list("name", flat=True))


for _model in (CrontabSchedule, IntervalSchedule, ClockedSchedule):
    post_save.connect(_schedule_saved, sender=_model, dispatch_uid=f"scheduler_app.problems.{_model.__name__}")
