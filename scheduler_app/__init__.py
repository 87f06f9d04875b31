"""Everything common to all jobs: registry, base task, locks, run history, commands.

The domain apps register their jobs with :func:`scheduler_app.jobs.job`;
this app never imports a domain app. Ad-hoc code can use the lock API
(SPEC §6) from :mod:`scheduler_app.lock_api`: ``acquire_lock``, ``release_lock``,
``with_lock`` and the ``lock`` context manager.
"""
