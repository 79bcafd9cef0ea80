"""``celery -A workers.main worker``: the app built from the environment (an entry point, like the CLI)."""

from __future__ import annotations

from orchestrator.settings import Settings

from .app import make_app

app = make_app(Settings())
