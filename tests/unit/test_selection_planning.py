from __future__ import annotations

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from orchestrator.exceptions import EmptySelection, TargetUnreachable, UnknownTenant, UserError
from orchestrator.models import Command, ErrorClass, Selector, Tenant
from orchestrator.planning import (
    ALREADY_AT_TARGET,
    Plan,
    alembic_steps,
    check_reachable,
    known_behind,
    plan,
    unreachable,
)
from orchestrator.revisions import RevisionRead
from orchestrator.scripts import Target
from orchestrator.selection import select
from tests.conftest import FIXTURE_ENVS, MIGRATIONS_INI


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


SCRIPT = ScriptDirectory.from_config(Config(str(MIGRATIONS_INI)))  # four revisions, 0001 → 0004
HEADS = ("0004",)


def _why(command: Command, spec: str, **current: tuple[str, ...]) -> dict[str, list[str]]:
    return unreachable(alembic_steps(SCRIPT), HEADS, command, spec, current)


@pytest.mark.parametrize(
    ("command", "spec", "current", "expected"),
    [
        (
            Command.UPGRADE,
            "head+100",
            {"a": (), "b": ("0002",)},
            {"is 100 steps past the head 0004": ["a", "b"]},
        ),
        (Command.UPGRADE, "+7", {"a": ()}, {"is 3 steps past the head 0004 from base": ["a"]}),
        (
            Command.UPGRADE,
            "+1",
            {"a": ("0004",), "b": ("0001",)},
            {"is 1 step past the head 0004 from 0004": ["a"]},
        ),
        (
            Command.DOWNGRADE,
            "-50",
            {"a": ("0004",), "b": ("0004",), "c": ()},
            {"is 46 steps below base from 0004": ["a", "b"], "is 50 steps below base from base": ["c"]},
        ),
        (Command.DOWNGRADE, "head-5", {"a": ("0004",)}, {"is 1 step below base": ["a"]}),
        (Command.UPGRADE, "-1", {"a": ("0004",)}, {"goes down, not up (use downgrade)": ["a"]}),
        (Command.DOWNGRADE, "0003", {"a": ("0004",), "b": ("0001",)}, {"is above 0001 (use upgrade)": ["b"]}),
        (Command.STAMP, "head+1", {"a": ("0002",)}, {"is 1 step past the head 0004": ["a"]}),
    ],
)
def test_unreachable_targets_name_the_tenants_and_why(
    command: Command, spec: str, current: dict[str, tuple[str, ...]], expected: dict[str, list[str]]
) -> None:
    assert _why(command, spec, **current) == expected


@pytest.mark.parametrize(
    ("command", "spec"),
    [
        (Command.UPGRADE, "head"),
        (Command.UPGRADE, "+1"),
        (Command.UPGRADE, "0002"),  # below the tenant: a no-op, as Alembic does it
        (Command.DOWNGRADE, "-1"),
        (Command.DOWNGRADE, "base"),
        (Command.STAMP, "0001"),
    ],
)
def test_reachable_targets_pass(command: Command, spec: str) -> None:
    assert _why(command, spec, a=("0002",), b=("0003",)) == {}


def test_a_revision_the_scripts_do_not_know_is_left_to_its_unit() -> None:
    assert _why(Command.UPGRADE, "head+1", a=("deadbeef",)) == {}


def test_each_distinct_revision_is_asked_once() -> None:
    asked: list[tuple[Command, str, tuple[str, ...]]] = []

    def steps(command: Command, spec: str, current: tuple[str, ...]) -> int:
        asked.append((command, spec, current))
        return 1

    fleet = {f"t{i}": ("0002",) if i % 2 else ("0003",) for i in range(1000)}
    assert unreachable(steps, HEADS, Command.UPGRADE, "+1", fleet) == {}
    assert sorted(asked) == [(Command.UPGRADE, "+1", ("0002",)), (Command.UPGRADE, "+1", ("0003",))]


def test_check_reachable_refuses_with_one_line_naming_tenants() -> None:
    the_plan = Plan(queued=[(f"t{i}", "0002") for i in range(5)] + [("u", None)])
    with pytest.raises(TargetUnreachable) as caught:
        check_reachable(SCRIPT, Command.UPGRADE, "head+100", the_plan)
    assert caught.value.exit_code == 3
    assert caught.value.message == (
        "revision 'head+100' is 100 steps past the head 0004 for tenants t0, t1, t2 (and 3 more)"
    )
    assert caught.value.unreachable == {
        "is 100 steps past the head 0004": ["t0", "t1", "t2", "t3", "t4", "u"]
    }
    check_reachable(SCRIPT, Command.UPGRADE, "+2", the_plan)  # 0002 → 0004, base → 0002


def test_branch_targets_of_a_history_with_two_heads_pass() -> None:
    script = ScriptDirectory.from_config(Config(str(FIXTURE_ENVS / "twoheads" / "alembic.ini")))
    heads = ("h002a", "h002b")
    fleet = {"a": (), "b": ("h001",), "c": ("h002a",), "d": heads}
    for command, spec in [(Command.UPGRADE, "heads"), (Command.UPGRADE, "h002b"), (Command.STAMP, "h001")]:
        assert unreachable(alembic_steps(script), heads, command, spec, fleet) == {}, (command, spec)
    assert unreachable(alembic_steps(script), heads, Command.DOWNGRADE, "h001", fleet) == {
        "is above base (use upgrade)": ["a"]
    }
