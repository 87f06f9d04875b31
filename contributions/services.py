"""Weekly contribution summaries and the inactive-group check (SPEC §5).

Public functions:

* :func:`week_bounds` - the week a run summarises.
* :func:`generate_weekly_summaries` - one ``WeeklySummary`` per ACTIVE group.
* :func:`send_summaries_to_members` - one email per active member with an email.
* :func:`check_inactive_groups` - ACTIVE groups without a recent confirmed
  contribution (it lives here, with the contributions it reads, because
  ``groups`` must not import ``contributions``: STYLE, one-way dependencies).

Delivery guarantee (read before changing :func:`send_summaries_to_members`):
an email is sent first and its ``SummaryDelivery`` row is written right after
its batch, in one transaction, also when the batch stops on an exception.
Members without a row are tried again by the next run, so:

* a second run for the same week sends nothing to anyone already recorded;
* an exception while sending (SMTP down, a retry of the job) loses nothing
  and duplicates nothing: the messages sent before it are recorded;
* one member's bad address never stops the others: an address that is not
  valid is skipped when the emails are prepared, and a message the backend
  or the mail server rejects for its recipient alone (an address Django
  cannot use, an SMTP 5xx for that message) is skipped when sent. Neither
  is recorded, so the next run tries again (after the address is fixed);
* only a hard kill (SIGKILL, the hard time limit, power loss) between a send
  and the end of its batch can send a second copy to at most one batch of
  members on the next run (at-least-once). The alternative, recording
  before sending, would silently drop those members' email for the week
  (at-most-once); a duplicate summary is the cheaper failure.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import smtplib
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any

from anymail.exceptions import AnymailError, AnymailRecipientsRefused
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.message import sanitize_address
from django.core.validators import validate_email
from django.db import connections, router, transaction
from django.db.models import (
    Count,
    DecimalField,
    Exists,
    F,
    Field,
    IntegerField,
    Model,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    Window,
    prefetch_related_objects,
)
from django.db.models.functions import Coalesce, Mod, RowNumber
from django.template.loader import get_template
from django.utils import timezone

from audit.services import create_audit_log
from contributions.models import Contribution, SummaryDelivery, SummaryOptOut, WeeklySummary
from groups.models import Group, Membership, Round
from scheduler_app.models import JobRun

logger = logging.getLogger("contributions")

#: Summaries whose members are loaded together. Bounds memory (about ten
#: members a group) and keeps ``IN`` lists far below SQLite's parameter limit;
#: up to this many groups the loading queries are a constant four.
GROUPS_PER_CHUNK = 2000

TEMPLATE_SUBJECT = "contributions/email/weekly_summary_subject.txt"
TEMPLATE_TEXT = "contributions/email/weekly_summary.txt"
TEMPLATE_HTML = "contributions/email/weekly_summary.html"

ZERO = Decimal("0.00")


def week_bounds(*, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """The last complete Monday-to-Monday week before ``now``, in ``settings.TIME_ZONE`` (SPEC §5).

    On Monday 2026-11-30 at any hour this is 2026-11-23 00:00 to 2026-11-30
    00:00; on Sunday 2026-11-29 it is 2026-11-16 00:00 to 2026-11-23 00:00.

    Args:
        now: aware datetime; defaults to ``timezone.now()``.

    Returns:
        ``(start, end)``: aware datetimes in TIME_ZONE; ``end`` is exclusive.

    Raises:
        ValueError: ``now`` is naive.
    """
    now = now or timezone.now()
    if timezone.is_naive(now):
        raise ValueError("now must be an aware datetime")
    local_today = timezone.localtime(now, timezone.get_default_timezone()).date()
    this_monday = local_today - dt.timedelta(days=local_today.weekday())
    return _bounds_of_week(this_monday - dt.timedelta(days=7))


def _bounds_of_week(week_start: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """Midnight of ``week_start`` and of the Monday after, in TIME_ZONE.

    Built from dates, not by adding 7 x 24 h, so a week with a DST change is
    still Monday 00:00 to Monday 00:00 local time.
    """
    zone = timezone.get_default_timezone()
    start = dt.datetime.combine(week_start, dt.time.min, tzinfo=zone)
    end = dt.datetime.combine(week_start + dt.timedelta(days=7), dt.time.min, tzinfo=zone)
    return start, end


def _groups_with_week_totals(*, start: dt.datetime, end: dt.datetime):
    """ACTIVE groups annotated with ``week_count`` and ``week_total`` of the window ``[start, end)``.

    Only CONFIRMED contributions whose ``confirmed_at`` falls in the window
    count. Both totals are computed in the database (Decimal sum, never float
    in Python), as correlated subqueries served by the
    (group, status, confirmed_at) index.
    """
    window = (
        Contribution.objects.filter(
            group=OuterRef("pk"),
            status=Contribution.Status.CONFIRMED,
            confirmed_at__gte=start,
            confirmed_at__lt=end,
        )
        .order_by()
        .values("group")
    )
    money = DecimalField(max_digits=14, decimal_places=2)
    return (
        Group.objects.filter(status=Group.Status.ACTIVE)
        .order_by()
        .annotate(
            week_count=Coalesce(
                Subquery(window.annotate(n=Count("pk")).values("n"), output_field=IntegerField()), Value(0),
            ),
            week_total=Coalesce(
                Subquery(window.annotate(total=Sum("amount")).values("total"), output_field=money),
                Value(ZERO, output_field=money),
                output_field=money,
            ),
        )
    )


def generate_weekly_summaries(*, now: dt.datetime | None = None, dry_run: bool = False) -> list[WeeklySummary]:
    """Get or create the week's summary of every ACTIVE group (SPEC §5).

    The week is :func:`week_bounds` of ``now``. Missing summaries are created
    by one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` that computes the
    totals in the database; summaries that already exist (an earlier run of
    the same week) are kept as they are, so every member gets the same figures.
    Two queries, whatever the number of groups.

    Args:
        now: aware datetime; defaults to ``timezone.now()``.
        dry_run: create nothing; return the existing summaries plus unsaved
            ones (``pk`` None) for the groups that have none yet.

    Returns:
        The summaries, ``group`` loaded, ordered by group id.

    Raises:
        ValueError: ``now`` is naive.
    """
    start, end = week_bounds(now=now)
    week_start = start.date()
    existing = WeeklySummary.objects.filter(week_start=week_start, group__status=Group.Status.ACTIVE)
    if dry_run:
        have = {summary.group_id: summary for summary in existing.select_related("group")}
        summaries = [
            have.get(group.pk)
            or WeeklySummary(group=group, week_start=week_start, contribution_count=group.week_count,
                             total_amount=group.week_total)
            for group in _groups_with_week_totals(start=start, end=end).order_by("pk")
        ]
        logger.info("Dry run: %d weekly summaries for week %s (%d new)", len(summaries), week_start,
                    sum(1 for summary in summaries if summary.pk is None))
        return summaries

    created = _insert_missing_summaries(start=start, end=end, created_at=timezone.now())
    summaries = list(existing.select_related("group").order_by("group_id"))
    logger.info("Generated %d weekly summaries for week %s (%d new)", len(summaries), week_start, created)
    return summaries


def _insert_missing_summaries(*, start: dt.datetime, end: dt.datetime, created_at: dt.datetime) -> int:
    """Create the missing summaries of the week in one statement; return how many were created."""
    alias = router.db_for_write(WeeklySummary)
    connection = connections[alias]
    quote = connection.ops.quote_name
    meta = WeeklySummary._meta
    source = _groups_with_week_totals(start=start, end=end).annotate(
        summary_week_start=Value(start.date(), output_field=meta.get_field("week_start")),
        summary_created_at=Value(created_at, output_field=meta.get_field("created_at")),
    ).values_list("pk", "summary_week_start", "week_count", "week_total", "summary_created_at")
    # values_list keeps this order in the SELECT (Django >= 5.2), matching the columns below.
    select_sql, select_params = source.query.get_compiler(using=alias).as_sql()
    columns = ", ".join(quote(_column(WeeklySummary, name)) for name in (
        "group", "week_start", "contribution_count", "total_amount", "created_at",
    ))
    conflict = ", ".join(quote(_column(WeeklySummary, name)) for name in ("group", "week_start"))
    # The SELECT has a WHERE clause, which SQLite needs to parse ON CONFLICT after it.
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) {select_sql} ON CONFLICT ({conflict}) DO NOTHING"
    with connection.cursor() as cursor:
        cursor.execute(sql, select_params)
        return max(cursor.rowcount, 0)


@dataclasses.dataclass
class _Outgoing:
    """One summary email ready to send, and what to record once it is sent."""

    delivery_id: int | None
    membership_id: int
    message: EmailMultiAlternatives


@dataclasses.dataclass
class _WeekResult:
    sent: int = 0
    #: Members with no email address.
    without_email: int = 0
    #: Members whose address is not valid (found when preparing, or rejected by the backend when sending).
    invalid_email: int = 0
    #: Messages the mail server refused for their recipient (an SMTP 5xx, or a refused RCPT).
    refused: int = 0


class SummarySendError(Exception):
    """Sending the summaries stopped on an error that a later attempt may not meet.

    The mail server down or unreachable, a timeout, a dropped connection, a
    temporary (4xx) answer to a message, the sender refused: what a retry of
    the job is for. The messages sent before it are recorded first.

    The message names the original exception's type and its SMTP code or
    errno, never its text: that text (the server's answer, the recipients
    Django or smtplib list) can hold email addresses, which must not reach
    the logs, ``JobRun.error`` or Sentry. For the same reason it is raised
    without the original chained to it.
    """


#: What the email backend raises for a connection or a message: a bad
#: address or header (``ValueError``, ``BadHeaderError``), the SMTP dialogue
#: (``SMTPException``), the network (``OSError``: refused, timeouts, TLS).
#: An email service's backend (django-anymail) raises its ``AnymailError``s:
#: a rejected recipient (``AnymailRecipientsRefused``), an API error.
_MAIL_ERRORS = (ValueError, smtplib.SMTPException, OSError, AnymailError)

#: "Service not available, closing transmission channel": the server is going
#: away, whatever the message; never the recipient's fault.
_SMTP_CLOSING = 421


def _safe_description(exc: BaseException) -> str:
    """``SMTPDataError (SMTP 451)``, ``ConnectionRefusedError (errno 111)``: the type and codes, no text."""
    codes = []
    if isinstance(exc, smtplib.SMTPResponseException):
        codes.append(f"SMTP {exc.smtp_code}")
    elif isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes.extend(f"SMTP {code}" for code in sorted({code for code, _ in exc.recipients.values()}))
    elif isinstance(exc, OSError) and exc.errno is not None:
        codes.append(f"errno {exc.errno}")
    return type(exc).__name__ + (f" ({', '.join(codes)})" if codes else "")


def _safe_codes(exc: BaseException) -> str:
    """``SMTP 550`` (the codes of an SMTP error), or empty."""
    description = _safe_description(exc)
    return description[description.index("(") + 1:-1] if "(" in description else ""


def _skipped_recipient(exc: BaseException) -> str | None:
    """Why this exception means "skip this message's recipient, send the rest": ``"invalid"``, ``"refused"`` or None.

    Each message has one recipient, so an error about its address or an
    SMTP 5xx answer to it concerns that member alone. None (the error is
    the server's, the connection's or the sender's) stops the batch.
    """
    if isinstance(exc, AnymailRecipientsRefused):
        # An email service (django-anymail) rejected the (only) recipient: like an SMTP 5xx.
        return "refused"
    if isinstance(exc, ValueError):
        # Django's address handling: 'Invalid address "..."', BadHeaderError
        # (a newline), an address it cannot encode. The sender is checked up
        # front (_check_sender), so here it is the recipient's address.
        return "invalid"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        # The server refused the (only) recipient: 5xx no such user, or a 4xx
        # it may accept later; either way a retry now would not help the
        # members after it. A 421 is the server closing: stop.
        codes = {code for code, _ in exc.recipients.values()}
        return None if _SMTP_CLOSING in codes else "refused"
    if isinstance(exc, smtplib.SMTPDataError) and 500 <= exc.smtp_code < 600:
        # The message was rejected after DATA, permanently (e.g. 550 mailbox
        # unavailable, 554 rejected for policy): this recipient only.
        return "refused"
    return None


def _usable_address(address: str) -> bool:
    """True when ``address`` is one valid address without a line break (SPEC §5: others are skipped)."""
    if "\r" in address or "\n" in address:
        return False
    try:
        validate_email(address)
    except ValidationError:
        return False
    return True


def _check_sender() -> None:
    """Refuse to start when ``DEFAULT_FROM_EMAIL`` is unusable.

    Without this check every message would fail with the same ``ValueError``
    as a member's bad address and be skipped one by one, and the run would
    succeed with nothing sent.

    Raises:
        ImproperlyConfigured: naming the setting, not its value.
    """
    sender = str(settings.DEFAULT_FROM_EMAIL)
    try:
        if "\r" in sender or "\n" in sender:
            raise ValueError("a line break")
        # What Django's SMTP backend does with the sender of every message.
        sanitize_address(sender, settings.DEFAULT_CHARSET)
    except ValueError:
        raise ImproperlyConfigured(
            "DEFAULT_FROM_EMAIL is not a valid sender address (an address, or 'Name <address>')"
        ) from None


def send_summaries_to_members(
    summaries: Iterable[WeeklySummary],
    *,
    dry_run: bool = False,
    batch_size: int | None = None,
    run_id: int | None = None,
    unsubscribe_url: Callable[[int], str] | None = None,
) -> int:
    """Email each active member of each summary's group their weekly summary, in this process (SPEC §5).

    Every active member (``left_at`` null) with an email address who has not
    opted out gets one email, plain text and HTML, with: the group's totals
    for the week (count, sum, currency), their own CONFIRMED contributions
    that week, the current round (the lowest-numbered OPEN round) and its
    recipient's username, and what they still owe in it
    (``contribution_amount`` minus their CONFIRMED amount in that round,
    never below 0). Members without a usable email are skipped and counted:
    no address, an address that is not valid (``validate_email``, or a line
    break in it), or one the email backend rejects when sending. A recipient
    the mail server refuses (a refused RCPT, a 5xx answer to the message) is
    recorded FAILED for that member and counted. None of them stops the
    others; the next run for the week tries them again. Members whose
    delivery is recorded SENT for the week get nothing.

    The deliveries are planned (:func:`plan_deliveries`) and sent batch by
    batch (:func:`send_delivery_batch`), as the workers do for the job. No
    email address reaches the logs or the exceptions raised.

    Args:
        summaries: from :func:`generate_weekly_summaries`; their weeks are sent
            (every ACTIVE group's summary of those weeks).
        dry_run: count the emails that would be sent; send and record nothing.
        batch_size: emails per connection and per recorded batch (>= 1);
            defaults to ``settings.SUMMARY_EMAIL_BATCH_SIZE``.
        run_id: the ``JobRun`` the deliveries belong to (None outside a job).
        unsubscribe_url: user id -> the signed one-click unsubscribe URL of the email.

    Returns:
        The number of emails sent (in a dry run: that would be sent).

    Raises:
        ValueError: ``batch_size`` below 1, or an unsaved summary outside a dry run.
        ImproperlyConfigured: ``DEFAULT_FROM_EMAIL`` is not a valid address.
        SummarySendError: sending stopped on an error of the connection, the
            server or the sender (a retry may succeed); its message holds no
            address. The batch's emails sent before it are recorded first,
            so a retry does not repeat them.
    """
    batch_size = settings.SUMMARY_EMAIL_BATCH_SIZE if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid: a number of emails >= 1")
    _check_sender()
    by_week: dict[dt.date, list[WeeklySummary]] = defaultdict(list)
    for summary in summaries:
        if summary.pk is None and not dry_run:
            raise ValueError("unsaved summaries can only be sent in a dry run")
        by_week[summary.week_start].append(summary)

    total_sent = 0
    for week_start in sorted(by_week):
        if dry_run:
            result = _dry_run_week(week_start, by_week[week_start])
            log_week(week_start, sent=result.sent, without_email=result.without_email,
                     invalid=result.invalid_email, refused=0, dry_run=True)
            total_sent += result.sent
            continue
        plan = plan_deliveries(week_start, run_id=run_id, batch_size=batch_size)
        week = BatchResult()
        for first_id, until_id in plan.batches:
            token = f"local:{run_id or uuid.uuid4().hex}:{first_id}"
            try:
                done = send_delivery_batch(run_id=run_id, first_id=first_id, until_id=until_id, token=token,
                                           unsubscribe_url=unsubscribe_url)
            except SummarySendError:
                # What was sent is recorded; the rest stays claimed by this token, and
                # plan_deliveries hands it to the next attempt.
                raise
            for field in ("sent", "invalid", "refused", "unsubscribed"):
                setattr(week, field, getattr(week, field) + getattr(done, field))
        total_sent += week.sent
        log_week(week_start, sent=week.sent, without_email=plan.without_email, invalid=week.invalid,
                 refused=week.refused)
    return total_sent


def log_week(week_start: dt.date, *, sent: int, without_email: int, invalid: int, refused: int,
             not_reached: int = 0, dry_run: bool = False) -> None:
    """The week's line: counts only, no address, no name, no id of who was skipped (SPEC §7)."""
    invalid_text = f", {invalid} of them with an invalid address" if invalid else ""
    refused_text = f"; {refused} refused by the mail server" if refused else ""
    missed = f"; {not_reached} not reached" if not_reached else ""
    logger.info("%s %d contribution summaries for week %s (%d members without a usable email skipped%s%s%s)",
                "Dry run: would send" if dry_run else "Sent", sent, week_start, without_email + invalid,
                invalid_text, refused_text, missed)


def _dry_run_week(week_start: dt.date, summaries: list[WeeklySummary]) -> _WeekResult:
    start, end = _bounds_of_week(week_start)
    result = _WeekResult()
    for offset in range(0, len(summaries), GROUPS_PER_CHUNK):
        chunk = summaries[offset:offset + GROUPS_PER_CHUNK]
        result.sent += len(_prepare_chunk(chunk, week_start=week_start, start=start, end=end, result=result))
    return result


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount:.2f} {currency}"


def _prepare_chunk(summaries: Sequence[WeeklySummary], *, week_start: dt.date, start: dt.datetime,
                   end: dt.datetime, result: _WeekResult,
                   unsubscribe_url: Callable[[int], str] | None = None) -> list[_Outgoing]:
    """For a dry run: load what the chunk's emails would need in four queries and render them.

    With ``unsubscribe_url`` (a user id to its link) the messages carry the
    link and headers that the delivery batches give theirs (the benchmark's
    baseline sends the same messages as the job).

    Counts members without an email into ``result.without_email`` and those
    whose address is not usable (:func:`_usable_address`) into
    ``result.invalid_email``; neither gets a message. Members already sent
    the week's summary, or opted out, are left out.
    """
    # Summaries straight from generate_weekly_summaries have their group
    # loaded; others get theirs in one query instead of one each.
    prefetch_related_objects(list(summaries), "group")
    by_group = {summary.group_id: summary for summary in summaries}
    group_ids = list(by_group)

    user_model = get_user_model()
    username_field = user_model.USERNAME_FIELD
    email_field = user_model.get_email_field_name()
    already_sent = SummaryDelivery.objects.filter(membership=OuterRef("pk"), summary__week_start=week_start,
                                                  status=SummaryDelivery.Status.SENT)
    members = list(
        Membership.objects.filter(group_id__in=group_ids, left_at__isnull=True)
        .filter(~Exists(already_sent))
        .filter(~Exists(_opted_out(OuterRef("user_id"))))
        .select_related("user")
        # Only what the email needs: no password hashes in memory.
        .only("group_id", "payout_position", f"user__{username_field}", f"user__{email_field}")
        .order_by("group_id", "payout_position", "pk")
    )
    lookups = _WeekLookups.load(group_ids=group_ids, membership_ids=None, start=start, end=end)
    outgoing: list[_Outgoing] = []
    for member in members:
        email = (getattr(member.user, email_field) or "").strip()
        if not email:
            result.without_email += 1
            continue
        if not _usable_address(email):
            result.invalid_email += 1
            continue
        url = unsubscribe_url(member.user_id) if unsubscribe_url is not None else ""
        message = lookups.message(member, by_group[member.group_id], email=email, week_start=week_start,
                                  unsubscribe_url=url)
        outgoing.append(_Outgoing(delivery_id=None, membership_id=member.pk, message=message))
    return outgoing


def _opted_out(user_ref):
    """The opt-out rows of ``user_ref`` (an ``OuterRef`` to a user id): for ``Exists``."""
    return SummaryOptOut.objects.filter(user_id=user_ref)


@dataclasses.dataclass
class _WeekLookups:
    """What the emails of some members need besides their summary, loaded in three queries."""

    own: dict[int, list[dict]]
    current_rounds: dict[int, Round]
    paid: dict[tuple[int, int], Decimal]
    templates: tuple

    @classmethod
    def load(cls, *, group_ids: list[int], membership_ids: list[int] | None, start: dt.datetime,
             end: dt.datetime) -> _WeekLookups:
        """The week's CONFIRMED contributions of the members (of ``membership_ids``, or all of the groups),
        the groups' current rounds (the lowest-numbered OPEN one) and what each member paid in it."""
        username_field = get_user_model().USERNAME_FIELD
        mine = Contribution.objects.filter(status=Contribution.Status.CONFIRMED, confirmed_at__gte=start,
                                           confirmed_at__lt=end)
        mine = mine.filter(membership_id__in=membership_ids) if membership_ids is not None else mine.filter(
            group_id__in=group_ids)
        own: dict[int, list[Any]] = defaultdict(list)
        for row in mine.order_by("confirmed_at", "pk").values("membership_id", "amount", "confirmed_at",
                                                              "round__number"):
            own[row["membership_id"]].append(row)
        lower_open = Round.objects.filter(group=OuterRef("group"), status=Round.Status.OPEN,
                                          number__lt=OuterRef("number"))
        current_rounds = {
            rnd.group_id: rnd
            for rnd in Round.objects.filter(group_id__in=group_ids, status=Round.Status.OPEN)
            .filter(~Exists(lower_open))
            .select_related("recipient__user")
            .only("group_id", "number", "due_date", "recipient__user__" + username_field)
        }
        paid_rows = Contribution.objects.filter(
            round_id__in=[rnd.pk for rnd in current_rounds.values()], status=Contribution.Status.CONFIRMED,
        )
        if membership_ids is not None:
            paid_rows = paid_rows.filter(membership_id__in=membership_ids)
        paid = {
            (row["round_id"], row["membership_id"]): row["paid"]
            for row in paid_rows.order_by().values("round_id", "membership_id").annotate(paid=Sum("amount"))
        }
        templates = (get_template(TEMPLATE_SUBJECT), get_template(TEMPLATE_TEXT), get_template(TEMPLATE_HTML))
        return cls(own=own, current_rounds=current_rounds, paid=paid, templates=templates)

    def message(self, member: Membership, summary: WeeklySummary, *, email: str, week_start: dt.date,
                unsubscribe_url: str = "") -> EmailMultiAlternatives:
        """The summary email of ``member`` (plain text and HTML); with ``unsubscribe_url``, RFC 8058 headers."""
        zone = timezone.get_default_timezone()
        group = summary.group
        current = self.current_rounds.get(member.group_id)
        owed = None
        if current is not None:
            owed = max(group.contribution_amount - self.paid.get((current.pk, member.pk), ZERO), ZERO)
        rows = self.own.get(member.pk, [])
        contributions = [
            {
                "amount": _money(row["amount"], group.currency),
                "confirmed_at": timezone.localtime(row["confirmed_at"], zone),
                "round_number": row["round__number"],
            }
            for row in rows
        ]
        own_total = sum((row["amount"] for row in rows), ZERO)
        context = {
            "member_name": member.user.get_username(),
            "group_name": group.name,
            "currency": group.currency,
            "week_start": week_start,
            "week_end": week_start + dt.timedelta(days=6),
            "group_count": summary.contribution_count,
            "group_total": _money(summary.total_amount, group.currency),
            "contributions": contributions,
            "own_total": _money(own_total, group.currency),
            "current_round": current,
            "recipient_name": current.recipient.user.get_username() if current is not None else "",
            "recipient_is_member": current is not None and current.recipient_id == member.pk,
            "contribution_amount": _money(group.contribution_amount, group.currency),
            "owed": _money(owed, group.currency) if owed is not None else "",
            "owes_nothing": owed is not None and owed == ZERO,
            "unsubscribe_url": unsubscribe_url,
        }
        subject_template, text_template, html_template = self.templates
        headers = {}
        if unsubscribe_url:
            # RFC 2369 and RFC 8058: mail clients show an "unsubscribe" button that POSTs here.
            headers = {"List-Unsubscribe": f"<{unsubscribe_url}>",
                       "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
        message = EmailMultiAlternatives(
            subject=" ".join(subject_template.render(context).split()),
            body=text_template.render(context),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[email],
            headers=headers,
        )
        message.attach_alternative(html_template.render(context), "text/html")
        return message


# --- Deliveries: plan, claim, send, record -------------------------------------


@dataclasses.dataclass
class DeliveryPlan:
    """What :func:`plan_deliveries` prepared: the PENDING deliveries of one run, cut into batches.

    Attributes:
        week_start: the week.
        batches: ``(first_id, until_id)`` per batch: the run's PENDING delivery ids
            ``first_id <= id < until_id`` (``until_id`` None: no upper bound).
        pending: deliveries in those batches.
        without_email: active members of the week's groups with no email address (skipped).
    """

    week_start: dt.date
    batches: list[tuple[int, int | None]]
    pending: int
    without_email: int


def plan_deliveries(week_start: dt.date, *, run_id: int | None, batch_size: int) -> DeliveryPlan:
    """Claim the week's deliveries for run ``run_id`` as PENDING rows and cut them into batches (set-based).

    1. Rows of the week that an *ended* run left unsent (FAILED, an invalid
       address, or PENDING/SENDING because its batches died) are handed to
       this run: the next run tries them again. Rows of a run still RUNNING
       (its batches may be sending right now) are left alone, so a second
       trigger while batches run sends nothing twice.
    2. One ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` creates a PENDING
       row for every active member with an email of every ACTIVE group with a
       summary that week and not opted out; the unique (summary, membership)
       constraint keeps the rows of other runs.
    3. One query numbers this run's PENDING rows (``ROW_NUMBER``) and returns
       the first id of every ``batch_size``-th.

    Five statements, whatever the number of members.
    """
    alias = router.db_for_write(SummaryDelivery)
    running = JobRun.objects.filter(pk=OuterRef("run_id"), status=JobRun.Status.RUNNING)
    week = SummaryDelivery.objects.filter(summary__week_start=week_start)
    unsent = Q(status__in=(SummaryDelivery.Status.FAILED, SummaryDelivery.Status.PENDING,
                           SummaryDelivery.Status.SENDING)) | Q(
        status=SummaryDelivery.Status.SKIPPED, reason=SummaryDelivery.REASON_INVALID)
    stale = week.filter(unsent).filter(~Exists(running))
    if run_id is not None:
        # This run's own rows left SENDING by an earlier attempt of it (a local run's retry).
        stale = stale | week.filter(run_id=run_id, status=SummaryDelivery.Status.SENDING)
    stale.update(status=SummaryDelivery.Status.PENDING, run_id=run_id, claimed_by="", reason="")

    _insert_pending(week_start, run_id=run_id, alias=alias)

    mine = SummaryDelivery.objects.filter(run_id=run_id, status=SummaryDelivery.Status.PENDING,
                                          summary__week_start=week_start)
    firsts = list(
        mine.annotate(position=Window(RowNumber(), order_by=F("id").asc()))
        .annotate(slot=Mod(F("position") - 1, batch_size))
        .filter(slot=0)
        .order_by("id")
        .values_list("id", flat=True)
    )
    pending = mine.count()
    batches = [(first, firsts[i + 1] if i + 1 < len(firsts) else None) for i, first in enumerate(firsts)]
    email_field = get_user_model().get_email_field_name()
    without_email = Membership.objects.filter(
        left_at__isnull=True, group__status=Group.Status.ACTIVE,
        group__weekly_summaries__week_start=week_start,
    ).filter(Q(**{f"user__{email_field}": ""}) | Q(**{f"user__{email_field}__isnull": True})).count()
    return DeliveryPlan(week_start=week_start, batches=batches, pending=pending, without_email=without_email)


def _insert_pending(week_start: dt.date, *, run_id: int | None, alias: str) -> int:
    """Insert a PENDING delivery per member to send the week's summary to (step 2 of :func:`plan_deliveries`)."""
    connection = connections[alias]
    quote = connection.ops.quote_name
    meta = SummaryDelivery._meta
    email_field = get_user_model().get_email_field_name()
    summary_of_group = WeeklySummary.objects.filter(group=OuterRef("group_id"), week_start=week_start).values("pk")
    source = (
        Membership.objects.filter(left_at__isnull=True, group__status=Group.Status.ACTIVE)
        .exclude(**{f"user__{email_field}": ""})
        .exclude(**{f"user__{email_field}__isnull": True})
        .filter(~Exists(_opted_out(OuterRef("user_id"))))
        .annotate(
            delivery_summary=Subquery(summary_of_group[:1]),
            delivery_status=Value(SummaryDelivery.Status.PENDING, output_field=meta.get_field("status")),
            delivery_run=Value(run_id, output_field=meta.get_field("run_id")),
            delivery_empty=Value("", output_field=meta.get_field("reason")),
        )
        .filter(delivery_summary__isnull=False)
        .order_by("group_id", "payout_position", "pk")
        .values_list("delivery_summary", "pk", "delivery_status", "delivery_run", "delivery_empty", "delivery_empty")
    )
    select_sql, select_params = source.query.get_compiler(using=alias).as_sql()
    columns = ", ".join(quote(_column(SummaryDelivery, name)) for name in (
        "summary", "membership", "status", "run_id", "claimed_by", "reason",
    ))
    conflict = ", ".join(quote(_column(SummaryDelivery, name)) for name in ("summary", "membership"))
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) {select_sql} ON CONFLICT ({conflict}) DO NOTHING"
    with connection.cursor() as cursor:
        cursor.execute(sql, select_params)
        return max(cursor.rowcount, 0)


