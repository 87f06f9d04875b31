# Two commands on a fresh machine with Python 3.11 and make:
#   make run    install into .venv, migrate, load demo data, start Redis (if
#               needed), a worker, beat and the admin on 127.0.0.1:$(PORT)
#   make test   install into .venv and run the whole test suite
#
# Other targets: venv (install only), bench (benchmarks), soak (ten 1-second
# jobs on 2 workers and 2 beats for SOAK_SECONDS, default 600), lint (ruff,
# mypy, import contracts), clean.
# Pass extra pytest arguments with PYTEST_ARGS="-k archive -x", benchmark
# arguments with BENCH_ARGS="--quick --json out.json", soak arguments with
# SOAK_ARGS="--seconds 90 --json out.json".

# python3.11 when it exists, otherwise python3 (checked to be >= 3.11 below).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
# Touched after a successful install; newer requirements make it stale, so
# `make venv` reinstalls only when a requirements file changed.
STAMP := $(VENV)/.requirements-installed

PYTEST_ARGS ?=
BENCH_ARGS ?=
SOAK_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv run test bench soak lint clean

help:
	@echo "make run    start Redis (if needed), worker, beat and admin on 127.0.0.1:\$${PORT:-8000}"
	@echo "make test   run the test suite (PYTEST_ARGS=... to pass arguments to pytest)"
	@echo "make bench  run the benchmarks (BENCH_ARGS=... to pass arguments)"
	@echo "make soak   10 jobs every 1 s on 2 workers and 2 beats for SOAK_SECONDS (600), one of each restarted"
	@echo "            midway; exits 1 on a missed or doubled scheduled time (SOAK_ARGS=... to pass arguments)"
	@echo "make lint   ruff, mypy and the import contracts of pyproject.toml"
	@echo "make venv   create .venv and install requirements-dev.txt"
	@echo "make clean  remove .venv, .run and caches (keeps db.sqlite3)"

venv: $(STAMP)

$(VENV_PYTHON):
	@if [ -z "$(PYTHON)" ]; then echo "error: neither python3.11 nor python3 is on PATH" >&2; exit 1; fi
	@"$(PYTHON)" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
	    { echo "error: $(PYTHON) is Python `"$(PYTHON)" -c 'import platform; print(platform.python_version())'`; Python 3.11 or newer is needed" >&2; exit 1; }
	"$(PYTHON)" -m venv $(VENV)

$(STAMP): requirements.txt requirements-dev.txt | $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install --quiet -r requirements-dev.txt
	@touch $@

# The settings refuse DEBUG off without a secret key. For local development
# `make run` writes `.env` once (DJANGO_DEBUG=true and a generated key); the
# settings read it in every shell, so `manage.py` works there too. While the
# launcher runs an embedded Redis it adds that Redis's REDIS_URL to `.env` in a
# marked block (devtools/launcher.py), so other shells find it as well.
.env:
	@$(VENV_PYTHON) -c 'import secrets; print("# Written by make run for local development only.\nDJANGO_DEBUG=true\nDJANGO_SECRET_KEY=" + secrets.token_urlsafe(50) + "\n# Summary emails are written as files under .run/emails/ instead of flooding the terminal.\nEMAIL_BACKEND=django.core.mail.backends.filebased.EmailBackend")' > $@
	@echo "Wrote .env (DJANGO_DEBUG=true, a generated DJANGO_SECRET_KEY, emails to .run/emails/) for local development"

run: venv .env
	$(VENV_PYTHON) -m devtools.launcher

test: venv
	$(VENV_PYTHON) -m pytest $(PYTEST_ARGS)

bench: venv
	$(VENV_PYTHON) -m bench $(BENCH_ARGS)

# Not part of `make test`: it runs for SOAK_SECONDS (default 600; the
# variable is read by bench/soak.py, also from make's command line).
soak: venv
	$(VENV_PYTHON) -m bench.soak $(if $(SOAK_SECONDS),--seconds $(SOAK_SECONDS)) $(SOAK_ARGS)

# The one-way dependency rule between the apps (README, Architecture).
lint: venv
	$(VENV)/bin/ruff check .
	DJANGO_DEBUG=true $(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .run .pytest_cache staticfiles
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
