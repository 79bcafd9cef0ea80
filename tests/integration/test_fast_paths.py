"""The registry's fast paths at 10,000 tenants hold the same contract as the one-tenant-at-a-time path.

An import of 10,000 rows through the CLI stores exactly what registering each tenant on its own stores,
field by field, read back from PostgreSQL as an independent witness: the URL without its password, the
password decrypting to what the file said (a fresh ciphertext per tenant, even for a shared password),
tags normalised, schema, group, enabled. A re-import changes nothing and keeps every ciphertext; a file
with some rows changed updates exactly those; a tenant created by someone else meanwhile refuses the
whole write. Lines of bad rows deep in a big file are still right; ``list`` masks as SQLAlchemy would;
the HTTP list pages from the store as the CLI does; ``tenantctl`` starts without Celery or FastAPI.
(The pure halves of the fast paths are in ``tests/unit/test_registry_fast_paths.py``.)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import yaml
from cryptography.fernet import Fernet
from sqlalchemy.engine import URL, make_url

from orchestrator import registry, tenantfile
from orchestrator.controldb.store import Store
from orchestrator.exceptions import ConcurrentRegistryChange, ImportFileError
from orchestrator.models import Tenant, TenantSpec
from orchestrator.secrets import SecretBox, mask_text
from tests.conftest import DatabaseFactory
from tests.support.harness import SECRET_KEY, Harness

N = 10_000
SHARED = 50  # tenants i and i + SHARED share a password; on other roles or databases, not a ciphertext


def fleet(n: int = N) -> list[dict[str, Any]]:
    """Rows of every shape the registry stores: clear passwords (some needing URL quoting, some shared),
    ``${ENV}`` references, none; query options; SQLite; schemas; unsorted and repeated tags; no group;
    disabled tenants."""
    rows = []
    for i in range(n):
        password = f"pw-{i % SHARED}" + ("@:/%" if i % 7 == 0 else "")
        user = f"app:{quote(password, safe='')}" if i % 4 else ("app:${T_PW}" if i % 8 else "app")
        url = f"postgresql://{user}@db{i % 9}.internal:{5432 + i % 3}/fleet{i % 10}"
        if i % 13 == 0:
            url += "?sslmode=require&application_name=tctl"
        if i % 101 == 0:
            url = f"sqlite:////var/tenants/t{i:05d}.db"
        rows.append(
            {
                "id": f"t{i:05d}",
                "url": url,
                "schema": f"s{i:05d}" if i % 3 == 0 and not url.startswith("sqlite") else None,
                "tags": [f"tier{i % 3}", "eu" if i % 2 else "us", f"tier{i % 3}"],
                "group": f"g{i % 5}" if i % 6 else None,
                "enabled": i % 11 != 0,
            }
        )
    return rows


def write(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=1))
    elif path.suffix == ".yaml":
        path.write_text(yaml.safe_dump({"tenants": list(rows)}))
    else:
        lines = ["id,url,schema,tags,group,enabled"]
        for r in rows:
            tags = ";".join(r["tags"])
            lines.append(f"{r['id']},{r['url']},{r['schema'] or ''},{tags},{r['group'] or ''},{r['enabled']}")
        path.write_text("\n".join(lines) + "\n")
    return path


def expected(row: dict[str, Any]) -> dict[str, Any]:
    """What registering this one tenant stores, worked out field by field without the registry."""
    url = make_url(row["url"])
    password = url.password if url.password is not None and "${" not in str(url.password) else None
    bare = URL.create(url.drivername, url.username, None, url.host, url.port, url.database, url.query)
    return {
        "url": row["url"] if password is None else bare.render_as_string(hide_password=False),
        "password": password,
        "schema": row["schema"],
        "tags": ",".join(sorted(set(row["tags"]))),
        "group": row["group"],
        "enabled": row["enabled"],
    }


def stored_rows(control_url: str) -> dict[str, dict[str, Any]]:
    """The tenants table read straight from PostgreSQL, tokens decrypted with the key's own Fernet."""
    fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(SECRET_KEY.encode()).digest()))
    with psycopg.connect(control_url.replace("+asyncpg", ""), autocommit=True) as conn:
        cursor = conn.execute(
            'SELECT id, url, password_token, schema, tags, "group", enabled, updated_by, updated_at '
            "FROM tenants"
        )
        found = {}
        for tid, url, token, schema, tags, group, enabled, by, at in cursor:
            found[tid] = {
                "url": url,
                "password": fernet.decrypt(token.encode()).decode() if token else None,
                "schema": schema,
                "tags": tags,
                "group": group,
                "enabled": enabled,
                "token": token,
                "updated_by": by,
                "updated_at": at,
            }
    return found


