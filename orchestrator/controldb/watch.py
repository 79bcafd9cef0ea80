"""A unit of work's window on its rollout: is it still running? Read between two migrations, from the
worker process, over one small sync connection opened on first use (so a one-step unit opens none)."""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from .schema import rollouts


class RolloutWatch:
    def __init__(self, control_url: str, rollout_id: int) -> None:
        url = make_url(control_url)
        driver = "postgresql+psycopg" if url.get_backend_name() == "postgresql" else "sqlite"
        self._url = url.set(drivername=driver)
        self._rollout_id = rollout_id
        self._engine: sa.Engine | None = None
        self._conn: Connection | None = None
        self._last: tuple[float, str] | None = None

    def state(self, max_age: float = 0.0) -> str | None:
        """The rollout's state, or None when the control DB could not be read; a state read less than
        ``max_age`` seconds ago is answered again without a query."""
        if self._last is not None and time.monotonic() - self._last[0] < max_age:
            return self._last[1]
        value = self._read()
        self._last = None if value is None else (time.monotonic(), value)
        return value

    def _read(self) -> str | None:
        try:
            if self._conn is None:
                self._engine = sa.create_engine(self._url, poolclass=NullPool)
                self._conn = self._engine.connect()
            value = self._conn.execute(
                sa.select(rollouts.c.state).where(rollouts.c.id == self._rollout_id)
            ).scalar()
            self._conn.rollback()
        except SQLAlchemyError:
            return None  # the control DB is unreachable: keep going rather than stop a healthy migration
        return None if value is None else str(value)

    def running(self) -> bool:
        return self.state() in (None, "running")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._engine is not None:
            self._engine.dispose()
