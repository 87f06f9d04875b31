"""What the dispatch benchmark runs (``EXTRA_JOB_MODULES=bench.tasks``).

* ``bench-noop``: a job that does nothing, through the whole engine (lock,
  run history, retries);
* ``bench.tasks.plain_noop``: a plain Celery task with no lock, no run
  history, no retries: what ``@app.task`` gives for free.

The bench keeps its own job rather than borrowing one of the tests' jobs:
``bench`` never imports ``tests`` (checked by ``lint-imports``).
"""

from __future__ import annotations

from config.celery import app
from scheduler_app.jobs import JobContext, job


# The crontab never matters: the bench's database has no schedules (no
# sync_schedules runs there) and the bench triggers the job itself.
@job("bench-noop", crontab="0 0 1 1 *", lock_ttl=30)
def noop_job(ctx: JobContext) -> int:
    """Does nothing; one item, like the plain task's 1."""
    return 1


@app.task(name="bench.tasks.plain_noop")
def plain_noop() -> int:
    """Does nothing; returns 1 like the no-op job's one item."""
    return 1
