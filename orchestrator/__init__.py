"""tenantctl: roll Alembic migrations across many tenant databases, and record where each one stands."""

from __future__ import annotations

__version__ = "0.1.0"
