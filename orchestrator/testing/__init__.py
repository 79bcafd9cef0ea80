"""Test databases at head for users' test suites: the machinery behind tenantctl's pytest plugin
(``orchestrator/pytest_plugin.py``, registered through the ``pytest11`` entry point).

``spec`` (pure: settings, the marker, names, the :class:`Tenant` record), ``errors``, ``server`` (the
PostgreSQL server: create, clone, drop, sweep), ``migrate`` (the user's history run in-process, as
tenantctl runs it), ``databases`` (templates once per session, clones per test). Only ``spec`` and
``errors`` are imported while pytest starts; the rest, with SQLAlchemy and Alembic, when a test first
asks for a tenantctl fixture.
"""

from __future__ import annotations

from .spec import Layout, Tenant

__all__ = ["Layout", "Tenant"]