@dataclasses.dataclass
class BatchResult:
    """What one delivery batch did (counts only: no address)."""

    #: Deliveries this attempt claimed (0: none left, e.g. a redelivery of a batch that had finished).
    claimed: int = 0
    sent: int = 0
    invalid: int = 0
    refused: int = 0
    unsubscribed: int = 0
    #: True once every claimed delivery is settled (sent, refused, skipped); False: stopped on a transient error.
    finished: bool = False

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def send_delivery_batch(*, run_id: int | None, first_id: int, until_id: int | None, token: str,
                        unsubscribe_url: Callable[[int], str] | None = None) -> BatchResult:
    """Claim, send and record one batch of deliveries (the run's PENDING rows ``first_id <= id < until_id``).

    1. **Claim**: one conditional UPDATE turns the batch's PENDING rows (and
       rows already SENDING under ``token``: this same batch, redelivered or
       retried) into SENDING under ``token``. A row another batch claimed is
       not touched, so two batches never send to the same member.
    2. **Send** over one connection, one message at a time; a recipient the
       server or the backend refuses (SMTP 5xx, refused RCPT, anymail's
       ``AnymailRecipientsRefused``) or an unusable address is settled for
       that member alone.
    3. **Record** in one transaction: SENT rows, FAILED / SKIPPED rows with
       their reason. Also when sending stopped on an error (then the rows not
       yet sent stay SENDING under ``token`` for the retry) — so a retry or a
       redelivery of this batch re-sends at most the messages of the attempt
       that was killed before it could record them.

    Queries: one claim, one load, three lookups, and one to three updates per
    batch, whatever its size.

    Raises:
        SummarySendError: the connection, the server or the sender failed (the batch should be retried).
    """
    result = BatchResult()
    rows = SummaryDelivery.objects.filter(run_id=run_id, id__gte=first_id)
    if until_id is not None:
        rows = rows.filter(id__lt=until_id)
    rows.filter(Q(status=SummaryDelivery.Status.PENDING) | Q(status=SummaryDelivery.Status.SENDING,
                                                              claimed_by=token)).update(
        status=SummaryDelivery.Status.SENDING, claimed_by=token)
    user_model = get_user_model()
    username_field = user_model.USERNAME_FIELD
    email_field = user_model.get_email_field_name()
    claimed: list[SummaryDelivery] = list(
        rows.filter(status=SummaryDelivery.Status.SENDING, claimed_by=token)
        .annotate(opted_out=Exists(_opted_out(OuterRef("membership__user_id"))))
        .select_related("summary__group", "membership__user")
        .only("summary__group", "summary__week_start", "summary__contribution_count", "summary__total_amount",
              "membership__group_id", "membership__payout_position",
              f"membership__user__{username_field}", f"membership__user__{email_field}")
        .order_by("id")
    )
    result.claimed = len(claimed)
    if not claimed:
        result.finished = True
        return result
    by_week: dict[dt.date, list[SummaryDelivery]] = defaultdict(list)
    for row in claimed:
        by_week[row.summary.week_start].append(row)
    outgoing: list[_Outgoing] = []
    skipped: dict[str, list[int]] = defaultdict(list)
    for week_start, week_rows in by_week.items():
        start, end = _bounds_of_week(week_start)
        lookups = _WeekLookups.load(group_ids=sorted({row.summary.group_id for row in week_rows}),
                                    membership_ids=[row.membership_id for row in week_rows], start=start, end=end)
        for row in week_rows:
            member = row.membership
            email = (getattr(member.user, email_field) or "").strip()
            if row.opted_out:  # type: ignore[attr-defined]  # annotated by the claim query above
                skipped[SummaryDelivery.REASON_UNSUBSCRIBED].append(row.pk)
                result.unsubscribed += 1
                continue
            if not _usable_address(email):
                # E.g. "carol.typo@", or a line break in it: Django would raise
                # (with the address in the message) when sending.
                skipped[SummaryDelivery.REASON_INVALID].append(row.pk)
                result.invalid += 1
                continue
            url = unsubscribe_url(member.user_id) if unsubscribe_url is not None else ""
            message = lookups.message(member, row.summary, email=email, week_start=week_start, unsubscribe_url=url)
            outgoing.append(_Outgoing(delivery_id=row.pk, membership_id=member.pk, message=message))
    _send_and_record(outgoing, skipped, result)
    return result


