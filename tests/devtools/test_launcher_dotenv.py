"""The launcher's route to an embedded Redis for other shells: a marked REDIS_URL block in `.env` (SPEC §1)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import launcher

ROOT = Path(__file__).resolve().parents[2]

DEVELOPER_ENV = "# Written by make run\nDJANGO_DEBUG=true\nDJANGO_SECRET_KEY=abc\n"


@pytest.fixture
def dotenv(tmp_path, monkeypatch):
    """``launcher.DOTENV`` (and its scratch directory) in a temporary directory instead of the checkout."""
    monkeypatch.setattr(launcher, "DOTENV", tmp_path / ".env")
    monkeypatch.setattr(launcher, "RUN_DIR", tmp_path / ".run")
    return tmp_path / ".env"


def test_the_block_is_added_rewritten_and_removed_leaving_the_rest_as_it_was(dotenv):
    # given: the developer's .env, private
    dotenv.write_text(DEVELOPER_ENV)
    dotenv.chmod(0o600)

    # when: two starts
    launcher.write_dotenv_redis_url("redis://127.0.0.1:40001/0")
    launcher.write_dotenv_redis_url("redis://127.0.0.1:40002/0")

    # then: one block, with the last URL, after the developer's lines; the mode is kept
    text = dotenv.read_text()
    assert text == (DEVELOPER_ENV + launcher.DOTENV_BLOCK_BEGIN + "\nREDIS_URL=redis://127.0.0.1:40002/0\n"
                    + launcher.DOTENV_BLOCK_END + "\n")
    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600
    assert launcher.dotenv_values() == {"DJANGO_DEBUG": "true", "DJANGO_SECRET_KEY": "abc"}

    # when: the launcher stops
    assert launcher.remove_dotenv_redis_url() is True

    # then
    assert dotenv.read_text() == DEVELOPER_ENV
    assert launcher.remove_dotenv_redis_url() is False


def test_a_dotenv_the_launcher_created_goes_away_with_its_block(dotenv):
    launcher.write_dotenv_redis_url("redis://127.0.0.1:40001/0")
    assert dotenv.exists()
    launcher.remove_dotenv_redis_url()
    assert not dotenv.exists()


def test_a_redis_named_in_the_environment_or_in_dotenv_is_not_replaced_by_an_embedded_one(dotenv, monkeypatch):
    for var in launcher.REDIS_NAMING_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    # the launcher's own block names nothing: it is about to be replaced
    launcher.write_dotenv_redis_url("redis://127.0.0.1:40001/0")
    assert launcher.DevLauncher.redis_named_by() is None

    dotenv.write_text("REDIS_HOST=cache.internal\n")
    assert launcher.DevLauncher.redis_named_by() == "REDIS_HOST in .env"

    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6379/0")
    assert launcher.DevLauncher.redis_named_by() == "REDIS_URL"


@pytest.mark.parametrize(("environment", "expected"), [
    ({}, "redis://127.0.0.1:40001/0"),  # manage.py in another shell finds the embedded Redis
    ({"REDIS_PORT": "6380"}, "redis://localhost:6380/0"),  # a Redis named in the environment wins as a whole
    ({"REDIS_URL": "redis://cache:6379/1"}, "redis://cache:6379/1"),
])
def test_the_settings_read_the_block_unless_the_environment_names_a_redis(tmp_path, environment, expected):
    # given: the settings in a checkout whose .env has the launcher's block
    shutil.copytree(ROOT / "config", tmp_path / "config")
    # (and the Django-free module the settings read REDIS_URL with)
    (tmp_path / "scheduler_app").mkdir()
    for module in ("__init__.py", "redis_urls.py"):
        shutil.copy(ROOT / "scheduler_app" / module, tmp_path / "scheduler_app" / module)
    (tmp_path / ".env").write_text("DJANGO_DEBUG=true\n" + launcher.DOTENV_BLOCK_BEGIN
                                   + "\nREDIS_URL=redis://127.0.0.1:40001/0\n" + launcher.DOTENV_BLOCK_END + "\n")
    # (not EXTRA_JOB_MODULES either: the settings check that its modules exist, and only config/ is copied)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DJANGO_", "EXTRA_JOB_MODULES"))}
    env.update(environment, PYTHONPATH=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings")

    # when
    done = subprocess.run([sys.executable, "-c", "import config.settings as s; print(s.REDIS_URL)"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    # then
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected
