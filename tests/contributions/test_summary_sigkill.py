"""A worker process SIGKILLed in the middle of a delivery batch (SPEC §5 "Weekly summaries", issue 10).

"After a hard kill (SIGKILL, power loss) at most one delivery batch
(``SUMMARY_EMAIL_BATCH_SIZE`` members) may receive a second copy, and nobody
is missed."

The numbers, worked out by hand: 3 active groups of 4 members, all with an
email: 12 PENDING deliveries, batches of 5: ids 1-5, 6-10, 11-12 (3 batches).
A real worker with one pool process sends them through a real SMTP server
(aiosmtpd), batch after batch. The server holds the 8th message at RCPT: the
first batch (5) is sent and recorded SENT; the second has sent messages 6
and 7, accepted by the server and not yet recorded. The pool process is then
SIGKILLed (the kernel's OOM killer, say). The batch task is ``acks_late`` and
``reject_on_worker_lost``: its message goes back to the queue and a new pool
process runs it again under the same task id, re-claims its 5 rows (still
SENDING under that id) and sends all 5. So the server receives 5 + 2 + 5 + 2
= 14 messages: 2 members got a second copy (within one batch of 5), nobody
is missed, and the run ends SUCCEEDED with 12 items and "3/3 batches".
"""

from __future__ import annotations

import os
import signal
from collections import Counter

import psutil
import pytest
from celery import current_app

from contributions.models import SummaryDelivery
from devtools.smtp_sink import SmtpSink
from groups.models import Group, Round
from scheduler_app.jobs import get_spec
from scheduler_app.models import JobRun
from tests.contributions.test_summary_fanout import start_worker
from tests.factories import make_group, make_members, make_round
from tests.processes import wait_for, wait_for_worker

pytestmark = pytest.mark.django_db(transaction=True)

BATCH = 5
HELD_MESSAGE = 8


def test_sigkill_mid_batch_redelivers_it_duplicating_at_most_one_batch_and_missing_nobody(job_redis):
    # given: 3 active groups of 4 members, each with an email and an open round
    everyone = set()
    for _ in range(3):
        group = make_group(status=Group.Status.ACTIVE, deployed=True)
        members = make_members(group, 4)
        make_round(group, number=1, recipient=members[0], status=Round.Status.OPEN)
        everyone |= {member.user.email for member in members}
    task = current_app.tasks[get_spec("send-contribution-summaries").task_name]

    with SmtpSink(pause_before=HELD_MESSAGE) as sink:
        worker = start_worker("summary-victim", concurrency=1, SUMMARY_EMAIL_BATCH_SIZE=str(BATCH), **sink.env())
        try:
            wait_for_worker(worker)
            # when: the pool process is SIGKILLed while the server holds its 8th message
            result = task.apply_async(kwargs={"trigger": "manual"}, queue="summary-victim")
            wait_for(sink.paused.is_set, 60, message=f"message {HELD_MESSAGE} to be held")
            assert sink.count() == HELD_MESSAGE - 1
            assert SummaryDelivery.objects.filter(status="SENT").count() == BATCH  # batch 1 recorded, not batch 2
            # and the operator sees the run going on: one batch of three done, its 5 emails sent
            live = JobRun.objects.get(task_id=result.id)
            assert (live.status, live.progress, live.items_processed) == (JobRun.Status.RUNNING, "1/3 batches", 5)
            pool = psutil.Process(worker.proc.pid).children()
            assert len(pool) == 1
            sink.pause_before = None
            os.kill(pool[0].pid, signal.SIGKILL)
            sink.resume()
            # then: the batch comes back on a new pool process and the run finishes
            run = wait_for(lambda: JobRun.objects.filter(task_id=result.id).exclude(status="RUNNING").first(), 90,
                           interval=0.2, message="the run to finish")
            worker.stop()
            log = worker.log()
        finally:
            worker.stop()
            worker.cleanup()

    received = sink.recipients()
    copies = Counter(received)
    duplicates = sorted(address for address, count in copies.items() if count > 1)
    assert set(copies) == everyone  # nobody missed
    assert len(received) == 14 and len(duplicates) == 2 <= BATCH and max(copies.values()) == 2
    # the two duplicates are the 6th and 7th messages: batch 2's, sent before the kill
    assert set(duplicates) == set(received[5:7])
    assert (run.status, run.items_processed, run.progress) == (JobRun.Status.SUCCEEDED, 12, "3/3 batches")
    assert SummaryDelivery.objects.filter(status="SENT").count() == 12
    assert "WorkerLostError" in log  # the kill, as the worker saw it