def _import(harness: Harness, path: Path) -> dict[str, int]:
    result = harness.cli("tenants", "import", str(path), "--json")
    assert result.returncode == 0, result.stderr
    counts: dict[str, int] = json.loads(result.stdout)
    return counts


def _fields(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("url", "password", "schema", "tags", "group", "enabled")}


def test_ten_thousand_rows_store_what_one_by_one_registration_stores(
    harness: Harness, tmp_path: Path, dbs: DatabaseFactory
) -> None:
    rows = fleet()
    assert _import(harness, write(tmp_path / "fleet.json", rows)) == {
        "created": N,
        "updated": 0,
        "unchanged": 0,
    }
    stored = stored_rows(harness.control_url)
    assert sorted(stored) == [r["id"] for r in rows]
    wrong = [r["id"] for r in rows if _fields(stored[r["id"]]) != expected(r)]
    assert not wrong, f"{len(wrong)} tenants differ, e.g. {wrong[:3]}"
    # one token per role, database and password (SecretBox); never one across roles or databases
    box = SecretBox(SECRET_KEY)
    scopes: dict[str, set[tuple[str, str]]] = {}
    for s in stored.values():
        if s["token"]:
            scopes.setdefault(s["token"], set()).add((s["url"], box.decrypt(s["token"])))
    assert all(len(scope) == 1 for scope in scopes.values()), "a token shared across roles or databases"
    assert len(scopes) == len(set().union(*scopes.values())) > SHARED * 10
    assert {s["updated_by"] for s in stored.values()} == {stored["t00000"]["updated_by"]}

    # the slow path, one tenant per transaction, on a sample into another control DB: the same rows
    other = dbs.url(dbs.create(prefix="tctl_ctl"), driver="postgresql+asyncpg")
    sample = rows[:: N // 60]

    async def one_by_one(store: Store) -> None:
        await store.migrate()
        for r in sample:
            await registry.add(store, TenantSpec(**{**r, "tags": tuple(r["tags"])}), harness.box)

    asyncio.run(_run_on(other, one_by_one))
    slow = stored_rows(other)
    assert {tid: _fields(row) for tid, row in slow.items()} == {
        r["id"]: _fields(stored[r["id"]]) for r in sample
    }

    listed = harness.cli("tenants", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    shown = {t["id"]: t["url"] for t in json.loads(listed.stdout)}
    assert len(shown) == N and "pw-" not in listed.stdout
    for tid, row in stored.items():
        want = (
            make_url(row["url"]).set(password="hidden").render_as_string(hide_password=True)
            if row["token"]
            else mask_text(row["url"])
        )
        assert shown[tid] == want, tid


async def _run_on(url: str, fn: Any) -> None:
    async with Store(url) as store:
        await fn(store)


def test_reimport_keeps_every_ciphertext_and_a_changed_file_updates_exactly_its_changes(
    harness: Harness, tmp_path: Path
) -> None:
    n = 2000  # the write paths are those of 10,000 rows; the YAML reader is the slow one
    rows = fleet(n)
    assert _import(harness, write(tmp_path / "fleet.csv", rows))["created"] == n
    before = stored_rows(harness.control_url)
    again = _import(harness, write(tmp_path / "fleet.yaml", rows))
    assert again == {"created": 0, "updated": 0, "unchanged": n}
    assert stored_rows(harness.control_url) == before, "an unchanged tenant is not rewritten"

    changed = [dict(r) for r in rows[:-100]]  # the last 100 are absent: left alone
    for i in range(10):
        changed[i * 10 + 1]["url"] = changed[i * 10 + 1]["url"].replace("pw-", "new-pw-")
        changed[i * 10 + 2]["tags"] = ["moved"]
        changed[i * 10 + 3]["enabled"] = not changed[i * 10 + 3]["enabled"]
        changed[i * 10 + 5]["url"] = changed[i * 10 + 5]["url"].replace(".internal", ".example")
    new = [{**r, "id": f"new{r['id']}"} for r in rows[:10]]
    counts = _import(harness, write(tmp_path / "changed.csv", changed + new))
    assert counts == {"created": 10, "updated": 40, "unchanged": n - 100 - 40}
    after = stored_rows(harness.control_url)
    for r in changed + new:
        assert _fields(after[r["id"]]) == expected(r), r["id"]
    rewritten = {tid for tid in before if after[tid]["updated_at"] != before[tid]["updated_at"]}
    assert rewritten == {changed[i * 10 + k]["id"] for i in range(10) for k in (1, 2, 3, 5)}
    assert all(after[r["id"]] == before[r["id"]] for r in rows[-100:])


def test_a_tenant_created_meanwhile_refuses_the_whole_import(harness: Harness) -> None:
    """The registry is read, then written: one row another import wrote in between is a refusal, not an
    overwrite, and nothing of this import is written."""
    specs = tenantfile.parse(json.dumps(fleet(300)), "json")
    harness.register("t00150", "postgresql://someone@else/db")

    class StaleRead(Store):
        async def list_tenants(self, limit: int | None = None, offset: int = 0) -> list[Tenant]:
            return []  # read before t00150 was created

    async def go() -> None:
        async with StaleRead(harness.control_url) as store:
            await registry.import_specs(store, specs, harness.box)

    with pytest.raises(ConcurrentRegistryChange):
        asyncio.run(go())
    assert list(stored_rows(harness.control_url)) == ["t00150"]


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".csv"])
def test_a_bad_row_deep_in_a_big_file_is_named_by_its_line(tmp_path: Path, suffix: str) -> None:
    rows = fleet(2000)
    rows[1789]["id"] = "Bad Id"
    path = write(tmp_path / f"fleet{suffix}", rows)
    lines = path.read_text().splitlines()
    line = next(n for n, text in enumerate(lines, 1) if "Bad Id" in text)
    if suffix == ".yaml":  # an item is named by its first line, `- enabled: …` (the dump sorts keys)
        line = max(n for n, text in enumerate(lines[:line], 1) if text.startswith("- "))
    elif suffix == ".json":  # and by its `{`
        line = max(n for n, text in enumerate(lines[:line], 1) if text.lstrip().startswith("{"))
    with pytest.raises(ImportFileError) as caught:
        tenantfile.read(path)
    assert caught.value.message.startswith(f"{path}:{line}: invalid tenant id"), caught.value.message


