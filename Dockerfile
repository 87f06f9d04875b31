# One image for every Django process: web, worker and beat (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so code changes don't reinstall them (gunicorn, which
# serves the admin in production, is pinned in requirements.txt).
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .
RUN chmod +x docker/start-*.sh \
    && useradd --system --no-create-home --home-dir /app app \
    && chown app /app
# Unprivileged, as Celery asks of its workers.
USER app

EXPOSE 8000
CMD ["./docker/start-web.sh"]