def _column(model: type[Model], name: str) -> str:
    """The database column of ``model``'s concrete field ``name`` (narrowed for the type checker)."""
    field = model._meta.get_field(name)
    if not isinstance(field, Field) or field.column is None:
        raise TypeError(f"{model.__name__}.{name} is not a field with a database column")
    return field.column


def _send_and_record(outgoing: list[_Outgoing], skipped: dict[str, list[int]], result: BatchResult) -> None:
    """Send ``outgoing`` over one connection, then record every settled delivery (see :func:`send_delivery_batch`).

    A message rejected for its recipient alone (:func:`_skipped_recipient`)
    is recorded FAILED (refused) or SKIPPED (invalid) and the others go on;
    any other mail error stops the batch as a :class:`SummarySendError`,
    raised outside the ``except`` block so that the original (whose text can
    hold addresses) is not chained to it.
    """
    sent: list[int] = []
    refused: dict[str, list[int]] = defaultdict(list)
    failure: SummarySendError | None = None
    connection = get_connection(fail_silently=False)
    try:
        if outgoing:
            connection.open()
        for item in outgoing:
            delivery_id = item.delivery_id
            if delivery_id is None:  # every message sent here has its delivery row
                raise ValueError("an outgoing summary without its delivery row")
            try:
                accepted = connection.send_messages([item.message])
            except _MAIL_ERRORS as exc:
                skip = _skipped_recipient(exc)
                if skip is None:
                    raise
                if skip == "invalid":
                    skipped[SummaryDelivery.REASON_INVALID].append(delivery_id)
                    result.invalid += 1
                else:
                    refused[f"refused by the mail server ({_safe_codes(exc) or type(exc).__name__})"].append(
                        delivery_id)
                    result.refused += 1
                continue
            if accepted:
                sent.append(delivery_id)
        result.finished = True
    except _MAIL_ERRORS as exc:
        failure = SummarySendError(
            f"sending weekly summaries failed after {len(sent)} of a batch of {len(outgoing)}: "
            f"{_safe_description(exc)} (the error's text is left out: it can hold email addresses)"
        )
    finally:
        try:
            connection.close()
        except _MAIL_ERRORS as exc:
            failure = failure or SummarySendError(
                f"closing the mail connection failed: {_safe_description(exc)} "
                "(the error's text is left out: it can hold email addresses)"
            )
        finally:
            _record(sent=sent, skipped=skipped, refused=refused)
            result.sent += len(sent)
    if failure is not None:
        result.finished = False
        raise failure


