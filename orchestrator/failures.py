"""Classifying failures, and the backoff of transient ones: pure functions, unit-tested without servers.

Transient (retried within the attempt): lock timeout (SQLSTATE 55P03), deadlock (40P01), serialization
failure (40001), and a connection that failed before the migration started. A failure in the
migration's own SQL is never retried. A failure of tenantctl's own integration with ``env.py``
(``EnvIntegrationError``, wherever it sits in the chain: env.py may wrap it) is ``internal``: neither
the migration nor the user's settings are at fault, and retrying would fail the same way.
"""

from __future__ import annotations

import random

from sqlalchemy.exc import DBAPIError

from .exceptions import ConfigurationError, EnvIntegrationError, TenantLockTimeout, TenantUnreachable
from .models import ErrorClass

TRANSIENT_SQLSTATES = {"55P03": "lock timeout", "40P01": "deadlock", "40001": "serialization failure"}
TIMEOUT_SQLSTATES = {"57014"}  # query_canceled: statement_timeout


class UnitTimeout(Exception):
    """The tenant's migration ran past its task timeout."""


class Stopped(Exception):
    """The rollout was halted or cancelled between two migrations."""


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not e for e in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def timeout_in(exc: BaseException) -> BaseException | None:
    """The task timeout behind ``exc``, if any: interrupted mid-statement, the driver's own error on
    cleanup ("another command is already in progress") is what surfaces first."""
    return next(
        (
            e
            for e in _chain(exc)
            if isinstance(e, UnitTimeout) or e.__class__.__name__ == "SoftTimeLimitExceeded"
        ),
        None,
    )


def sqlstate(exc: BaseException) -> str | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError):
            code = getattr(current.orig, "sqlstate", None)
            if code:
                return str(code)
        code = getattr(current, "sqlstate", None)
        if isinstance(code, str):
            return code
        current = current.__cause__ or current.__context__
    return None


def classify(exc: BaseException) -> ErrorClass:
    if isinstance(exc, TenantLockTimeout):
        return ErrorClass.LOCK_TIMEOUT
    if isinstance(exc, TenantUnreachable):
        return ErrorClass.UNREACHABLE
    if isinstance(exc, ConfigurationError):
        return ErrorClass.INVALID_CONFIG
    if any(isinstance(e, EnvIntegrationError) for e in _chain(exc)):
        return ErrorClass.INTERNAL
    if timeout_in(exc) is not None:
        return ErrorClass.TIMEOUT
    code = sqlstate(exc)
    if code in TRANSIENT_SQLSTATES:
        return ErrorClass.TRANSIENT
    if code in TIMEOUT_SQLSTATES:
        return ErrorClass.TIMEOUT
    return ErrorClass.MIGRATION_ERROR


def is_transient(cls: ErrorClass) -> bool:
    return cls in (ErrorClass.TRANSIENT, ErrorClass.UNREACHABLE)


def backoff(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds before retry ``attempt`` (1-based): exponential, capped, with full jitter in [½, 1]."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    return float(ceiling * (0.5 + 0.5 * (rng or random).random()))
