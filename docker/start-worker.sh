#!/bin/sh
# Worker container; scale with `docker compose up --scale worker=N`.
set -eu
exec celery -A config worker --loglevel=INFO --concurrency="${CELERY_CONCURRENCY:-2}"
