"""The tenants' Alembic history as a CI check sees it: every revision file loaded on its own, so that each
broken one is a problem of its own line instead of the first traceback; the graph's soundness (pure, over
what the files declare); and Alembic's own script verbs (``show``, ``branches``, ``history``).

Loading drives Alembic's own file discovery (``ScriptDirectory._version_locations``,
``Script._list_py_dir``, ``Script._from_path``: sourceless and recursive version locations behave as in
Alembic) one file at a time; ``tests/unit/test_check_history.py`` pins them.
"""

from __future__ import annotations

import ast
import configparser
import io
import traceback
import warnings
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import RevisionMap
from alembic.util import CommandError, to_tuple

from ..exceptions import ConfigurationError, UnknownRevision


class ProblemKind(Enum):
    """A structural problem: ``tenantctl check`` exits 3 on any."""

    IMPORT_FAILED = "import-failed"
    DUPLICATE_REVISION = "duplicate-revision"
    DANGLING_REFERENCE = "dangling-reference"
    BROKEN_GRAPH = "broken-graph"  # what Alembic refuses beyond the above: a cycle, a branch label twice
    NO_REVISION = "no-revision"
    MULTIPLE_HEADS = "multiple-heads"


@dataclass(frozen=True, kw_only=True)
class Problem:
    kind: ProblemKind
    message: str
    revision: str | None = None
    path: str | None = None


@dataclass(frozen=True, kw_only=True)
class Declared:
    """What one revision file declares."""

    revision: str
    down_revisions: tuple[str, ...]
    depends_on: tuple[str, ...]
    branch_labels: tuple[str, ...]
    path: str


@dataclass(frozen=True, kw_only=True)
class Broken:
    """A revision file that failed to import; ``revision`` read from its text without running it."""

    path: str
    revision: str | None
    error: str


@dataclass(frozen=True, kw_only=True)
class Loaded:
    script: ScriptDirectory
    scripts: tuple[Script, ...]
    broken: tuple[Broken, ...]

    @property
    def declared(self) -> tuple[Declared, ...]:
        return tuple(
            Declared(
                revision=s.revision,
                down_revisions=to_tuple(s.down_revision, default=()),
                depends_on=to_tuple(s.dependencies, default=()),
                branch_labels=tuple(s.branch_labels),
                path=s.path,
            )
            for s in self.scripts
        )


def load(ini: Path) -> Loaded:
    """Import every revision file of the history, each on its own; a file that fails is kept as Broken."""
    try:
        script = ScriptDirectory.from_config(Config(str(ini)))
        locations = [Path(str(v)) for v in script._version_locations]
    except (CommandError, configparser.Error, KeyError, ValueError) as exc:
        raise ConfigurationError(f"cannot load the Alembic scripts of {ini}: {_first_line(exc)}") from exc
    loaded: list[Script] = []
    broken: list[Broken] = []
    seen: set[Path] = set()
    for location in locations:
        if not location.is_dir():
            continue
        for found in Script._list_py_dir(script, location):
            path = Path(found).resolve()
            if path in seen:
                continue
            seen.add(path)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a file's own import-time warnings are not ours
                    revision = Script._from_path(script, str(path))
            except Exception as exc:  # a revision file's import may raise anything
                broken.append(
                    Broken(path=str(path), revision=declared_revision(path), error=_error(exc, path))
                )
                continue
            if revision is not None:
                loaded.append(revision)
    return Loaded(script=script, scripts=tuple(loaded), broken=tuple(broken))


def declared_revision(path: Path) -> str | None:
    """``revision = "…"`` of a file that cannot be imported, read from its syntax tree, never run."""
    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        target = value = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and target.id == "revision" and isinstance(value, ast.Constant):
            return str(value.value)
    return None


