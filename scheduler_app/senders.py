"""Who sends a run: recorded as ``JobRun.worker`` of a run refused at send time (issue 9).

A trigger refused because the lock is held is recorded by the *sender*
(beat, ``run_job``, the admin), not by a worker; its row names the sender
truthfully: ``beat (host:pid)``, ``run_job (host:pid)``, ``admin user alice
(host:pid)``. The sender says who it is with :func:`sending_as`; a beat
trigger is ``beat`` without it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from scheduler_app.context import worker_name

_sender: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_sender", default=None)


@contextlib.contextmanager
def sending_as(name: str) -> Iterator[None]:
    """Runs sent inside the block are sent by ``name`` (e.g. ``"run_job"``, ``"admin user alice"``)."""
    token = _sender.set(name)
    try:
        yield
    finally:
        _sender.reset(token)


def sender_description(trigger: str) -> str:
    """``<who> (<host>:<pid>)`` of the process sending now; ``beat`` for a beat trigger, ``sender`` when unnamed."""
    who = _sender.get() or ("beat" if trigger == "beat" else "sender")
    return f"{who} ({worker_name()})"[:255]