def _record(*, sent: list[int], skipped: dict[str, list[int]], refused: dict[str, list[int]]) -> None:
    """Record settled deliveries in one transaction: one UPDATE for the sent, one per reason for the others."""
    with transaction.atomic(using=router.db_for_write(SummaryDelivery)):
        if sent:
            SummaryDelivery.objects.filter(pk__in=sent).update(
                status=SummaryDelivery.Status.SENT, sent_at=timezone.now(), reason="")
        for reason, ids in skipped.items():
            if ids:
                SummaryDelivery.objects.filter(pk__in=ids).update(status=SummaryDelivery.Status.SKIPPED,
                                                                  reason=reason)
        for reason, ids in refused.items():
            SummaryDelivery.objects.filter(pk__in=ids).update(status=SummaryDelivery.Status.FAILED,
                                                              reason=reason[:100])


def give_up_batch(*, run_id: int | None, first_id: int, until_id: int | None, token: str, why: str) -> int:
    """Record the deliveries still claimed under ``token`` as FAILED ``why`` (retries spent); return how many."""
    rows = SummaryDelivery.objects.filter(run_id=run_id, id__gte=first_id, status=SummaryDelivery.Status.SENDING,
                                          claimed_by=token)
    if until_id is not None:
        rows = rows.filter(id__lt=until_id)
    return rows.update(status=SummaryDelivery.Status.FAILED, reason=why[:100])


