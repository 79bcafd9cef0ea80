"""The store translates control-DB constraint violations into tenantctl errors, by constraint name, on
PostgreSQL and on SQLite alike: no user sees a SQLAlchemy traceback from a race."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from orchestrator.controldb.runs import ATTEMPT_UNIQUE
from orchestrator.controldb.schema import tenant_runs
from orchestrator.controldb.store import Store
from orchestrator.exceptions import (
    ConcurrentRegistryChange,
    ConstraintViolation,
    DuplicateTenant,
)
from orchestrator.models import Command, RunStatus, Tenant
from orchestrator.planning import Plan

T = TypeVar("T")


@pytest.fixture(params=["postgresql", "sqlite"])
def store_url(request: pytest.FixtureRequest, control_url: str, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'control.db'}"

        async def migrate() -> None:
            async with Store(url) as store:
                await store.migrate()

        asyncio.run(migrate())
        return url
    return control_url


def _with(url: str, fn: Callable[[Store], Awaitable[T]]) -> T:
    async def main() -> T:
        async with Store(url) as store:
            return await fn(store)

    return asyncio.run(main())


async def _rollout(store: Store, tenants: list[str]) -> int:
    return await store.create_rollout(
        command=Command.UPGRADE,
        target="head",
        selection={},
        created_by="tests",
        parallel=2,
        plan=Plan(queued=[(t, None) for t in tenants]),
        hosts={},
    )


def test_constraint_names_become_our_errors(store_url: str) -> None:
    async def go(store: Store) -> None:
        await store.add_tenant(Tenant(id="t0", url="postgresql://h/db"))
        with pytest.raises(DuplicateTenant):
            await store.add_tenant(Tenant(id="t0", url="postgresql://h/db"))
        with pytest.raises(ConcurrentRegistryChange):
            await store.write_tenants([Tenant(id="t0", url="postgresql://h/db")], [])

        first = await _rollout(store, ["t0", "t1"])
        with pytest.raises(ConstraintViolation) as caught:  # a second active run of t0, written directly
            async with store._tx() as conn:
                await conn.execute(
                    tenant_runs.insert().values(
                        rollout_id=first, tenant_id="t0", attempt=9, status=RunStatus.QUEUED.value
                    )
                )
        assert caught.value.constraint == "uq_tenant_runs_active"
        assert "Traceback" not in caught.value.message and "IntegrityError" not in caught.value.message

        # two retries that computed the same next attempt: the unique (rollout, tenant, attempt) decides
        with pytest.raises(ConstraintViolation) as caught:
            async with store._tx() as conn:
                await conn.execute(
                    tenant_runs.insert().values(
                        rollout_id=first, tenant_id="t1", attempt=1, status=RunStatus.FAILED.value
                    )
                )
        assert caught.value.constraint == ATTEMPT_UNIQUE

    _with(store_url, go)


def test_a_busy_tenant_is_recorded_skipped_with_its_holder(store_url: str) -> None:
    async def go(store: Store) -> None:
        holder = await _rollout(store, ["t0", "t1"])
        second = await _rollout(store, ["t1", "t2"])
        runs = {r.tenant_id: r for r in await store.rollout_runs(second)}
        assert runs["t1"].status is RunStatus.SKIPPED and runs["t1"].blocked_by == holder
        assert runs["t1"].error_message == f"busy: rollout {holder} holds this tenant"
        assert runs["t2"].status is RunStatus.QUEUED and runs["t2"].blocked_by is None

    _with(store_url, go)


def test_a_control_db_newer_than_this_code_says_so(store_url: str) -> None:
    """During a deploy the previous release meets a control DB the new one upgraded: it must not advise
    `tenantctl db upgrade` (which would do nothing), but say which side is behind."""
    from orchestrator.exceptions import ControlDBError

    async def go(store: Store) -> None:
        async with store._tx() as conn:
            await conn.exec_driver_sql("UPDATE tenantctl_version SET version_num = 'c9999'")
        with pytest.raises(ControlDBError, match="is at c9999, newer than this tenantctl"):
            await store.ensure_ready()

    _with(store_url, go)
