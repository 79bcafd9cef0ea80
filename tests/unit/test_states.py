"""The run and rollout state machine: every transition, allowed or refused, and what closes a rollout."""

from __future__ import annotations

import itertools

import pytest

from orchestrator import states
from orchestrator.models import RolloutState, RunStatus

R, S = RunStatus, RolloutState

RUN_ALLOWED = {
    (R.QUEUED, R.RUNNING),  # claim
    (R.QUEUED, R.HALTED),  # halt before it started
    (R.QUEUED, R.CANCELLED),  # cancel before it started
    (R.QUEUED, R.FAILED),  # unusable at dispatch (tenant removed, URL unresolvable)
    (R.RUNNING, R.SUCCEEDED),
    (R.RUNNING, R.FAILED),  # the unit failed, or the reaper judged it lost
    (R.RUNNING, R.SKIPPED),  # found at the target under the lock
    (R.RUNNING, R.HALTED),  # stopped between two migrations
    (R.RUNNING, R.CANCELLED),
    (R.HALTED, R.QUEUED),  # resume of a run never started
    (R.CANCELLED, R.QUEUED),
    (R.HALTED, R.CANCELLED),  # cancel of a halted rollout
}


@pytest.mark.parametrize(("source", "target"), list(itertools.product(RunStatus, RunStatus)))
def test_every_run_transition(source: RunStatus, target: RunStatus) -> None:
    assert states.run_may(source, target) is ((source, target) in RUN_ALLOWED)


def test_finished_runs_never_move_again() -> None:
    for status in (R.SUCCEEDED, R.FAILED, R.SKIPPED):
        assert not any(states.run_may(status, t) for t in RunStatus), f"{status} moved"


def test_run_sources_are_the_where_clause_of_each_compare_and_set() -> None:
    assert states.run_sources(R.RUNNING) == (R.QUEUED,)
    assert set(states.run_sources(R.QUEUED)) == {R.HALTED, R.CANCELLED}
    assert set(states.run_sources(R.HALTED)) == {R.QUEUED, R.RUNNING}
    assert set(states.run_sources(R.CANCELLED)) == {R.QUEUED, R.RUNNING, R.HALTED}
    assert states.ACTIVE == (R.QUEUED, R.RUNNING)


ROLLOUT_ALLOWED = {
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.HALTED),
    (S.RUNNING, S.CANCELLED),
    (S.HALTED, S.RUNNING),  # resume, retry
    (S.HALTED, S.CANCELLED),
    (S.HALTED, S.SUCCEEDED),  # its last running runs ended and nothing waits
    (S.HALTED, S.FAILED),
    (S.CANCELLED, S.RUNNING),
    (S.CANCELLED, S.SUCCEEDED),
    (S.CANCELLED, S.FAILED),
    (S.SUCCEEDED, S.RUNNING),  # retry
    (S.FAILED, S.RUNNING),  # retry
}


@pytest.mark.parametrize(("source", "target"), list(itertools.product(RolloutState, RolloutState)))
def test_every_rollout_transition(source: RolloutState, target: RolloutState) -> None:
    assert states.rollout_may(source, target) is ((source, target) in ROLLOUT_ALLOWED)


@pytest.mark.parametrize(
    ("state", "sources"),
    [
        (S.SUCCEEDED, {S.RUNNING, S.HALTED, S.CANCELLED}),
        (S.FAILED, {S.RUNNING, S.HALTED, S.CANCELLED}),
        (S.HALTED, {S.RUNNING, S.HALTED}),
        (S.CANCELLED, {S.RUNNING, S.HALTED, S.CANCELLED}),
    ],
)
def test_closing_sources(state: RolloutState, sources: set[RolloutState]) -> None:
    assert set(states.closing_sources(state)) == sources


@pytest.mark.parametrize(
    ("counts", "closes_as"),
    [
        ({R.QUEUED: 1, R.SUCCEEDED: 3}, None),
        ({R.RUNNING: 1, R.FAILED: 3}, None),
        ({R.SUCCEEDED: 3, R.SKIPPED: 2}, S.SUCCEEDED),
        ({}, S.SUCCEEDED),
        ({R.SUCCEEDED: 3, R.FAILED: 1}, S.FAILED),
        ({R.FAILED: 1, R.HALTED: 2}, S.HALTED),
        ({R.HALTED: 2, R.CANCELLED: 1, R.FAILED: 1}, S.CANCELLED),
        ({R.CANCELLED: 1}, S.CANCELLED),
    ],
)
def test_what_closes_a_rollout(counts: dict[RunStatus, int], closes_as: RolloutState | None) -> None:
    assert states.closing_state(counts) is closes_as


def test_a_halt_or_cancel_makes_of_waiting_runs() -> None:
    assert states.halted_run_status(S.HALTED) is R.HALTED
    assert states.halted_run_status(S.CANCELLED) is R.CANCELLED