def test_the_http_list_pages_from_the_store_as_the_cli_does(harness: Harness, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from orchestrator.api.app import create_app
    from tests.integration.test_api import api_tokens, bearer

    specs = tenantfile.parse(json.dumps(fleet(40)), "json")
    harness.with_store(lambda store: registry.import_specs(store, specs, harness.box))
    cli = harness.cli("tenants", "list", "--json", "--limit", "7", "--offset", "30")
    assert cli.returncode == 0, cli.stderr
    cfg = harness.settings(api_tokens=api_tokens())
    with TestClient(create_app(cfg, harness.env())) as client:
        page = client.get("/api/v1/tenants?limit=7&offset=30", headers=bearer("viewer")).json()
        tagged = client.get("/api/v1/tenants?tag=eu&limit=5&offset=2", headers=bearer("viewer")).json()
    assert page == {"items": json.loads(cli.stdout), "total": 40, "limit": 7, "offset": 30}
    eu = [r["id"] for r in fleet(40) if r["enabled"] and r["id"] and int(r["id"][1:]) % 2]
    assert [t["id"] for t in tagged["items"]] == eu[2:7] and tagged["total"] == len(eu)


def test_tenantctl_starts_without_the_service_stacks() -> None:
    """A `tenants` command loads neither Celery nor the HTTP service, nor the file readers it does not
    use."""
    code = "import json, sys, orchestrator.cli; print(json.dumps([m.split('.')[0] for m in sys.modules]))"
    loaded = set(json.loads(subprocess.check_output([sys.executable, "-c", code], text=True)))
    assert not loaded & {
        "celery",
        "kombu",
        "fastapi",
        "starlette",
        "uvicorn",
        "redis",
        "httpx",
        "yaml",
        "pglast",
    }