def sent_in_batch(*, run_id: int | None, first_id: int, until_id: int | None, token: str) -> int:
    """How many of the batch's deliveries were sent under ``token`` (over all its attempts)."""
    rows = SummaryDelivery.objects.filter(run_id=run_id, id__gte=first_id, status=SummaryDelivery.Status.SENT,
                                          claimed_by=token)
    if until_id is not None:
        rows = rows.filter(id__lt=until_id)
    return rows.count()


@dataclasses.dataclass
class RunOutcome:
    """The deliveries of one run once its batches ended (:func:`summarise_run`).

    ``refused`` recipients were settled by their batch (the mail server said
    no for them alone; the next run tries again); ``not_reached`` ones were
    not tried to the end: their batch gave up after its retries, or never ran.
    """

    sent: int = 0
    refused: int = 0
    invalid: int = 0
    unsubscribed: int = 0
    not_reached: int = 0
    #: ``reason -> count`` of the deliveries not reached.
    why: dict[str, int] = dataclasses.field(default_factory=dict)

    def error(self) -> str:
        """``3 of 12 recipients not reached: 3 not sent: SMTPServerDisconnected ...``; empty when none was missed."""
        if not self.not_reached:
            return ""
        total = self.sent + self.refused + self.not_reached
        reasons = "; ".join(f"{count} {reason}" for reason, count in sorted(self.why.items(), key=lambda kv: -kv[1]))
        return f"{self.not_reached} of {total} recipients not reached: {reasons}"


