# tenantctl: one image for the control-DB migration job, the Celery workers and beat.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY workers ./workers
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --create-home tenantctl
USER tenantctl
# Mount or bake your tenants' Alembic project and point TENANTCTL_ALEMBIC_CONFIG at its alembic.ini.
ENV TENANTCTL_ALEMBIC_CONFIG=/app/migrations/alembic.ini
ENTRYPOINT ["tenantctl"]
CMD ["--help"]
