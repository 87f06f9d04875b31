"""Deferred runs (issue 10's engine hook): a run whose work goes on in other tasks after its function returns.

``JobContext.defer`` marks the run (parts total, a deadline), the function
returns the ``Deferred`` and the engine leaves the run RUNNING; the tasks
count themselves (``record_part_done``) and the last one ends the run
(``complete``). A later run of the same job does not mark a deferred run lost
before its deadline, and does after it.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest
import time_machine
from django.utils import timezone

from scheduler_app.models import LOST_RUN_ERROR, JobRun
from tests.factories import at

pytestmark = pytest.mark.django_db


def running(task_id: str = "job:manual:1") -> JobRun:
    return JobRun.objects.create(job="send-contribution-summaries", trigger="manual", started_at=timezone.now(),
                                 task_id=task_id, attempts=1)


@time_machine.travel(at("2026-11-30 09:00:00"), tick=False)
def test_parts_are_counted_and_complete_ends_the_run_once(caplog):
    run = running()
    assert JobRun.objects.defer_run(run.pk, total=3, within_s=600)
    assert JobRun.objects.record_part_done(run.pk, items=5)
    assert JobRun.objects.record_part_done(run.pk, items=4)
    run.refresh_from_db()
    assert (run.parts_done, run.items_processed, run.progress) == (2, 9, "2/3 batches")
    assert run.deferred_until == at("2026-11-30 09:10:00")
    with caplog.at_level(logging.INFO, logger="scheduler"):
        assert JobRun.objects.complete(run.pk, JobRun.Status.SUCCEEDED, items=12)
        assert not JobRun.objects.complete(run.pk, JobRun.Status.FAILED, error="late")  # already ended
    run.refresh_from_db()
    assert (run.status, run.items_processed, run.error) == (JobRun.Status.SUCCEEDED, 12, "")
    assert caplog.messages == ["Job send-contribution-summaries succeeded in 0ms: 12 items (attempt 1/3, 3 batches)"]
    assert not JobRun.objects.record_part_done(run.pk, items=1)  # an ended run counts nothing more


def test_a_deferred_run_is_not_marked_lost_before_its_deadline_and_is_after():
    with time_machine.travel(at("2026-11-30 09:00:00"), tick=False):
        deferred = running("job:manual:deferred")
        JobRun.objects.defer_run(deferred.pk, total=2, within_s=3600)
        plain = running("job:manual:plain")
        # a later run takes the lock an hour minus a second later
    # (the lost judgement reads the database's clock, which time-machine does not move: the moment is given)
    assert JobRun.objects.mark_lost("send-contribution-summaries", exclude_task_id="job:manual:new",
                                    now=at("2026-11-30 09:59:59")) == 1
    plain.refresh_from_db()
    deferred.refresh_from_db()
    assert (plain.status, plain.error) == (JobRun.Status.FAILED, LOST_RUN_ERROR)
    assert deferred.status == JobRun.Status.RUNNING
    assert JobRun.objects.mark_lost("send-contribution-summaries", exclude_task_id="job:manual:new",
                                    now=at("2026-11-30 10:00:01")) == 1
    deferred.refresh_from_db()
    assert deferred.status == JobRun.Status.FAILED
    assert deferred.finished_at is not None
    assert deferred.finished_at - deferred.started_at == dt.timedelta(hours=1, seconds=1)
