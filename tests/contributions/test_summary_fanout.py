"""The summaries job fanned out over a real worker, through a real SMTP server (issue 10).

The numbers, worked out by hand. Three ACTIVE groups of 4 members with an
email (12); in the third also carol (no email), olive (opted out) and rita
(an address the server refuses with 550 at RCPT). With
``SUMMARY_EMAIL_BATCH_SIZE=5`` the job inserts 13 PENDING deliveries (12 +
rita; carol and olive get none) and sends 3 batches (5, 5, 3). The server
receives 12 messages, one per member; rita's delivery is FAILED "refused by
the mail server (SMTP 550)", carol is counted as without an email. The run
ends SUCCEEDED with 12 items and "3/3 batches": a refused recipient is
settled by its batch (the next run tries again); only recipients a batch
gave up on, after its retries, fail the run.
"""

from __future__ import annotations

import pytest
from celery import current_app

from contributions.models import SummaryDelivery, SummaryOptOut
from devtools.smtp_sink import SmtpSink
from groups.models import Group, Round
from scheduler_app.jobs import get_spec
from scheduler_app.models import JobRun
from tests.factories import make_group, make_member, make_members, make_round
from tests.processes import CeleryProcess, process_env, wait_for, wait_for_worker

pytestmark = pytest.mark.django_db(transaction=True)

BATCH = 5


@pytest.fixture
def members():
    """The scenario of the module docstring: returns (addresses that must get one email, rita's address)."""
    everyone = set()
    groups = []
    for _ in range(3):
        group = make_group(status=Group.Status.ACTIVE, deployed=True)
        people = make_members(group, 4)
        make_round(group, number=1, recipient=people[0], status=Round.Status.OPEN)
        everyone |= {member.user.email for member in people}
        groups.append(group)
    make_member(groups[2], username="carol", email="")
    olive = make_member(groups[2], username="olive")
    SummaryOptOut.objects.create(user=olive.user, source=SummaryOptOut.Source.ADMIN)
    rita = make_member(groups[2], username="rita")
    return everyone, rita.user.email


def start_worker(name: str, *, concurrency: int, **env: str) -> CeleryProcess:
    """A worker of its own on queue ``name`` (the suite's shared worker, on the default queue, never sees the job)."""
    return CeleryProcess(
        f"worker-{name}",
        ["worker", "-l", "INFO", "-c", str(concurrency), "-n", f"{name}@%h", "-Q", name, "--without-gossip",
         "--without-mingle", "-P", "prefork"],
        process_env(**env),
    )


def trigger(queue: str):
    """Send the job to ``queue``; its batches and callback follow it there."""
    task = current_app.tasks[get_spec("send-contribution-summaries").task_name]
    return task.apply_async(kwargs={"trigger": "manual"}, queue=queue)


def wait_until_finished(task_id: str, timeout: float = 90) -> JobRun:
    def finished():
        run = JobRun.objects.filter(task_id=task_id).first()
        return run if run is not None and run.status != JobRun.Status.RUNNING else None

    return wait_for(finished, timeout, interval=0.2, message=f"run of task {task_id} to finish")


def test_every_member_gets_one_summary_through_smtp_and_a_second_trigger_sends_nothing(members, job_redis):
    everyone, rita = members
    with SmtpSink(refuse={rita}) as sink:
        worker = start_worker("fanout", concurrency=2, SUMMARY_EMAIL_BATCH_SIZE=str(BATCH), **sink.env())
        try:
            wait_for_worker(worker)
            # when: the job runs on the worker
            run = wait_until_finished(trigger("fanout").id)
            # then: 12 messages, one per member with a usable address, none for olive, carol or rita
            received = sink.recipients()
            assert sorted(received) == sorted(everyone)
            assert (run.status, run.items_processed, run.parts_total, run.parts_done, run.progress, run.error) == (
                JobRun.Status.SUCCEEDED, 12, 3, 3, "3/3 batches", "")
            deliveries = SummaryDelivery.objects.filter(run_id=run.pk)
            assert deliveries.count() == 13
            assert set(deliveries.values_list("status", "reason").distinct()) == {
                ("SENT", ""), ("FAILED", "refused by the mail server (SMTP 550)")}
            assert deliveries.get(status="FAILED").membership.user.email == rita
            # and each carries a signed one-click unsubscribe (RFC 8058) and a visible link
            for _, message in sink.messages:
                assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
                url = str(message["List-Unsubscribe"]).strip().strip("<>")
                assert url.startswith("http://localhost:8000/summaries/unsubscribe/")
                plain = message.get_body(("plain",))
                assert plain is not None
                assert f"Unsubscribe: {url}" in plain.get_content()

            # when: a second trigger for the same week, after the first ended
            second = wait_until_finished(trigger("fanout").id)
            # then: nothing new for the members who got theirs; rita (refused) is tried again and refused again
            assert sink.recipients() == received
            assert (second.status, second.items_processed) == (JobRun.Status.SUCCEEDED, 0)
            log = wait_for(lambda: (lambda t: t if t.count("[scheduler] Job send-contribution-summaries") >= 4
                                    else None)(worker.log()), 20)
        finally:
            worker.stop()
            worker.cleanup()
    assert "dispatched 3 batches" in log and f"run {run.pk} stays RUNNING until they finish" in log
    assert "[scheduler] Job send-contribution-summaries succeeded in " in log
    assert ": 12 items (attempt 1/3, 3 batches)" in log
    assert ("[contributions] Sent 12 contribution summaries for week " in log
            and "(1 members without a usable email skipped; 1 refused by the mail server)" in log)
    assert "@" not in "\n".join(line for line in log.splitlines() if "[contributions]" in line or "[scheduler]" in line)


def test_a_second_trigger_while_batches_run_sends_nothing_twice_and_leaves_the_run_alone(members, job_redis):
    everyone, rita = members
    # given: the server holds the 7th message (and any later) at RCPT: the batches are sending
    with SmtpSink(refuse={rita}, pause_before=7) as sink:
        worker = start_worker("fanout2", concurrency=2, SUMMARY_EMAIL_BATCH_SIZE=str(BATCH), **sink.env())
        try:
            wait_for_worker(worker)
            first = trigger("fanout2")
            wait_for(sink.paused.is_set, 60, message="the 7th message to wait")
            assert JobRun.objects.get(task_id=first.id).status == JobRun.Status.RUNNING
            # when: a second trigger runs meanwhile (the lock was released when the batches were dispatched);
            # here in this process (run_job --local), as both worker processes may be held by the server
            task = current_app.tasks[get_spec("send-contribution-summaries").task_name]
            second = JobRun.objects.get(task_id=task.run_locally({"trigger": "manual"}).id)
            # then: it dispatches nothing (every delivery is claimed by the running run) and does not mark it lost
            assert (second.status, second.items_processed) == (JobRun.Status.SUCCEEDED, 0)
            assert JobRun.objects.get(task_id=first.id).status == JobRun.Status.RUNNING
            sink.resume()
            run = wait_until_finished(first.id)
        finally:
            worker.stop()
            worker.cleanup()
    # and: every member got exactly one email
    assert sorted(sink.recipients()) == sorted(everyone)
    assert (run.status, run.items_processed) == (JobRun.Status.SUCCEEDED, 12)