def _error(exc: BaseException, path: Path) -> str:
    """``ModuleNotFoundError: No module named 'x' (line 14)``: the class, the first line, the line of the
    file where it was raised."""
    line = exc.lineno if isinstance(exc, SyntaxError) else None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno
    return f"{type(exc).__name__}: {_first_line(exc)}" + (f" (line {line})" if line else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def graph_problems(declared: Sequence[Declared], broken: Sequence[Broken]) -> list[Problem]:
    """Files that do not import, revision ids claimed twice, references to no revision (pure). A
    reference to a revision whose file failed to import is not repeated: that file's line says it."""
    problems = [
        Problem(
            kind=ProblemKind.IMPORT_FAILED,
            revision=b.revision,
            path=b.path,
            message=f"cannot import{f' revision {b.revision}' if b.revision else ''}: {b.error}",
        )
        for b in broken
    ]
    paths: dict[str, list[str]] = defaultdict(list)
    for d in declared:
        paths[d.revision].append(d.path)
    for revision, where in paths.items():
        if len(where) > 1:
            problems.append(
                Problem(
                    kind=ProblemKind.DUPLICATE_REVISION,
                    revision=revision,
                    path=where[0],
                    message=f"revision {revision} is declared by {len(where)} files: "
                    + ", ".join(Path(p).name for p in where),
                )
            )
    known = set(paths) | {b.revision for b in broken if b.revision}
    labels = {label for d in declared for label in d.branch_labels}
    for d in declared:
        for down in d.down_revisions:
            if down not in known:
                problems.append(_dangling(d, f"down_revision {down!r} is not a revision of the history"))
        for dep in d.depends_on:
            if dep not in known and dep not in labels:
                problems.append(_dangling(d, f"depends_on {dep!r} is neither a revision nor a branch label"))
    return problems


def _dangling(d: Declared, what: str) -> Problem:
    return Problem(
        kind=ProblemKind.DANGLING_REFERENCE, revision=d.revision, path=d.path, message=f"{d.revision}: {what}"
    )


def revision_map(loaded: Loaded) -> Problem | None:
    """Give the script directory the revisions already loaded (not read again) and let Alembic build its
    map: what it still refuses (a cycle, a branch label used twice) is one problem."""
    scripts = loaded.scripts
    loaded.script.revision_map = RevisionMap(lambda: iter(scripts))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loaded.script.revision_map.heads  # noqa: B018 - builds the map
    except Exception as exc:  # RevisionError, CycleDetected, a warning made an error
        return Problem(
            kind=ProblemKind.BROKEN_GRAPH, message=f"Alembic refuses the graph: {_first_line(exc)}"
        )
    return None


def head_problems(
    heads: Sequence[str], declared: Sequence[Declared], merge: Callable[[Sequence[str]], str]
) -> list[Problem]:
    """Exactly one head: otherwise one problem per head, with where it branches off and the command that
    joins them (pure)."""
    if not heads:
        return [Problem(kind=ProblemKind.NO_REVISION, message="the history has no revision")]
    if len(heads) == 1:
        return []
    parents = {d.revision: d.down_revisions for d in declared}
    path = {d.revision: d.path for d in declared}
    ordered = sorted(heads)
    problems = []
    for head in ordered:
        others = set().union(*(ancestry(parents, h) for h in ordered if h != head))
        point = branch_point(parents, head, others)
        where = f"branching from {point}" if point else "with no revision in common with the others"
        problems.append(
            Problem(
                kind=ProblemKind.MULTIPLE_HEADS,
                revision=head,
                path=path.get(head),
                message=f"{head} is one of {len(heads)} heads ({', '.join(ordered)}), {where}; "
                f"join them: {merge(ordered)}",
            )
        )
    return problems


def ancestry(parents: Mapping[str, Sequence[str]], revision: str) -> set[str]:
    """``revision`` and every revision below it, through down revisions."""
    seen = {revision}
    todo = [revision]
    while todo:
        for down in parents.get(todo.pop(), ()):
            if down not in seen:
                seen.add(down)
                todo.append(down)
    return seen


def branch_point(parents: Mapping[str, Sequence[str]], head: str, others: set[str]) -> str | None:
    """The nearest revision below ``head`` that another head shares (breadth first, nearest wins)."""
    queue = deque(parents.get(head, ()))
    seen: set[str] = set()
    while queue:
        revision = queue.popleft()
        if revision in others:
            return revision
        if revision not in seen:
            seen.add(revision)
            queue.extend(parents.get(revision, ()))
    return None


def topological(declared: Iterable[Declared]) -> list[Declared]:
    """Base first: each revision after all its down revisions (the graph is sound here)."""
    by_id = {d.revision: d for d in declared}
    done: set[str] = set()
    order: list[Declared] = []

    def visit(revision: str) -> None:
        stack = [(revision, False)]
        while stack:
            rev, expanded = stack.pop()
            if rev in done or rev not in by_id:
                continue
            if expanded:
                done.add(rev)
                order.append(by_id[rev])
                continue
            stack.append((rev, True))
            stack.extend((down, False) for down in reversed(by_id[rev].down_revisions) if down not in done)

    for revision in sorted(by_id):
        visit(revision)
    return order


# Alembic's own script verbs, printing through Config.print_stdout into a buffer.


def _alembic_verb(ini: Path, run: Callable[[Config], None], spec: str) -> str:
    buffer = io.StringIO()
    cfg = Config(str(ini), stdout=buffer)
    try:
        run(cfg)
    except CommandError as exc:
        raise UnknownRevision(spec, _first_line(exc)) from exc
    except (SyntaxError, ImportError, KeyError, ValueError, configparser.Error) as exc:
        raise ConfigurationError(
            f"cannot load the Alembic scripts of {ini}: {_first_line(exc)} (`tenantctl check` lists every "
            "problem of the history)"
        ) from exc
    return buffer.getvalue()


def show(ini: Path, revision: str) -> str:
    """``alembic show REV``: the revision's id, parents, path and docstring."""
    return _alembic_verb(ini, lambda cfg: command.show(cfg, revision), revision)


def branches(ini: Path, *, verbose: bool = False) -> str:
    """``alembic branches``: every branch point and the revisions that leave it."""
    return _alembic_verb(ini, lambda cfg: command.branches(cfg, verbose=verbose), "branches")


def history(ini: Path, rev_range: str | None, *, verbose: bool = False) -> str:
    """``alembic history -r A:B [-v]`` over the scripts only: ``current`` would need a tenant's database
    (``tenantctl current`` reads those)."""
    if rev_range is not None and rev_range.count(":") != 1:
        raise UnknownRevision(rev_range, "a range is [START]:[END], e.g. 0002:head, 0002: or :0003")
    if rev_range is not None and "current" in rev_range.split(":"):
        raise UnknownRevision(
            rev_range, "history reads the scripts only; `tenantctl current` reads the tenants' revisions"
        )
    return _alembic_verb(
        ini, lambda cfg: command.history(cfg, rev_range, verbose=verbose), rev_range or "history"
    )
