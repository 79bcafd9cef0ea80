"""The pure part of drift audits: classification, repair hints, grouping and changes, without servers."""

from __future__ import annotations

import json

import pytest

from orchestrator.audit import (
    AuditKind,
    AuditRecord,
    Finding,
    History,
    Repair,
    State,
    changes,
    classify,
    counts,
    drift,
    groups,
    report,
    with_schema,
)

LINE = History(parents={"a": (), "b": ("a",), "c": ("b",), "d": ("c",)}, heads=("d",))
# a -> b -> (c1 -> c2) and (x1): two heads
FORK = History(parents={"a": (), "b": ("a",), "c1": ("b",), "c2": ("c1",), "x1": ("b",)}, heads=("c2", "x1"))


def test_line_history_states() -> None:
    assert classify(LINE, "t", version_table=True, rows=("d",)).state is State.AT_HEAD
    behind = classify(LINE, "t", version_table=True, rows=("b",))
    assert (behind.state, behind.behind_by, behind.missing) == (State.BEHIND, 2, ("c", "d"))
    assert behind.hint == "tenantctl upgrade head --tenant t"
    empty = classify(LINE, "t", version_table=True, rows=())
    assert (empty.state, empty.revision, empty.behind_by, empty.missing) == (
        State.BEHIND,
        None,
        4,
        ("a", "b", "c", "d"),
    )
    unknown = classify(LINE, "t", version_table=True, rows=("zz",))
    assert (unknown.state, unknown.revision, unknown.unknown) == (State.UNKNOWN_REVISION, "zz", ("zz",))
    assert unknown.repair is Repair.NEWER_CODE
    multi = classify(LINE, "t", version_table=True, rows=("d", "c"))
    assert (multi.state, multi.revision, multi.repair) == (
        State.MULTIPLE_VERSIONS,
        "c,d",
        Repair.CHECK_SCHEMA,
    )
    none = classify(LINE, "t", version_table=False)
    assert (none.state, none.repair) == (State.NO_VERSION_TABLE, Repair.EMPTY_OR_STAMP)
    down = classify(LINE, "t", version_table=False, error="cannot read revision: refused")
    assert (down.state, down.error, down.repair) == (
        State.UNREACHABLE,
        "cannot read revision: refused",
        Repair.CONNECT,
    )
    assert [f.drift for f in (behind, empty, unknown, multi, none, down)] == [True] * 6


def test_several_heads_count_as_one_position() -> None:
    assert classify(FORK, "t", version_table=True, rows=("x1", "c2")).state is State.AT_HEAD
    one_branch = classify(FORK, "t", version_table=True, rows=("c2",))
    assert (one_branch.state, one_branch.missing) == (State.BEHIND, ("x1",))
    assert one_branch.hint == "tenantctl upgrade heads --tenant t"  # tenantctl refuses `head` here
    both_behind = classify(FORK, "t", version_table=True, rows=("c1", "x1"))
    assert (both_behind.state, both_behind.behind_by, both_behind.missing) == (State.BEHIND, 1, ("c2",))
    before_fork = classify(FORK, "t", version_table=True, rows=("b",))
    assert before_fork.missing == ("c1", "c2", "x1")
    # rows on one line of history are never a valid position
    stacked = classify(FORK, "t", version_table=True, rows=("c1", "c2"))
    assert stacked.state is State.MULTIPLE_VERSIONS
    with_unknown = classify(FORK, "t", version_table=True, rows=("c2", "zz"))
    assert (with_unknown.state, with_unknown.unknown) == (State.MULTIPLE_VERSIONS, ("zz",))


def test_history_order_is_stable_and_topological() -> None:
    assert FORK.order == ("a", "b", "c1", "c2", "x1")
    assert LINE.ancestors(["c"]) == {"a", "b", "c"}
    assert LINE.missing(["c"]) is LINE.missing(["c"])  # memoised per position


@pytest.mark.parametrize(
    ("finding", "differences", "empty", "repair", "hint_start"),
    [
        (classify(LINE, "t", version_table=True, rows=("d",)), (), False, None, None),
        (
            classify(LINE, "t", version_table=True, rows=("d",)),
            ("lacks index ix on x (y)",),
            False,
            Repair.MIGRATION,
            "the schema differs from the models at head",
        ),
        (
            classify(LINE, "t", version_table=True, rows=("b",)),
            (),
            False,
            Repair.STAMP,
            "tenantctl stamp head",
        ),
        (
            classify(LINE, "t", version_table=True, rows=("b",)),
            ("lacks column x.y",),
            False,
            Repair.UPGRADE,
            "tenantctl upgrade head --tenant t",
        ),
        (
            classify(LINE, "t", version_table=False),
            (),
            False,
            Repair.STAMP,
            "tenantctl stamp head --tenant t",
        ),
        (
            classify(LINE, "t", version_table=False),
            ("lacks table x", "lacks table y"),
            True,
            Repair.UPGRADE,
            "tenantctl upgrade head --tenant t",
        ),
        (
            classify(LINE, "t", version_table=False),
            ("lacks table y",),
            False,
            Repair.BY_HAND,
            "the version rows (its revision) do not match",
        ),
        (
            classify(LINE, "t", version_table=True, rows=("c", "d")),
            (),
            False,
            Repair.RESTAMP,
            "tenantctl stamp base --tenant t && tenantctl stamp head --tenant t",
        ),
        (
            classify(LINE, "t", version_table=True, rows=("d", "zz")),
            (),
            False,
            Repair.PURGE_STAMP,
            "the schema matches head: alembic",
        ),
        (
            classify(LINE, "t", version_table=True, rows=("zz",)),
            (),
            False,
            Repair.PURGE_STAMP,
            "the schema matches",
        ),
        (
            classify(LINE, "t", version_table=True, rows=("zz",)),
            ("has extra column x.z",),
            False,
            Repair.NEWER_CODE,
            "zz is ahead of these scripts",
        ),
    ],
)
def test_schema_findings_choose_the_repair(
    finding: Finding, differences: tuple[str, ...], empty: bool, repair: Repair | None, hint_start: str | None
) -> None:
    checked = with_schema(finding, differences, empty=empty)
    assert checked.schema_checked and checked.repair is repair
    if hint_start is None:
        assert checked.hint is None and not checked.drift
    else:
        assert checked.hint is not None and checked.hint.startswith(hint_start), checked.hint