def summarise_run(run_id: int) -> RunOutcome:
    """Count run ``run_id``'s deliveries by outcome (one aggregate query)."""
    outcome = RunOutcome()
    why: dict[str, int] = defaultdict(int)
    Status = SummaryDelivery.Status
    for row in SummaryDelivery.objects.filter(run_id=run_id).order_by().values("status", "reason").annotate(
            n=Count("pk")):
        status, reason, n = row["status"], row["reason"], row["n"]
        if status == Status.SENT:
            outcome.sent += n
        elif status == Status.SKIPPED:
            if reason == SummaryDelivery.REASON_UNSUBSCRIBED:
                outcome.unsubscribed += n
            else:
                outcome.invalid += n
        elif status == Status.FAILED and reason.startswith("refused"):
            outcome.refused += n
        else:
            outcome.not_reached += n
            why[reason or "never sent: their batch did not finish"] += n
    outcome.why = dict(why)
    return outcome


# --- Opting out ----------------------------------------------------------------


def opt_out_of_summaries(*, user, source: str, actor=None) -> bool:
    """Record that ``user`` wants no more weekly summaries (idempotent); True if this call recorded it.

    Audited as ``SUMMARY_UNSUBSCRIBED`` in the same transaction; a second call
    (a replayed link) changes and audits nothing. ``actor``: who did it (an
    admin user), default the member themselves.
    """
    with transaction.atomic(using=router.db_for_write(SummaryOptOut)):
        _, created = SummaryOptOut.objects.get_or_create(user=user, defaults={"source": source})
        if created:
            create_audit_log(action="SUMMARY_UNSUBSCRIBED", user=actor or user, entity_type="user",
                             entity_id=user.pk, details=f"Opted out of the weekly summaries ({source})",
                             metadata={"source": source})
    return created


