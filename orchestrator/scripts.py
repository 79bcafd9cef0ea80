"""The tenants' Alembic scripts: loading them once, resolving revision specs, and the preflight checks
that refuse a rollout before any tenant is touched."""

from __future__ import annotations

import configparser
import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from types import CodeType

from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError

from .exceptions import ConfigurationError, PreflightRefused, UnknownRevision
from .models import Command

_RELATIVE = re.compile(r"^(?:[+-]\d+|.+[+-]\d+)$")


@dataclass(frozen=True, kw_only=True)
class Target:
    """A resolved revision spec. ``heads`` is the exact set of revisions a tenant has when it is at the
    target, or None for relative specs (``+1``, ``-1``, ``head-2``) whose end depends on the tenant."""

    spec: str
    heads: tuple[str, ...] | None

    @property
    def absolute(self) -> bool:
        return self.heads is not None

    def reached_by(self, current: tuple[str, ...]) -> bool:
        return self.heads is not None and set(current) == set(self.heads)

    def describe(self) -> str:
        if self.heads is None:
            return self.spec
        return ",".join(self.heads) or "base"


def config_path(path: Path) -> Path:
    if not path.is_file():
        raise ConfigurationError(
            f"Alembic config {str(path)!r} not found: "
            "set TENANTCTL_ALEMBIC_CONFIG to your tenants' alembic.ini"
        )
    return path.resolve()


@functools.lru_cache(maxsize=8)
def load(path: str) -> ScriptDirectory:
    """Load a script directory once per process: reading every revision file per tenant is the overhead
    that makes peer tools slow on large fleets."""
    try:
        script = ScriptDirectory.from_config(Config(path))
        script.revision_map.heads  # noqa: B018 - parse every revision file now, report errors here
    except (CommandError, SyntaxError, ImportError, KeyError, ValueError, configparser.Error) as exc:
        raise ConfigurationError(f"cannot load the Alembic scripts of {path}: {exc}") from exc
    return script


def run_env(script: ScriptDirectory) -> None:
    """``script.run_env()`` with env.py compiled once per process (again if the file changes): its module
    is still created and executed anew for every tenant, exactly as Alembic's loader does it."""
    path = Path(script.dir, "env.py")
    try:
        stat = path.stat()
    except OSError:  # a sourceless env.pyc, or none: Alembic's own loader decides
        script.run_env()
        return
    spec = importlib.util.spec_from_file_location("env_py", path)
    if spec is None:
        script.run_env()
        return
    module = importlib.util.module_from_spec(spec)
    exec(_env_code(str(path), stat.st_mtime_ns, stat.st_size), module.__dict__)


@functools.lru_cache(maxsize=8)
def _env_code(path: str, _mtime_ns: int, _size: int) -> CodeType:
    return compile(Path(path).read_bytes(), path, "exec", dont_inherit=True)


def scripts(path: Path) -> ScriptDirectory:
    return load(str(config_path(path)))


def resolve(script: ScriptDirectory, command: Command, spec: str) -> Target:
    """Resolve a revision spec as Alembic would, refusing ``head`` when the history has several heads."""
    spec = spec.strip()
    if not spec:
        raise UnknownRevision(spec, "empty revision")
    heads = tuple(sorted(script.get_heads()))
    if spec == "head" and len(heads) > 1:
        raise PreflightRefused(
            f"the scripts have {len(heads)} heads ({', '.join(heads)}): "
            "merge them (`alembic merge heads`) or name one revision"
        )
    if spec in ("head", "heads"):
        return Target(spec=spec, heads=heads)
    if spec == "base":
        return Target(spec=spec, heads=())
    if _RELATIVE.match(spec):
        _check_relative(script, spec)
        return Target(spec=spec, heads=None)
    try:
        revisions = script.get_revisions(spec)
    except CommandError as exc:
        raise UnknownRevision(spec, str(exc).splitlines()[0]) from exc
    if not revisions or any(r is None for r in revisions):
        raise UnknownRevision(spec, "no such revision in the scripts")
    return Target(spec=spec, heads=tuple(sorted(r.revision for r in revisions if isinstance(r, Script))))


def _check_relative(script: ScriptDirectory, spec: str) -> None:
    base = "" if spec[0] in "+-" else re.split(r"[+-]", spec, maxsplit=1)[0]
    if base and base not in ("head", "heads", "base"):
        try:
            script.get_revisions(base)
        except CommandError as exc:
            raise UnknownRevision(spec, str(exc).splitlines()[0]) from exc


def applied_between(
    script: ScriptDirectory, before: tuple[str, ...], after: tuple[str, ...]
) -> tuple[str, ...]:
    """The revisions crossed going from ``before`` to ``after``, in the order they ran (best effort:
    an empty tuple when the path is not a simple line)."""
    if set(before) == set(after) or len(before) > 1 or len(after) > 1:
        return ()
    b, a = (before[0] if before else None), (after[0] if after else None)
    try:
        if a is not None and (b is None or b in _ancestors(script, a)):
            return tuple(reversed(_chain(script, a, b)))
        if b is not None and (a is None or a in _ancestors(script, b)):
            return tuple(_chain(script, b, a))
    except CommandError:
        return ()
    return ()


def _ancestors(script: ScriptDirectory, rev: str) -> set[str]:
    return {s.revision for s in script.iterate_revisions(rev, "base")}


def _chain(script: ScriptDirectory, upper: str, lower: str | None) -> list[str]:
    revs = [s.revision for s in script.iterate_revisions(upper, "base")]
    return revs[: revs.index(lower)] if lower in revs else revs
