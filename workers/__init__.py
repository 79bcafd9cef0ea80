"""tenantctl's Celery side: the app, the tasks (thin adapters over ``orchestrator``) and the executor
that dispatches a rollout to them."""
