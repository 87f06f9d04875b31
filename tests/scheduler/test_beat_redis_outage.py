"""A real beat whose Redis stops logs one line per problem per minute, not a traceback per firing (issue 11 item 4).

Before the filter (config.logfilters.RateLimitFilter on ``celery.beat``) beat
printed a "Message Error" with a stack and a traceback for every firing:
579 lines in 25 s with three 1 s schedules.
"""

from __future__ import annotations

import tempfile
import time

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from devtools.embedded_redis import start_redis_server
from tests.processes import start_beat, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

OUTAGE_SECONDS = 15


def test_beat_logs_a_redis_outage_once_not_per_firing():
    # given three schedules firing every second, and beat running on its own Redis
    every_second = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
    for n in range(3):
        PeriodicTask.objects.create(name=f"outage-{n}", task="tests.jobs.noop_job", interval=every_second)
    redis_server = start_redis_server(tempfile.mkdtemp(prefix="redis-outage-"))
    beat = start_beat("outage", REDIS_URL=redis_server.url)
    try:
        wait_for(lambda: beat.log().count("Sending due task outage-") >= 3, timeout=60, message="beat firing")

        # when Redis stops while beat goes on firing
        redis_server.stop()
        before = len(beat.log().splitlines())
        time.sleep(OUTAGE_SECONDS)
    finally:
        beat.stop()
        redis_server.stop()
    lines = beat.log().splitlines()[before:]
    beat.cleanup()

    # then beat kept firing, but each problem is one line, without its traceback or stack
    assert sum("Sending due task outage-" in line for line in lines) >= 3 * (OUTAGE_SECONDS - 5), "\n".join(lines)
    problems = [line for line in lines if " ERROR " in line or " WARNING " in line or " CRITICAL " in line]
    assert 1 <= sum("Message Error" in line for line in problems) <= 2, "\n".join(problems)
    assert len(problems) <= 6, "\n".join(problems)
    other = [line for line in lines if line not in problems and "Sending due task" not in line]
    assert not any("Traceback" in line or line.startswith(("  File", "Traceback", "    ")) for line in other), \
        "\n".join(other[:60])
