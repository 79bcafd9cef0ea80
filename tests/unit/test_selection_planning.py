from __future__ import annotations

import pytest

from orchestrator.exceptions import EmptySelection, UnknownTenant, UserError
from orchestrator.models import ErrorClass, Selector, Tenant
from orchestrator.planning import ALREADY_AT_TARGET, known_behind, plan
from orchestrator.revisions import RevisionRead
from orchestrator.scripts import Target
from orchestrator.selection import select


def _t(id: str, tags: tuple[str, ...] = (), group: str | None = None, enabled: bool = True) -> Tenant:
    return Tenant(id=id, url=f"sqlite:///{id}.db", tags=tags, group=group, enabled=enabled)


FLEET = [
    _t("a", ("eu", "big"), "g1"),
    _t("b", ("eu",), "g1"),
    _t("c", ("us",), "g2"),
    _t("d", ("eu", "big"), "g2", enabled=False),
]


def ids(tenants: list[Tenant]) -> list[str]:
    return [t.id for t in tenants]


def test_default_is_every_enabled_tenant() -> None:
    assert ids(select(FLEET, Selector())) == ["a", "b", "c"]


def test_tags_must_all_match_and_group_narrows() -> None:
    assert ids(select(FLEET, Selector(tags=("eu", "big")))) == ["a"]
    assert ids(select(FLEET, Selector(tags=("eu",), group="g1", exclude=("a",)))) == ["b"]


def test_explicit_tenants_keep_order_free_of_duplicates() -> None:
    assert ids(select(FLEET, Selector(tenants=("c", "a", "c")))) == ["a", "c"]


def test_unknown_tenant_and_exclude_are_errors() -> None:
    with pytest.raises(UnknownTenant, match="'zz'"):
        select(FLEET, Selector(tenants=("zz",)))
    with pytest.raises(UnknownTenant):
        select(FLEET, Selector(exclude=("zz",)))


def test_naming_a_disabled_tenant_is_an_error() -> None:
    with pytest.raises(UserError, match="disabled"):
        select(FLEET, Selector(tenants=("d",)))


def test_empty_selection_names_the_selectors() -> None:
    with pytest.raises(EmptySelection, match="--tag nope"):
        select(FLEET, Selector(tags=("nope",)))


def test_plan_skips_tenants_at_absolute_target_and_fails_unreachable() -> None:
    reads = {
        "a": RevisionRead(tenant_id="a", heads=("0004",), version_table=True),
        "b": RevisionRead(tenant_id="b", heads=("0002",), version_table=True),
        "c": RevisionRead(tenant_id="c", error_class=ErrorClass.UNREACHABLE, error="refused"),
    }
    p = plan(FLEET[:3], reads, Target(spec="head", heads=("0004",)))
    assert p.skipped == [("a", "0004", ALREADY_AT_TARGET)]
    assert p.queued == [("b", "0002")]
    assert p.failed == [("c", ErrorClass.UNREACHABLE, "refused")]
    assert p.total == 3


def test_relative_targets_are_never_skipped() -> None:
    reads = {"a": RevisionRead(tenant_id="a", heads=("0004",), version_table=True)}
    p = plan(FLEET[:1], reads, Target(spec="-1", heads=None))
    assert p.queued == [("a", "0004")]


def test_base_target_reached_by_tenant_without_version_rows() -> None:
    reads = {"a": RevisionRead(tenant_id="a")}
    p = plan(FLEET[:1], reads, Target(spec="base", heads=()))
    assert p.skipped == [("a", None, ALREADY_AT_TARGET)]


def test_tenants_seen_short_of_the_target_are_queued_unread() -> None:
    """a was last seen at 0002: queued without a read, from there; b was seen at head and c never: both
    are read, and only a live read skips (b)."""
    head = Target(spec="head", heads=("0004",))
    behind = known_behind(FLEET[:3], {"a": ("0002",), "b": ("0004",)}, head)
    assert behind == {"a": ("0002",)}
    reads = {
        "b": RevisionRead(tenant_id="b", heads=("0004",), version_table=True),
        "c": RevisionRead(tenant_id="c", heads=("0001",), version_table=True),
    }
    p = plan(FLEET[:3], reads, head, behind=behind)
    assert p.queued == [("a", "0002"), ("c", "0001")]
    assert p.skipped == [("b", "0004", ALREADY_AT_TARGET)]


def test_known_base_is_behind_head_but_at_base() -> None:
    known = {"a": ()}
    assert known_behind(FLEET[:1], known, Target(spec="head", heads=("0004",))) == {"a": ()}
    assert known_behind(FLEET[:1], known, Target(spec="base", heads=())) == {}
    assert plan(FLEET[:1], {}, Target(spec="head", heads=("0004",)), behind={"a": ()}).queued == [("a", None)]


def test_a_relative_target_reads_only_tenants_never_seen() -> None:
    assert known_behind(FLEET[:2], {"a": ("0004",)}, Target(spec="-1", heads=None)) == {"a": ("0004",)}
