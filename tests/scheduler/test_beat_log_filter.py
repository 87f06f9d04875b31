"""Beat during a Redis outage: one line per problem per minute, not a traceback per firing (issue 11 item 4)."""

from __future__ import annotations

import logging
import logging.config

import pytest
from django.conf import settings

from config.logfilters import RateLimitFilter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter("%(levelname)s [%(name)s] %(message)s").format(record))


@pytest.fixture
def beat_log():
    clock = Clock()
    logger = logging.getLogger("test.celery.beat")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = Collect()
    logger.addHandler(handler)
    logger.addFilter(RateLimitFilter(seconds=60, clock=clock))
    yield logger, handler.lines, clock
    logger.handlers.clear()
    logger.filters.clear()


def message_error(logger: logging.Logger, exc: Exception) -> None:
    """What celery.beat.Scheduler.apply_entry logs when sending fails."""
    try:
        raise exc
    except Exception as raised:
        logger.error("Message Error: %s\n%s", raised, ["  File beat.py, line 290\n"] * 3, exc_info=True)


def test_one_line_per_problem_per_minute_with_a_count_of_the_rest(beat_log):
    logger, lines, clock = beat_log
    refused = ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    # when: 3 schedules fire every second for 25 s (75 failures), then once more after the minute
    for second in range(25):
        clock.now = 1000.0 + second
        for _ in range(3):
            message_error(logger, refused)
    clock.now = 1000.0 + 60
    message_error(logger, refused)

    # then: the first failure and the one a minute later, one line each, without a traceback
    assert lines == [
        "ERROR [test.celery.beat] Message Error: Error 111 connecting to 127.0.0.1:6379. Connection refused.",
        "ERROR [test.celery.beat] Message Error: Error 111 connecting to 127.0.0.1:6379. Connection refused. "
        "(74 similar lines suppressed in the last 60s)",
    ]


def test_a_different_problem_is_reported_at_once(beat_log):
    logger, lines, clock = beat_log

    message_error(logger, ConnectionError("Connection refused"))
    message_error(logger, TimeoutError("Timeout reading from socket"))
    logger.warning("Beat: %s", "other template")
    message_error(logger, ConnectionError("Connection refused"))

    assert lines == [
        "ERROR [test.celery.beat] Message Error: Connection refused",
        "ERROR [test.celery.beat] Message Error: Timeout reading from socket",
        "WARNING [test.celery.beat] Beat: other template",
    ]


def test_info_lines_pass_untouched(beat_log):
    logger, lines, clock = beat_log

    for _ in range(3):
        logger.info("Scheduler: Sending due task %s (%s)", "archive-audit-logs", "audit.tasks.archive")

    assert len(lines) == 3


def test_the_filter_is_installed_on_the_celery_beat_logger():
    logging.config.dictConfig(settings.LOGGING)

    filters = logging.getLogger("celery.beat").filters

    # (Django and Celery each apply LOGGING: a second filter lets through what the first did)
    assert filters and {type(f) for f in filters} == {RateLimitFilter}
    first = filters[0]
    assert isinstance(first, RateLimitFilter) and first.seconds == 60


def test_a_second_filter_on_the_same_logger_changes_nothing(beat_log):
    logger, lines, clock = beat_log
    logger.addFilter(RateLimitFilter(seconds=60, clock=clock))

    for second in (0, 1, 61):
        clock.now = 1000.0 + second
        message_error(logger, ConnectionError("Connection refused"))

    assert lines == ["ERROR [test.celery.beat] Message Error: Connection refused",
                     "ERROR [test.celery.beat] Message Error: Connection refused "
                     "(1 similar line suppressed in the last 60s)"]
