"""The test suite; layout mirrors the apps (tests/audit/, tests/groups/, ...)."""

import os

# Test-only jobs (tests/jobs.py) are registered in this process and in every
# worker and beat the integration tests start (they inherit the environment).
os.environ.setdefault("EXTRA_JOB_MODULES", "tests.jobs")
