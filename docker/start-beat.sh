#!/bin/sh
# Beat container: django-celery-beat's tables hold the schedules (`-S django`).
# Several beats are safe: each scheduled time runs once (SPEC §1, §3).
set -eu
exec celery -A config beat -S django --loglevel=INFO
