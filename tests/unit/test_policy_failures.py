from __future__ import annotations

import random

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from orchestrator.exceptions import EnvIntegrationError, TenantLockTimeout, UserError
from orchestrator.failures import UnitTimeout, backoff, classify, is_transient
from orchestrator.models import Command, ErrorClass, Policy, RunStatus, Tenant
from orchestrator.policy import CANARY_WAVE, assign_waves, decide, parse_rate
from orchestrator.preview import PreviewRow, Step, group, steps_for
from tests.conftest import MIGRATIONS_INI

Q, R, S, F, H = RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.HALTED


def _tenants(n: int, tagged: tuple[int, ...] = ()) -> list[Tenant]:
    return [Tenant(id=f"t{i}", url="sqlite:///x", tags=("beta",) if i in tagged else ()) for i in range(n)]


def test_waves_canary_first_then_batches() -> None:
    waves = assign_waves(_tenants(7), Policy(canary=2, batch_size=2))
    assert waves == {"t0": 0, "t1": 0, "t2": 1, "t3": 1, "t4": 2, "t5": 2, "t6": 3}
    assert set(assign_waves(_tenants(3), Policy()).values()) == {1}
    assert assign_waves(_tenants(4, tagged=(2,)), Policy(canary_tag="beta"))["t2"] == CANARY_WAVE
    with pytest.raises(UserError, match="no selected tenant"):
        assign_waves(_tenants(2), Policy(canary_tag="beta"))


def test_a_wave_opens_only_when_earlier_ones_rest() -> None:
    assert decide(Policy(), [(0, R), (1, Q)], 2).open_wave is None
    assert decide(Policy(), [(0, S), (1, Q), (1, R)], 3).open_wave == 1
    assert decide(Policy(), [(1, S), (2, Q)], 2).open_wave == 2
    assert decide(Policy(), [(1, S)], 1) == decide(Policy(), [], 0)


def test_canary_failure_halts() -> None:
    d = decide(Policy(canary=2), [(0, F), (0, S), (1, Q)], 3)
    assert d.halt == "canary failed: 1 of 2 canary tenants failed" and d.open_wave is None


def test_failure_budgets() -> None:
    assert decide(Policy(max_failures=2), [(1, F), (1, Q)], 2).halt is None
    assert "2 tenants failed" in (decide(Policy(max_failures=2), [(1, F), (1, F), (1, Q)], 3).halt or "")
    assert decide(Policy(max_failure_rate=0.25), [(1, F)] + [(1, Q)] * 3, 4).halt is None  # 25% is not > 25%
    assert decide(Policy(max_failure_rate=0.25), [(1, F)] * 2 + [(1, Q)] * 2, 4).halt


@pytest.mark.parametrize(
    ("raw", "value"), [("5%", 0.05), ("5", 0.05), ("0.05", 0.05), ("100%", 1.0), ("0", 0.0)]
)
def test_parse_rate(raw: str, value: float) -> None:
    assert parse_rate(raw) == pytest.approx(value)


@pytest.mark.parametrize("raw", ["abc", "150%", "-1"])
def test_parse_rate_rejects(raw: str) -> None:
    with pytest.raises(UserError):
        parse_rate(raw)


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (_PgError("55P03"), ErrorClass.TRANSIENT),
        (_PgError("40P01"), ErrorClass.TRANSIENT),
        (_PgError("40001"), ErrorClass.TRANSIENT),
        (_PgError("57014"), ErrorClass.TIMEOUT),
        (_PgError("42P07"), ErrorClass.MIGRATION_ERROR),
        (RuntimeError("boom"), ErrorClass.MIGRATION_ERROR),
        (UnitTimeout("late"), ErrorClass.TIMEOUT),
        (TenantLockTimeout("t", "held"), ErrorClass.LOCK_TIMEOUT),
        (EnvIntegrationError("outside a unit"), ErrorClass.INTERNAL),
    ],
)
def test_classify(exc: Exception, cls: ErrorClass) -> None:
    assert classify(exc) is cls


def test_classify_follows_the_cause_chain() -> None:
    try:
        try:
            raise _PgError("40P01")
        except _PgError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert classify(outer) is ErrorClass.TRANSIENT
    assert is_transient(ErrorClass.TRANSIENT) and not is_transient(ErrorClass.MIGRATION_ERROR)


def test_an_env_integration_error_is_internal_even_wrapped_by_env_py() -> None:
    """env.py may catch what tenantctl raised and raise its own: the cause still decides, and it is
    neither the migration's fault nor transient."""
    try:
        try:
            raise EnvIntegrationError("a connection opened outside a unit")
        except EnvIntegrationError as inner:
            raise RuntimeError("could not connect") from inner
    except RuntimeError as outer:
        assert classify(outer) is ErrorClass.INTERNAL
    assert not is_transient(ErrorClass.INTERNAL)


def test_backoff_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    values = [backoff(n, 1.0, 8.0, rng) for n in range(1, 8)]
    assert all(0.5 * min(8.0, 2 ** (n - 1)) <= v <= min(8.0, 2 ** (n - 1)) for n, v in enumerate(values, 1))
    assert max(values) <= 8.0 and len(set(values)) == len(values)


def test_steps_for_each_command() -> None:
    script = ScriptDirectory.from_config(Config(str(MIGRATIONS_INI)))
    assert steps_for(script, Command.UPGRADE, "head", ()) == Step(
        from_revision=None, to_revision="0004", steps=4
    )
    assert steps_for(script, Command.UPGRADE, "+1", ("0002",)).to_revision == "0003"
    assert steps_for(script, Command.DOWNGRADE, "base", ("0002",)) == Step(
        from_revision="0002", to_revision=None, steps=2
    )
    assert steps_for(script, Command.STAMP, "0001", ("0004",)).steps == 0
    assert steps_for(script, Command.UPGRADE, "head", ("0004",)).steps == 0


def test_group_lines() -> None:
    rows = [
        PreviewRow(tenant="a", schema=None, step=Step(from_revision="0003", to_revision="0004", steps=1)),
        PreviewRow(tenant="b", schema=None, step=Step(from_revision="0003", to_revision="0004", steps=1)),
        PreviewRow(
            tenant="c",
            schema=None,
            step=Step(from_revision=None, to_revision=None, steps=0),
            error="cannot read revision: refused",
        ),
    ]
    assert [g["summary"] for g in group(rows)] == [
        "2 tenants 0003→0004 (1 step)",
        "1 tenant not plannable (cannot read revision)",
    ]


def test_gated() -> None:
    from orchestrator.policy import gated

    assert not gated(Policy()) and not gated(Policy(lock_timeout=3, task_timeout=9))
    assert gated(Policy(canary=1)) and gated(Policy(batch_size=5)) and gated(Policy(max_failures=1))
    assert gated(Policy(max_failure_rate=0.0)) and gated(Policy(canary_tag="beta"))


def test_next_poll_comes_sooner_when_the_runs_left_should_be_done_before_it() -> None:
    from orchestrator.runs import TAIL_POLL, next_poll

    assert next_poll(0.5, 100, 40.0) == 0.5  # 2.5 s of work left: the usual interval
    assert next_poll(0.5, 11, 44.0) == pytest.approx(0.25)  # done in a quarter second: look then
    assert next_poll(0.5, 1, 50.0) == TAIL_POLL  # never more often than the tail poll
    assert next_poll(0.5, 5, 0.0) == 0.5  # no rate yet
