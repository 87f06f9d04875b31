"""A running beat sees a schedule change within 5 seconds (issue 8 §5), on a real ``celery beat`` process."""

from __future__ import annotations

import re
import time

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from scheduler_app import schedule_services
from scheduler_app.jobs import get_spec
from tests.processes import start_beat, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SENT = re.compile(r"^(\S+ \S+) INFO \[celery\.beat\] Scheduler: Sending due task test-noop ", re.M)


def sends(beat) -> int:
    return len(SENT.findall(beat.log()))


def test_a_disabled_task_stops_being_sent_within_five_seconds(worker, job_redis):
    # given test-noop every second under a running beat
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    task = PeriodicTask.objects.create(name="test-noop", task=get_spec("test-noop").task_name, interval=every)
    beat = start_beat("reload")
    try:
        wait_for(lambda: sends(beat) >= 2, 60, message="beat to send test-noop twice")
        # when the task is disabled through the product's service
        schedule_services.set_enabled([task], False, actor="test")
        disabled_at = time.monotonic()
        # then within 5 s beat stops sending it: over the next 3 s after that window, nothing more is sent
        wait_for(lambda: time.monotonic() - disabled_at >= 5, 10)
        settled = sends(beat)
        time.sleep(3)  # watching for sends that should not happen; no event marks their absence
        assert sends(beat) == settled
        assert "DatabaseScheduler: Schedule changed." in beat.log()
    finally:
        beat.stop()
        beat.cleanup()
