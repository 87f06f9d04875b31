"""The plain Celery task the dispatch benchmark compares jobs with (``EXTRA_JOB_MODULES=bench.tasks``).

No lock, no run history, no retries: what ``@app.task`` gives for free.
"""

from __future__ import annotations

from config.celery import app


@app.task(name="bench.tasks.plain_noop")
def plain_noop() -> int:
    """Does nothing; returns 1 like the no-op job's one item."""
    return 1
