"""tenantctl serve: the HTTP API, the dashboard and /metrics, thin adapters over the same verbs as the CLI."""

from __future__ import annotations
