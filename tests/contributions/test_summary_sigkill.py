"""A hard kill in the middle of the weekly summaries, then a re-run (SPEC §5 "Weekly summaries").

"After a hard kill (SIGKILL, power loss) at most one delivery batch
(``SUMMARY_EMAIL_BATCH_SIZE`` members) may receive a second copy, and nobody
is missed."

The numbers, worked out by hand: 3 active groups of 4 members, all with an
email: 12 emails. A real worker sends them in batches of 5 through Django's
file-based backend (each message is in the file as soon as it is sent) and
is SIGKILLed right after its 10th message: the worst moment, when a whole
batch (messages 6 to 10) was sent and not yet recorded. The kill point is
deterministic (``tests.probes.PausingFileBackend`` stops the process there
until the test kills it). So the killed run sent 10 emails and recorded 5
deliveries; the re-run sends the 12 - 5 = 7 members without a delivery,
5 of whom got the email already: 5 duplicates (one batch), 0 missed.
"""

from __future__ import annotations

import signal
from collections import Counter

import pytest
from celery import current_app
from django.conf import settings

from contributions.models import SummaryDelivery
from groups.models import Group, Round
from scheduler_app.jobs import get_spec
from scheduler_app.locks import OwnedRedisBackend
from scheduler_app.models import JobRun
from tests.factories import make_group, make_members, make_round
from tests.probes import recipients_in, wait_until_paused
from tests.processes import CeleryProcess, process_env, wait_for_worker

pytestmark = pytest.mark.django_db(transaction=True)

BATCH = 5
KILL_AFTER_EMAILS = 10


def test_sigkill_mid_send_then_a_rerun_duplicates_at_most_one_batch_and_misses_nobody(job_redis, mailoutbox,
                                                                                    tmp_path):
    # given: 3 active groups of 4 members, each with an email and an open round
    everyone = set()
    for _ in range(3):
        group = make_group(status=Group.Status.ACTIVE, deployed=True)
        members = make_members(group, 4)
        make_round(group, number=1, recipient=members[0], status=Round.Status.OPEN)
        everyone |= {member.user.email for member in members}
    spec = get_spec("send-contribution-summaries")
    task = current_app.tasks[spec.task_name]

    # when: a worker sending in batches of 5 is SIGKILLed right after its 10th email
    victim = CeleryProcess(
        "worker-summary-victim",
        ["worker", "-l", "INFO", "-c", "1", "-n", "summary-victim@%h", "-Q", "victim", "--without-gossip",
         "--without-mingle"],
        process_env(SUMMARY_EMAIL_BATCH_SIZE=str(BATCH), EMAIL_BACKEND="tests.probes.PausingFileBackend",
                    EMAIL_FILE_PATH=str(tmp_path), TEST_PAUSE_AFTER_EMAILS=str(KILL_AFTER_EMAILS)),
    )
    try:
        wait_for_worker(victim)
        killed = task.apply_async(kwargs={"trigger": "manual"}, queue="victim")
        assert wait_until_paused(job_redis, victim).endswith(f" after email {KILL_AFTER_EMAILS}")
        victim.kill(signal.SIGKILL)
        victim.proc.wait(10)
    finally:
        victim.stop()
        victim.cleanup()

    # then: 10 members got an email, and only the first batch of 5 is recorded
    first = recipients_in(tmp_path)
    assert len(first) == len(set(first)) == KILL_AFTER_EMAILS
    assert set(first) <= everyone
    recorded = set(SummaryDelivery.objects.values_list("membership__user__email", flat=True))
    assert len(recorded) == BATCH and recorded <= set(first)

    # when: the job runs again (the killed run's lock cleared, as its TTL or an operator would)
    OwnedRedisBackend(settings.CELERY_ONCE["settings"]).clear_lock(spec.lock_key)
    rerun = task.run_locally({"trigger": "manual"})

    # then: the 7 members without a delivery get it, 5 of them for the second time, none is missed
    second = [message.to[0] for message in mailoutbox]
    assert sorted(second) == sorted(everyone - recorded)
    copies = Counter(first + second)
    duplicates = sorted(address for address, count in copies.items() if count > 1)
    assert len(duplicates) == BATCH  # the victim's SUMMARY_EMAIL_BATCH_SIZE: at most one batch
    assert set(copies) == everyone and max(copies.values()) == 2
    assert sorted(SummaryDelivery.objects.values_list("membership__user__email", flat=True)) == sorted(everyone)
    # and the history says so: the killed run lost, the re-run sent 7
    assert JobRun.objects.get(task_id=killed.id).status == JobRun.Status.FAILED
    assert JobRun.objects.get(task_id=rerun.id).items_processed == 12 - BATCH
