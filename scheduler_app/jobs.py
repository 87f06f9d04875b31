"""The job API for the domain apps: ``from scheduler_app.jobs import JobContext, job``.

A job is one thin function over one service, registered with :func:`job`
(:mod:`scheduler_app.registry`); it runs on :class:`JobTask`
(:mod:`scheduler_app.task`) and gets a :class:`JobContext`
(:mod:`scheduler_app.context`). This module only gathers those names so
that a domain app imports one place.
"""

from __future__ import annotations

from scheduler_app.context import MAX_ATTEMPTS, JobContext, iso, make_task_id
from scheduler_app.registry import REGISTRY, JobSpec, get_spec, job, load_registry
from scheduler_app.task import JobTask

__all__ = ["MAX_ATTEMPTS", "REGISTRY", "JobContext", "JobSpec", "JobTask", "get_spec", "iso", "job", "load_registry",
           "make_task_id"]