def opt_in_to_summaries(*, user, actor=None) -> bool:
    """Remove ``user``'s opt-out (the next run sends to them again), audited; True if removed."""
    with transaction.atomic(using=router.db_for_write(SummaryOptOut)):
        deleted, _ = SummaryOptOut.objects.filter(user=user).delete()
        if deleted:
            create_audit_log(action="SUMMARY_RESUBSCRIBED", user=actor or user, entity_type="user",
                             entity_id=user.pk, details="Opted back in to the weekly summaries")
    return bool(deleted)


# --- Inactive groups ---------------------------------------------------------


def check_inactive_groups(*, days: int | None = None, now: dt.datetime | None = None) -> list[Group]:
    """ACTIVE groups with no CONFIRMED contribution in the last ``days`` days (SPEC §5).

    The window is ``[now - days, now]``: a contribution confirmed exactly
    ``days`` days ago still counts as activity. A group with no confirmed
    contribution in the window is inactive only if it was also activated
    before the window (the clock starts at ``activated_at``), so a group
    activated yesterday is not reported. One query.

    Args:
        days: length of the window in days (>= 1); defaults to ``settings.INACTIVE_GROUP_DAYS``.
        now: aware datetime; defaults to ``timezone.now()``.

    Returns:
        The inactive groups, ordered by id.

    Raises:
        ValueError: ``days`` below 1 or a naive ``now``.
    """
    days = settings.INACTIVE_GROUP_DAYS if days is None else days
    if days < 1:
        raise ValueError(f"days={days!r} is invalid: a number of days >= 1")
    now = now or timezone.now()
    if timezone.is_naive(now):
        raise ValueError("now must be an aware datetime")
    since = now - dt.timedelta(days=days)
    recent = Contribution.objects.filter(
        group=OuterRef("pk"), status=Contribution.Status.CONFIRMED, confirmed_at__gte=since,
    )
    return list(
        Group.objects.filter(status=Group.Status.ACTIVE)
        .filter(Q(activated_at__lt=since) | Q(activated_at__isnull=True))
        .filter(~Exists(recent))
        .order_by("id")
    )
