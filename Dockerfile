# tenantctl: one image for the control-DB migration job, the Celery workers and beat.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY workers ./workers
COPY migrations ./migrations
# A fixed, numeric non-root user: Kubernetes' runAsNonRoot can only check a numeric USER, and
# deploy/kubernetes/ runs the pods as this uid and gid.
RUN pip install --no-cache-dir . && groupadd --gid 10001 tenantctl \
    && useradd --create-home --uid 10001 --gid 10001 tenantctl
USER 10001:10001
# Mount or bake your tenants' Alembic project and point TENANTCTL_ALEMBIC_CONFIG at its alembic.ini.
ENV TENANTCTL_ALEMBIC_CONFIG=/app/migrations/alembic.ini
ENTRYPOINT ["tenantctl"]
CMD ["--help"]
