"""seed_demo_data refuses bad counts with exit 2 naming the value, before touching the database (issue 11)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from contributions.management.commands.seed_demo_data import MAX_AUDIT_LOGS
from tests.processes import ROOT

# (arguments, what the one error line says)
BAD_ARGUMENTS = [
    (["--groups", "-1"], "--groups -1 is invalid: a number of groups, 0 or more"),
    (["--audit-logs", "-5"], "--audit-logs -5 is invalid: a number from 0 to 10,000,000"),
    (["--audit-logs", "10000001"], "--audit-logs 10000001 is invalid: a number from 0 to 10,000,000"),
]


@pytest.mark.parametrize(("arguments", "message"), BAD_ARGUMENTS)
def test_a_bad_count_is_a_usage_error_naming_the_value(arguments, message, tmp_path):
    # (a database file that does not exist yet: nothing may be created in it)
    database = tmp_path / "untouched.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}"}

    done = subprocess.run([sys.executable, "manage.py", "seed_demo_data", *arguments], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 2
    assert done.stderr.strip() == f"CommandError: {message}"
    assert not database.exists() or database.stat().st_size == 0


def test_the_upper_bound_is_documented_in_the_help():
    done = subprocess.run([sys.executable, "manage.py", "seed_demo_data", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)

    assert MAX_AUDIT_LOGS == 10_000_000
    assert "0 to 10,000,000" in " ".join(done.stdout.split())
