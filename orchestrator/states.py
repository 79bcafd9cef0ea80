"""The life of a tenant run and of a rollout: which transitions are allowed and what closes a rollout.

Pure data and functions, unit-tested without a server; the store applies them (every state change is a
compare-and-set whose ``WHERE status IN (…)`` comes from :func:`run_sources` / :func:`rollout_sources`),
so no path of the code can move a run or a rollout in a way this module does not allow.

A run::

    queued ──claim──▶ running ──unit ends──▶ succeeded | failed | skipped
       │                 │                   halted | cancelled   (stopped between two migrations)
       │                 └──lease expired, judged by the reaper──▶ succeeded | failed (lost)
       ├──halt / cancel──▶ halted | cancelled ──resume (never started)──▶ queued
       └──claim finds it unusable──▶ failed ;  halted ──cancel──▶ cancelled

A run at rest never moves again except a never-started halted or cancelled one (``resume``): a retry
is a new attempt, a new row. A rollout::

    running ──nothing queued or running──▶ succeeded | failed | halted | cancelled   (closed)
    running ──halt (budget, canary, Ctrl-C, coordinator lost)──▶ halted ──cancel──▶ cancelled
    halted | cancelled ──resume──▶ running ;  any state ──retry──▶ running
"""

from __future__ import annotations

from collections.abc import Mapping

from .models import RolloutState, RunStatus

_R = RunStatus
RUN_TRANSITIONS: Mapping[RunStatus, frozenset[RunStatus]] = {
    _R.QUEUED: frozenset({_R.RUNNING, _R.HALTED, _R.CANCELLED, _R.FAILED}),
    _R.RUNNING: frozenset({_R.SUCCEEDED, _R.FAILED, _R.SKIPPED, _R.HALTED, _R.CANCELLED}),
    _R.HALTED: frozenset({_R.QUEUED, _R.CANCELLED}),
    _R.CANCELLED: frozenset({_R.QUEUED}),
    _R.SUCCEEDED: frozenset(),
    _R.FAILED: frozenset(),
    _R.SKIPPED: frozenset(),
}
"""Every allowed move of one run (attempt); anything else is refused."""

ACTIVE: tuple[RunStatus, ...] = (_R.QUEUED, _R.RUNNING)
"""A run that holds its tenant: at most one per tenant across all rollouts (a partial unique index)."""

_S = RolloutState
ROLLOUT_TRANSITIONS: Mapping[RolloutState, frozenset[RolloutState]] = {
    _S.RUNNING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.HALTED, _S.CANCELLED}),
    _S.HALTED: frozenset({_S.RUNNING, _S.CANCELLED, _S.SUCCEEDED, _S.FAILED}),
    _S.CANCELLED: frozenset({_S.RUNNING, _S.SUCCEEDED, _S.FAILED}),
    _S.SUCCEEDED: frozenset({_S.RUNNING}),
    _S.FAILED: frozenset({_S.RUNNING}),
}
"""Every allowed move of a rollout. A halted or cancelled rollout may still close as succeeded or
failed: its last running runs can end after the halt, leaving nothing waiting for ``resume``."""

RESUMABLE: tuple[RolloutState, ...] = (_S.HALTED, _S.CANCELLED)


def run_may(source: RunStatus, target: RunStatus) -> bool:
    return target in RUN_TRANSITIONS[source]


def run_sources(target: RunStatus) -> tuple[RunStatus, ...]:
    """The statuses a run may reach ``target`` from: the ``WHERE status IN`` of a compare-and-set."""
    return tuple(s for s in RunStatus if target in RUN_TRANSITIONS[s])


def rollout_may(source: RolloutState, target: RolloutState) -> bool:
    return target in ROLLOUT_TRANSITIONS[source]


def rollout_sources(target: RolloutState) -> tuple[RolloutState, ...]:
    return tuple(s for s in RolloutState if target in ROLLOUT_TRANSITIONS[s])


def closing_sources(state: RolloutState) -> tuple[RolloutState, ...]:
    """The states an open rollout may close in ``state`` from (a halted one may also close halted)."""
    return tuple(s for s in (_S.RUNNING, *RESUMABLE) if s is state or rollout_may(s, state))


def halted_run_status(state: RolloutState) -> RunStatus:
    """What a halt or a cancel makes of the runs that have not started."""
    return _R.CANCELLED if state is _S.CANCELLED else _R.HALTED


def closing_state(counts: Mapping[RunStatus, int]) -> RolloutState | None:
    """The state a rollout closes in, given its runs' latest attempts by status; None while any is still
    queued or running. Waiting runs win (cancelled, then halted: ``resume`` is owed), then failures."""
    if any(counts.get(s, 0) for s in ACTIVE):
        return None
    for status, state in (
        (_R.CANCELLED, _S.CANCELLED),
        (_R.HALTED, _S.HALTED),
        (_R.FAILED, _S.FAILED),
    ):
        if counts.get(status, 0):
            return state
    return _S.SUCCEEDED
