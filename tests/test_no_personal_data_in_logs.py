"""No email address, name, password, secret key or DSN in any log line or Sentry event (issue 11 item 5, SPEC §7).

The three jobs run with ``run_job --local`` in real processes at DEBUG, on a
password-protected Redis, with Sentry pointed at a local recorder; one run of
the summaries fails (its SMTP server refuses connections) so that an event
is sent. Every distinctive value is then looked for in everything printed and
everything Sentry received.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
import redis
from django.utils import timezone

from audit.models import AuditLog
from contributions.models import Contribution
from devtools.embedded_redis import free_port, start_redis_server
from groups.models import Group
from tests.factories import make_contribution, make_group, make_member, make_members, make_round, make_user
from tests.processes import ROOT, process_env
from tests.sentry_recorder import SentryRecorder

pytestmark = pytest.mark.django_db(transaction=True)

FIRST, LAST = "Xylophia", "Quennevillard"
EMAIL = "xylophia.quennevillard@pii-probe.example"
BAD_EMAIL = "quennevillard-broken@@pii-probe.example"
USER_PASSWORD = "UsrPw-7Hq2Lm9Xc"
REDIS_PASSWORD = "RdsPw-Zq7xS3cret"
SECRET_KEY = "SecretKey-Pz8Nf3Lk2Wq7Jr5Tb1Vc9Hx4Md6Gs0Ye-not-for-production"
DSN_KEY = "0badc0dedeadbeef0badc0dedeadbeef"
SECRETS = [EMAIL, BAD_EMAIL, "pii-probe", FIRST, LAST, USER_PASSWORD, REDIS_PASSWORD, SECRET_KEY, DSN_KEY]


@pytest.fixture
def private_redis() -> Iterator[str]:
    workdir = tempfile.mkdtemp(prefix="redis-pii-")
    server = start_redis_server(workdir)
    try:
        redis.Redis.from_url(server.url).config_set("requirepass", REDIS_PASSWORD)
        yield server.url.replace("redis://", f"redis://:{REDIS_PASSWORD}@")
    finally:
        server.stop()


@pytest.fixture
def recorder() -> Iterator[SentryRecorder]:
    recorder = SentryRecorder()
    yield recorder
    recorder.close()


def last_week_noon() -> dt.datetime:
    today = timezone.localdate()
    monday = today - dt.timedelta(days=today.weekday())
    return dt.datetime.combine(monday - dt.timedelta(days=2), dt.time(12), tzinfo=dt.UTC)


@pytest.fixture
def distinctive_members():
    # an ACTIVE group whose members get last week's summary, one of them with the distinctive name and address
    group = make_group(status=Group.Status.ACTIVE, deployed=True, min_members=2, total_rounds=3)
    member = make_member(group, user=make_user(username="member-a", email=EMAIL, first_name=FIRST, last_name=LAST))
    member.user.set_password(USER_PASSWORD)
    member.user.save()
    broken = make_member(group, user=make_user(username="member-b", email=BAD_EMAIL, first_name=FIRST,
                                               last_name=LAST))
    round_ = make_round(group, number=1, recipient=member)
    make_contribution(member, round_, confirmed_at=last_week_noon())
    make_contribution(broken, round_, confirmed_at=last_week_noon())
    # a PENDING group ready to activate, and an inactive ACTIVE one (the hourly job's lines)
    ready = make_group(deployed=True, min_members=2)
    make_members(ready, 2, first_name=FIRST, last_name=LAST)
    # an old audit log about the member, for the archive
    AuditLog.objects.create(action="USER_LOGIN", user=member.user, details=f"{FIRST} {LAST} <{EMAIL}> logged in",
                            metadata={"email": EMAIL}, entity_type="user", entity_id=str(member.user_id),
                            created_at=timezone.now() - dt.timedelta(days=400))
    return group


def run_job(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", "run_job", name, "--local"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def test_no_personal_data_or_secret_in_logs_or_sentry_events(distinctive_members, private_redis, recorder):
    env = process_env(REDIS_URL=private_redis, LOG_LEVEL="DEBUG", DJANGO_SECRET_KEY=SECRET_KEY,
                      SENTRY_DSN=f"http://{DSN_KEY}@127.0.0.1:{recorder.port}/1", SENTRY_ENVIRONMENT="test")
    failing_smtp = {**env, "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                    "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(free_port())}

    # when the three jobs run, and the summaries once more against an SMTP server that is not there
    runs = [
        ("send-contribution-summaries", run_job("send-contribution-summaries", failing_smtp)),
        ("send-contribution-summaries", run_job("send-contribution-summaries", env)),
        ("update-group-statuses", run_job("update-group-statuses", env)),
        ("archive-audit-logs", run_job("archive-audit-logs", env)),
    ]

    # then the jobs did their work (the failing one failed) ...
    assert [done.returncode for _name, done in runs] == [1, 0, 0, 0], [done.stderr[-2000:] for _n, done in runs]
    assert Group.objects.filter(status=Group.Status.ACTIVE).count() == 2
    assert not AuditLog.objects.filter(action="USER_LOGIN").exists()
    assert Contribution.objects.count() == 2
    output = "\n".join(done.stdout + done.stderr for _name, done in runs)
    assert "DEBUG" in output and "Job send-contribution-summaries succeeded" in output
    events = recorder.events()
    assert events, "the failed run sent no event to Sentry"
    sent = json.dumps(recorder.items)

    # ... and nothing personal or secret was printed or sent
    for secret in SECRETS:
        assert secret not in output, f"{secret!r} in the logs:\n" + "\n".join(
            line for line in output.splitlines() if secret in line)
        assert secret not in sent, f"{secret!r} in a Sentry envelope"
