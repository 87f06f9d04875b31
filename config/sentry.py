"""Sentry set-up with sentry-sdk's own Django, Celery and logging integrations."""

from __future__ import annotations

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration
from sentry_sdk.integrations.logging import LoggingIntegration


def init_sentry(*, dsn: str, environment: str, traces_sample_rate: float) -> None:
    """Initialise sentry-sdk once per process.

    Args:
        dsn: the project's DSN (``SENTRY_DSN``).
        environment: ``SENTRY_ENVIRONMENT``.
        traces_sample_rate: 0.0-1.0 share of transactions traced.

    Failed jobs reach Sentry through the Celery integration, which reports the
    exception of a task's final attempt and ignores the ``Retry`` of earlier
    attempts (SPEC §3: once per failed run). Log records become breadcrumbs
    only (``event_level=None``) so the scheduler's own failure line does not
    send a second event. ``send_default_pii=False`` and no frame locals keep
    emails and other personal data out of events.

    Raises:
        ValueError: the DSN is malformed (the settings turn it into a one-line error).
    """
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        traces_sample_rate=traces_sample_rate,
        send_default_pii=False,
        # Stack-frame locals would carry recipients and message bodies
        # (smtplib's to_addrs, msg) to Sentry: personal data stays here.
        include_local_variables=False,
        max_request_body_size="never",
        integrations=[
            DjangoIntegration(),
            CeleryIntegration(monitor_beat_tasks=False),
            LoggingIntegration(event_level=None),
        ],
    )
