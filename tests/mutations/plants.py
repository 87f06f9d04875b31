"""The seven bugs of issue 12, as text replacements, and the tests that must catch each.

Each :class:`Plant` names the files and exact texts it changes (``old`` must
occur once in the file) and the pytest node ids that must fail with it. Run
them with ``python -m tests.mutations.run_plants`` (see that module).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Edit:
    """Replace ``old`` (which must occur exactly once) by ``new`` in ``path`` (relative to the project root)."""

    path: str
    old: str
    new: str


@dataclasses.dataclass(frozen=True)
class Plant:
    """A planted bug: ``edits`` to apply and ``tests`` (pytest node ids) that must fail with it."""

    name: str
    description: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]


PLANTS: list[Plant] = [
    Plant(
        name="owner-only-release",
        description="JobTask.after_return releases the job lock without comparing the token",
        edits=(Edit(
            "scheduler_app/task.py",
            "            return\n        self.once_backend.clear_lock(self.spec.lock_key, token=task_id)",
            "            return\n        self.once_backend.clear_lock(self.spec.lock_key)",
        ),),
        tests=("tests/scheduler/test_worker_runs.py",),
    ),
    Plant(
        name="retry-jitter",
        description="retries with jitter: JobTask.retry_jitter = True",
        edits=(Edit("scheduler_app/task.py", "    retry_jitter = False\n", "    retry_jitter = True\n"),),
        tests=("tests/scheduler/test_worker_runs.py",),
    ),
    Plant(
        name="no-duplicate-guard",
        description="no worker-side duplicate check and no (job, scheduled_for) unique constraint",
        edits=(
            Edit("scheduler_app/task.py",
                 "        if JobRun.objects.is_known_duplicate(",
                 "        if False and JobRun.objects.is_known_duplicate("),
            Edit("scheduler_app/models.py",
                 "        constraints = [\n            models.UniqueConstraint(",
                 "        constraints = [] and [\n            models.UniqueConstraint("),
            Edit("scheduler_app/migrations/0001_initial.py",
                 "'constraints': [models.UniqueConstraint(",
                 "'constraints': [] and [models.UniqueConstraint("),
        ),
        tests=("tests/scheduler/test_exactly_once.py",),
    ),
]
