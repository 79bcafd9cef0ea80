"""The sync's pure core: source rows into specs, the diff against the registry, the safety valve."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from orchestrator import registry, sync, tenantfile
from orchestrator.exceptions import (
    ConfigurationError,
    SyncRefused,
    SyncRowError,
    SyncSourceError,
    UserError,
)
from orchestrator.models import Tenant, TenantSpec
from orchestrator.secrets import SecretBox
from orchestrator.settings import Settings
from orchestrator.sync import ChangeKind, DisableLimit
from orchestrator.tenantfile import ExtraColumns

BOX = SecretBox("unit-test-key")
NONE = ExtraColumns()


def stored(tenant_id: str, url: str = "", **fields: object) -> Tenant:
    """A registry tenant, stored exactly as `tenants add` stores it."""
    spec = TenantSpec(id=tenant_id, url=url or f"postgresql://app@db/{tenant_id}", **fields)  # type: ignore[arg-type]
    return registry.to_tenant(spec, BOX)


def spec(tenant_id: str, url: str = "", **fields: object) -> TenantSpec:
    return TenantSpec(id=tenant_id, url=url or f"postgresql://app@db/{tenant_id}", **fields)  # type: ignore[arg-type]


def kinds(plan: sync.SyncPlan) -> dict[str, str]:
    return {c.tenant: c.kind.value for c in plan.changes}


# -- the diff ---------------------------------------------------------------------------------------


def test_diff_creates_updates_disables_reenables_and_leaves_the_rest() -> None:
    current = [
        stored("same", tags=("eu",)),
        stored("moved"),
        stored("gone"),
        stored("back", enabled=False),
        stored("long-gone", enabled=False),
    ]
    source = [
        spec("same", tags=("eu",)),
        spec("moved", url="postgresql://app@db2/moved", group="big"),
        spec("back"),
        spec("new", tags=("us",)),
    ]
    plan = sync.plan(current, source, BOX)
    assert kinds(plan) == {
        "back": "reenabled",
        "gone": "disabled",
        "moved": "updated",
        "new": "created",
        "same": "unchanged",
    }
    # a tenant already disabled and absent from the source is left alone, not reported
    assert "long-gone" not in kinds(plan)
    changes = {c.tenant: c for c in plan.changes}
    assert changes["moved"].fields == ("url", "group")
    assert changes["gone"].absent and changes["gone"].fields == ("enabled",)
    assert [t.id for t in plan.create] == ["new"]
    assert sorted(t.id for t in plan.update) == ["back", "moved"]
    assert plan.disable == ("gone",)
    assert plan.enabled == 3
    assert plan.counts() == {"created": 1, "updated": 1, "disabled": 1, "reenabled": 1, "unchanged": 1}


def test_a_changed_password_is_an_update_named_password_never_shown() -> None:
    current = [stored("acme", url="postgresql://app:old-secret@db/acme")]
    same = sync.plan(current, [spec("acme", url="postgresql://app:old-secret@db/acme")], BOX)
    assert kinds(same) == {"acme": "unchanged"} and not same.update  # re-encrypting is not a change
    changed = sync.plan(current, [spec("acme", url="postgresql://app:new-secret@db/acme")], BOX)
    assert [(c.kind, c.fields) for c in changed.changes] == [(ChangeKind.UPDATED, ("password",))]
    (written,) = changed.update
    assert "new-secret" not in written.url and BOX.decrypt(written.password_token or "") == "new-secret"
    assert "secret" not in str(changed.as_dict())


def test_the_source_can_disable_and_reenable_with_other_changes() -> None:
    current = [stored("a"), stored("b", enabled=False)]
    plan = sync.plan(
        current, [spec("a", enabled=False), spec("b", url="postgresql://app@db9/b", tags=("x",))], BOX
    )
    changes = {c.tenant: c for c in plan.changes}
    assert changes["a"].kind is ChangeKind.DISABLED and not changes["a"].absent
    assert changes["b"].kind is ChangeKind.REENABLED and changes["b"].fields == ("url", "tags", "enabled")
    report = plan.as_dict()
    assert report["disabled"] == [{"id": "a", "fields": ["enabled"], "reason": "disabled in the source"}]
    assert report["reenabled"] == [{"id": "b", "fields": ["url", "tags", "enabled"]}]


def test_a_new_tenant_with_a_clear_password_is_encrypted_as_import_does() -> None:
    (created,) = sync.plan([], [spec("n", url="postgresql://app:pw1@db/n")], BOX).create
    assert created.url == "postgresql://app@db/n" and BOX.decrypt(created.password_token or "") == "pw1"
    env = sync.plan([], [spec("e", url="postgresql://app:${E_PW}@db/e")], BOX).create[0]
    assert env.password_token is None and "${E_PW}" in env.url


# -- the safety valve -------------------------------------------------------------------------------


def fleet(n: int) -> list[Tenant]:
    return [stored(f"t{i:03d}") for i in range(n)]


@pytest.mark.parametrize(
    ("registry_size", "kept", "limit", "refused"),
    [
        (100, 90, "10%", False),  # 10 of 100: at the limit
        (100, 89, "10%", True),  # 11 of 100
        (5, 4, "10%", False),  # 10% of 5 rounds down to 0, but one is always allowed
        (5, 3, "10%", True),
        (100, 97, "3", False),
        (100, 96, "3", True),
        (100, 99, "0%", True),  # 0% never disables without --force
        (10, 0, "100%", True),  # every enabled tenant: always needs --force
        (10, 1, "100%", False),
    ],
)
def test_the_valve_refuses_past_the_limit(registry_size: int, kept: int, limit: str, refused: bool) -> None:
    current = fleet(registry_size)
    plan = sync.plan(current, [spec(t.id) for t in current[:kept]], BOX)
    if refused:
        with pytest.raises(SyncRefused) as caught:
            sync.check(plan, DisableLimit.parse(limit))
        assert caught.value.plan is plan and caught.value.exit_code == 3
        assert caught.value.disabling == registry_size - kept
        assert "--force" in caught.value.message and "nothing changed" in caught.value.message
        sync.check(plan, DisableLimit.parse(limit), force=True)
    else:
        sync.check(plan, DisableLimit.parse(limit))


def test_an_empty_source_never_disables_the_fleet_unforced() -> None:
    plan = sync.plan(fleet(3), [], BOX)
    with pytest.raises(SyncRefused, match="would disable 3 of 3 enabled tenant"):
        sync.check(plan, DisableLimit.parse("100%"))


def test_the_valve_counts_tenants_the_source_disables_too() -> None:
    current = fleet(20)
    source = [spec(t.id, enabled=i >= 5) for i, t in enumerate(current)]
    with pytest.raises(SyncRefused, match="more than --max-disable 10% allows \\(2\\)"):
        sync.check(sync.plan(current, source, BOX), DisableLimit.parse("10%"))


@pytest.mark.parametrize("text", ["ten", "10.5", "-1", "101%", "%", "1e3", ""])
def test_bad_max_disable_is_one_error(text: str) -> None:
    with pytest.raises(ConfigurationError, match="--max-disable"):
        DisableLimit.parse(text)


def test_max_disable_parses_shares_exactly() -> None:
    assert DisableLimit.parse("29%").allowed(100) == 29  # 0.29 * 100 in floats is 28.999…
    assert DisableLimit.parse(" 12.5% ").allowed(8) == 1
    assert DisableLimit.parse("7").allowed(1000) == 7


# -- source rows into specs -------------------------------------------------------------------------


def test_query_rows_become_specs_with_tag_and_group_columns() -> None:
    columns = ["id", "url", "schema", "tier", "region", "tags"]
    rows = [
        ("acme", "postgresql://app@db/shared", "acme ", "gold", "eu", ["x", "y"]),
        (42, "postgresql://app@db/n42", None, None, None, None),
        (uuid.UUID(int=1), "postgresql://app@db/u", "", ["a", "b"], "us", "z"),
    ]
    specs = sync.specs_from_rows(columns, rows, ExtraColumns(tags=("tier",), group="region"))
    assert [(s.id, s.schema, s.tags, s.group) for s in specs] == [
        ("acme", "acme", ("gold", "x", "y"), "eu"),
        ("42", None, (), None),
        ("00000000-0000-0000-0000-000000000001", None, ("a", "b", "z"), "us"),
    ]


def test_enabled_column_and_integral_numbers() -> None:
    rows = [("a", "postgresql://h/a", False), (Decimal("7"), "postgresql://h/b", 1)]
    specs = sync.specs_from_rows(["id", "url", "enabled"], rows, NONE)
    assert [(s.id, s.enabled) for s in specs] == [("a", False), ("7", True)]


@pytest.mark.parametrize(
    ("columns", "extra", "needle"),
    [
        (["id", "url", "tier"], NONE, "column 'tier' is not a tenant field"),
        (["id", "db_url"], NONE, "column 'db_url' is not a tenant field"),
        (["id", "schema"], NONE, "no column 'url'"),
        (["id", "url", "id"], NONE, "column 'id' appears twice"),
        (["id", "url"], ExtraColumns(tags=("tier",)), "no column 'tier' for --tag-column"),
        (["id", "url", "region"], ExtraColumns(group="regio"), "'region' is not a tenant field"),
        (["id", "url", "group", "region"], ExtraColumns(group="region"), "both a 'group' column"),
        (["id", "url"], ExtraColumns(tags=("url",)), "'url' is a tenant field"),
    ],
)
def test_wrong_columns_are_refused_before_any_row(
    columns: list[str], extra: ExtraColumns, needle: str
) -> None:
    with pytest.raises(SyncSourceError) as caught:
        sync.specs_from_rows(columns, [], extra, where="source postgresql://ro:***@h/app")
    message = caught.value.message
    assert needle in message and message.startswith("source postgresql://ro:***@h/app: "), message
    assert message.endswith("(nothing synced)")


@pytest.mark.parametrize(
    ("row", "shown", "needle"),
    [
        (("Not Valid", "postgresql://h/a", None), "source row 2 (id 'Not Valid')", "invalid tenant id"),
        (("b", "mysql://app:pw@h/b", None), "source row 2 (id 'b')", "only postgresql"),
        ((None, "postgresql://h/b", None), "source row 2:", "missing field 'id'"),
        (("b", "postgresql://h/b", "Gold"), "source row 2 (id 'b')", "invalid tag 'Gold'"),
        (("b", "postgresql://h/b", "gold plan"), "source row 2 (id 'b')", "invalid tag 'gold plan'"),
        (("b", "postgresql://h/b", 3.5), "source row 2 (id 'b')", "tag column 'tier' must hold text"),
        (("a", "postgresql://h/again", None), "source row 2 (id 'a')", "'a' appears twice (first in row 1)"),
    ],
)
def test_a_bad_row_is_named_by_number_and_id(row: tuple[object, ...], shown: str, needle: str) -> None:
    rows = [("a", "postgresql://h/a", None), row]
    with pytest.raises(SyncRowError) as caught:
        sync.specs_from_rows(["id", "url", "tier"], rows, ExtraColumns(tags=("tier",)))
    message = caught.value.message
    assert message.startswith(shown) and needle in message and "\n" not in message, message
    assert caught.value.row == 2 and "pw" not in message


def test_tag_and_group_columns_work_for_csv_files_too(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text("id,url,tier,region\nacme,postgresql://h/acme,gold,eu\nb,postgresql://h/b,,\n")
    specs = tenantfile.read(path, ExtraColumns(tags=("tier",), group="region"))
    assert [(s.id, s.tags, s.group) for s in specs] == [("acme", ("gold",), "eu"), ("b", (), None)]
    with pytest.raises(Exception, match="unknown column 'tier'"):
        tenantfile.read(path)


# -- the source's settings and options -------------------------------------------------------------


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_options_win_over_settings_and_a_given_source_replaces_the_configured_one() -> None:
    cfg = settings(
        sync_from_sql="SELECT 1",
        sync_source_url="postgresql://ro:pw@h/app",
        sync_tag_columns="tier, plan",
        sync_group_column="region",
        sync_timeout=5,
    )
    configured = sync.configured_source(cfg)
    assert configured.query == "SELECT 1" and configured.extra == ExtraColumns(
        tags=("tier", "plan"), group="region"
    )
    assert configured.timeout == 5 and configured.describe() == "source postgresql://ro:***@h/app"
    from_file = sync.configured_source(cfg, file=Path("t.csv"), tag_columns=[])
    assert from_file.query is None and from_file.file == Path("t.csv") and from_file.extra.tags == ()
    with pytest.raises(ConfigurationError, match="no sync source"):
        sync.configured_source(settings())
    with pytest.raises(UserError, match="needs --source-url"):
        sync.configured_source(settings(), query="SELECT 1")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://ro:pw-1@h/app", "source postgresql://ro:***@h/app"),
        ("postgresql://ro:${APP_PW}@${HOST}/${DB}", "source postgresql://ro:***@${HOST}/${DB}"),
        (
            "postgresql://ro@h/app?password=pw-1&sslmode=require",
            "source postgresql://ro:***@h/app?sslmode=require",
        ),
        ("postgresql://ro:p@ss-1@h/app", "source (URL not shown)"),  # '@' unencoded: where does it end?
        ("not a url pw-1", "source (URL not shown)"),
    ],
)
def test_the_source_is_described_without_its_password(url: str, shown: str) -> None:
    assert sync.Source(query="SELECT 1", url=url).describe() == shown
