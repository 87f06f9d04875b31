#!/bin/sh
# Web container: migrate, create the job schedules, then serve the admin.
# Runs migrations here so worker and beat (which wait for web to be healthy)
# find the tables. `exec` makes the server PID 1, so `docker stop` reaches it.
set -eu
python manage.py migrate --noinput
python manage.py sync_schedules
case "$(echo "${DJANGO_DEBUG:-false}" | tr '[:upper:]' '[:lower:]')" in
    1|true|yes|on)
        # Debug: runserver also serves the admin's static files.
        exec python manage.py runserver "0.0.0.0:${PORT:-8000}" --noreload ;;
    *)
        # Production: gunicorn; WhiteNoise serves STATIC_ROOT, which
        # `manage.py collectstatic` fills.
        python manage.py collectstatic --noinput >/dev/null
        exec gunicorn config.wsgi:application \
            --bind "0.0.0.0:${PORT:-8000}" \
            --workers "${WEB_CONCURRENCY:-2}" \
            --access-logfile - ;;
esac