def test_a_failed_schema_comparison_is_drift_with_a_retry_hint() -> None:
    failed = with_schema(classify(LINE, "t", version_table=True, rows=("d",)), error="schema not compared: x")
    assert failed.drift and not failed.schema_checked and failed.repair is Repair.RETRY
    assert [g.summary for g in groups([failed])] == ["1 tenant is at head, schema not compared"]


def _fleet() -> list[Finding]:
    at = [classify(LINE, f"h{i}", version_table=True, rows=("d",)) for i in range(40)]
    at = [
        with_schema(f, ("lacks index ix_s on invoices (status)",) if i < 37 else ()) for i, f in enumerate(at)
    ]
    at[0] = with_schema(at[0], ("lacks index ix_s on invoices (status)", "has extra column accounts.nick"))
    behind = [
        with_schema(classify(LINE, f"b{i}", version_table=True, rows=("b",)), ("lacks column x.y",))
        for i in range(3)
    ]
    return [*at, *behind, classify(LINE, "u", version_table=True, rows=("zz",))]


def test_grouping_is_one_line_per_shared_drift() -> None:
    found = groups(_fleet())
    assert [(g.summary, len(g.tenants)) for g in found] == [
        ("3 tenants are behind head by 2 revisions (at b; missing c, d)", 3),
        ("1 tenant is on revision zz, unknown to the scripts", 1),
        ("37 tenants lack index ix_s on invoices (status)", 37),
        ("1 tenant has extra column accounts.nick", 1),
    ]
    assert found[0].hint == "tenantctl upgrade head --tenant b0 --tenant b1 --tenant b2"
    assert found[2].hint is not None and "--tenant h0 --tenant h1 " in found[2].hint
    # the behind tenants' own differences are kept on them, not grouped as schema drift
    assert not any("x.y" in g.summary for g in found)


def test_counts_drift_and_changes() -> None:
    fleet = _fleet()
    assert counts(fleet) == {
        "at_head": 40,
        "behind": 3,
        "unknown_revision": 1,
        "multiple_versions": 0,
        "no_version_table": 0,
        "unreachable": 0,
    }
    assert drift(fleet) == 37 + 3 + 1
    assert changes(fleet, None, None).new_drift == tuple(f.tenant_id for f in fleet if f.drift)
    later = [
        with_schema(
            classify(LINE, "h0", version_table=True, rows=("d",)), ("lacks index ix_s on invoices (status)",)
        ),
        classify(LINE, "b0", version_table=True, rows=("c",)),  # still behind, by less: no change
        classify(LINE, "b1", version_table=True, rows=("d",)),  # repaired
        classify(LINE, "h39", version_table=True, rows=("c",)),  # newly behind
        classify(LINE, "new", version_table=False),  # not in the previous audit
    ]
    assert changes(later, fleet, 7) == changes(later, fleet, 7)
    result = changes(later, fleet, 7)
    assert (result.previous, result.new_drift, result.resolved) == (7, ("h39", "new"), ("b1",))


def test_stored_form_round_trips_and_report_shape() -> None:
    from datetime import UTC, datetime

    f = with_schema(classify(LINE, "t", version_table=True, rows=("c", "zz")), ())
    stored = Finding.from_stored(
        tenant_id=f.tenant_id,
        state=f.state.value,
        revision=f.revision,
        behind_by=f.behind_by,
        details=json.dumps(f.details()),
        hint=f.hint,
    )
    assert stored == f
    record = AuditRecord(
        id=3,
        kind=AuditKind.SCHEMA,
        created_at=datetime.now(UTC),
        created_by="me",
        head="d",
        counts=counts([f]),
        drift=1,
    )
    out = report(record, [f], changes([f], None, None))
    assert set(out) >= {"id", "kind", "head", "counts", "drift", "tenants", "groups", "changes"}
    assert set(out["tenants"][0]) >= {
        "tenant",
        "state",
        "revision",
        "behind_by",
        "missing",
        "error",
        "hint",
        "differences",
    }
    assert out["changes"] == {"previous": None, "new_drift": ["t"], "resolved": []}
