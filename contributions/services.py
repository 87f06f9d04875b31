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
from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import Decimal

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
    IntegerField,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    prefetch_related_objects,
)
from django.db.models.functions import Coalesce
from django.template.loader import get_template
from django.utils import timezone

from contributions.models import Contribution, SummaryDelivery, WeeklySummary
from groups.models import Group, Membership, Round

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
    columns = ", ".join(quote(meta.get_field(name).column) for name in (
        "group", "week_start", "contribution_count", "total_amount", "created_at",
    ))
    conflict = ", ".join(quote(meta.get_field(name).column) for name in ("group", "week_start"))
    # The SELECT has a WHERE clause, which SQLite needs to parse ON CONFLICT after it.
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) {select_sql} ON CONFLICT ({conflict}) DO NOTHING"
    with connection.cursor() as cursor:
        cursor.execute(sql, select_params)
        return max(cursor.rowcount, 0)


@dataclasses.dataclass
class _Outgoing:
    """One summary email ready to send, and what to record once it is sent."""

    summary_id: int | None
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
_MAIL_ERRORS = (ValueError, smtplib.SMTPException, OSError)

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


def _skipped_recipient(exc: BaseException) -> str | None:
    """Why this exception means "skip this message's recipient, send the rest": ``"invalid"``, ``"refused"`` or None.

    Each message has one recipient, so an error about its address or an
    SMTP 5xx answer to it concerns that member alone. None (the error is
    the server's, the connection's or the sender's) stops the batch.
    """
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
) -> int:
    """Email each active member of each summary's group their weekly summary (SPEC §5).

    Every active member (``left_at`` null) with an email address gets one
    email, plain text and HTML, with: the group's totals for the week (count,
    sum, currency), their own CONFIRMED contributions that week, the current
    round (the lowest-numbered OPEN round) and its recipient's username, and
    what they still owe in it (``contribution_amount`` minus their CONFIRMED
    amount in that round, never below 0). Members without a usable email
    are skipped and counted: no address, an address that is not valid
    (``validate_email``, or a line break in it), or one the email backend
    rejects when sending. A recipient the mail server refuses (a refused
    RCPT, a 5xx answer to the message) is skipped and counted too. None of
    them stops the others, and none is recorded, so the next run tries them
    again. Members already recorded in ``SummaryDelivery`` for the week get
    nothing: see the module docstring for the delivery guarantee.

    Emails go in batches of ``batch_size``, one mail connection per batch;
    after each batch its deliveries are recorded in one transaction. Queries:
    four per :data:`GROUPS_PER_CHUNK` summaries (members, their week's
    contributions, current rounds, amounts paid) plus one INSERT per batch;
    never one per member. No email address reaches the logs or the
    exceptions raised.

    Args:
        summaries: from :func:`generate_weekly_summaries`; may span several weeks.
        dry_run: count the emails that would be sent; send and record nothing.
        batch_size: emails per connection and per recorded batch (>= 1);
            defaults to ``settings.SUMMARY_EMAIL_BATCH_SIZE``.

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
        result = _send_week(week_start, by_week[week_start], dry_run=dry_run, batch_size=batch_size)
        total_sent += result.sent
        invalid = f", {result.invalid_email} of them with an invalid address" if result.invalid_email else ""
        refused = f"; {result.refused} refused by the mail server" if result.refused else ""
        # Counts only: no address, no name, no id of who was skipped.
        logger.info(
            "%s %d contribution summaries for week %s (%d members without a usable email skipped%s%s)",
            "Dry run: would send" if dry_run else "Sent",
            result.sent, week_start, result.without_email + result.invalid_email, invalid, refused,
        )
    return total_sent


def _send_week(week_start: dt.date, summaries: list[WeeklySummary], *, dry_run: bool,
               batch_size: int) -> _WeekResult:
    start, end = _bounds_of_week(week_start)
    result = _WeekResult()
    for offset in range(0, len(summaries), GROUPS_PER_CHUNK):
        chunk = summaries[offset:offset + GROUPS_PER_CHUNK]
        outgoing = _prepare_chunk(chunk, week_start=week_start, start=start, end=end, result=result)
        if dry_run:
            result.sent += len(outgoing)
            continue
        for first in range(0, len(outgoing), batch_size):
            _send_batch(outgoing[first:first + batch_size], result)
    return result


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount:.2f} {currency}"


def _prepare_chunk(summaries: Sequence[WeeklySummary], *, week_start: dt.date, start: dt.datetime,
                   end: dt.datetime, result: _WeekResult) -> list[_Outgoing]:
    """Load what the chunk's emails need in four queries and render them.

    Counts members without an email into ``result.without_email`` and those
    whose address is not usable (:func:`_usable_address`) into
    ``result.invalid_email``; neither gets a message.
    """
    # Summaries straight from generate_weekly_summaries have their group
    # loaded; others get theirs in one query instead of one each.
    prefetch_related_objects(list(summaries), "group")
    by_group = {summary.group_id: summary for summary in summaries}
    group_ids = list(by_group)

    user_model = get_user_model()
    username_field = user_model.USERNAME_FIELD
    email_field = user_model.get_email_field_name()
    already_sent = SummaryDelivery.objects.filter(membership=OuterRef("pk"), summary__week_start=week_start)
    members = list(
        Membership.objects.filter(group_id__in=group_ids, left_at__isnull=True)
        .filter(~Exists(already_sent))
        .select_related("user")
        # Only what the email needs: no password hashes in memory.
        .only("group_id", "payout_position", f"user__{username_field}", f"user__{email_field}")
        .order_by("group_id", "payout_position", "pk")
    )
    own: dict[int, list[dict]] = defaultdict(list)
    for row in (
        Contribution.objects.filter(
            group_id__in=group_ids, status=Contribution.Status.CONFIRMED, confirmed_at__gte=start, confirmed_at__lt=end,
        )
        .order_by("confirmed_at", "pk")
        .values("membership_id", "amount", "confirmed_at", "round__number")
    ):
        own[row["membership_id"]].append(row)

    # The current round is the lowest-numbered OPEN one: no OPEN round of the
    # same group has a smaller number.
    lower_open = Round.objects.filter(group=OuterRef("group"), status=Round.Status.OPEN, number__lt=OuterRef("number"))
    current_rounds = {
        rnd.group_id: rnd
        for rnd in Round.objects.filter(group_id__in=group_ids, status=Round.Status.OPEN)
        .filter(~Exists(lower_open))
        .select_related("recipient__user")
        .only("group_id", "number", "due_date", "recipient__user__" + username_field)
    }
    paid: dict[tuple[int, int], Decimal] = {
        (row["round_id"], row["membership_id"]): row["paid"]
        for row in Contribution.objects.filter(
            round_id__in=[rnd.pk for rnd in current_rounds.values()], status=Contribution.Status.CONFIRMED,
        )
        .order_by()
        .values("round_id", "membership_id")
        .annotate(paid=Sum("amount"))
    }

    subject_template = get_template(TEMPLATE_SUBJECT)
    text_template = get_template(TEMPLATE_TEXT)
    html_template = get_template(TEMPLATE_HTML)
    zone = timezone.get_default_timezone()
    outgoing: list[_Outgoing] = []
    for member in members:
        email = (getattr(member.user, email_field) or "").strip()
        if not email:
            result.without_email += 1
            continue
        if not _usable_address(email):
            # E.g. "carol.typo@", or a line break in it: Django would raise
            # (with the address in the message) when sending.
            result.invalid_email += 1
            continue
        summary = by_group[member.group_id]
        group = summary.group
        current = current_rounds.get(member.group_id)
        owed = None
        if current is not None:
            owed = max(group.contribution_amount - paid.get((current.pk, member.pk), ZERO), ZERO)
        contributions = [
            {
                "amount": _money(row["amount"], group.currency),
                "confirmed_at": timezone.localtime(row["confirmed_at"], zone),
                "round_number": row["round__number"],
            }
            for row in own.get(member.pk, [])
        ]
        own_total = sum((row["amount"] for row in own.get(member.pk, [])), ZERO)
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
        }
        message = EmailMultiAlternatives(
            subject=" ".join(subject_template.render(context).split()),
            body=text_template.render(context),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[email],
        )
        message.attach_alternative(html_template.render(context), "text/html")
        outgoing.append(_Outgoing(summary_id=summary.pk, membership_id=member.pk, message=message))
    return outgoing


def _send_batch(batch: list[_Outgoing], result: _WeekResult) -> None:
    """Send ``batch`` over one connection, then record what was sent; count into ``result``.

    Messages go one ``send_messages`` call each on the open connection, so
    that when the backend raises, exactly the messages before it are known to
    be sent; they are recorded (``finally``) before the exception propagates.
    A message rejected for its recipient alone (:func:`_skipped_recipient`)
    is counted and skipped; any other mail error stops the batch as a
    :class:`SummarySendError`, raised outside the ``except`` block so that
    the original (whose text can hold addresses) is not chained to it.

    Raises:
        SummarySendError: the connection, the server or the sender failed.
    """
    sent: list[_Outgoing] = []
    failure: SummarySendError | None = None
    connection = get_connection(fail_silently=False)
    try:
        connection.open()
        for item in batch:
            try:
                accepted = connection.send_messages([item.message])
            except _MAIL_ERRORS as exc:
                skipped = _skipped_recipient(exc)
                if skipped is None:
                    raise
                if skipped == "invalid":
                    result.invalid_email += 1
                else:
                    result.refused += 1
                continue
            if accepted:
                sent.append(item)
    except _MAIL_ERRORS as exc:
        failure = SummarySendError(
            f"sending weekly summaries failed after {len(sent)} of a batch of {len(batch)}: "
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
            _record_deliveries(sent)
            result.sent += len(sent)
    if failure is not None:
        raise failure


def _record_deliveries(sent: list[_Outgoing]) -> None:
    """Record sent emails in one transaction; a row that exists already (a concurrent run) is kept."""
    if not sent:
        return
    now = timezone.now()
    with transaction.atomic(using=router.db_for_write(SummaryDelivery)):
        SummaryDelivery.objects.bulk_create(
            [
                SummaryDelivery(summary_id=item.summary_id, membership_id=item.membership_id, sent_at=now)
                for item in sent
            ],
            ignore_conflicts=True,
        )


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
