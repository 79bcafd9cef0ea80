"""Reading tenant files (YAML, JSON or CSV) into validated specs, each row tied to its line so that a bad
row can be named. Pure parsing: nothing here touches the registry.

Whatever is wrong with a file, the caller gets one ImportFileError naming the file, the line where it can
tell, and the problem; never a parser's traceback. YAML is read with the safe loader and tags beyond
plain YAML are refused by name, so ``!!python/object/apply:…`` is neither run nor half-understood.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import validation
from .exceptions import ImportFileError, InvalidTenant
from .models import TenantSpec
from .secrets import mask_text

if TYPE_CHECKING:
    import yaml

FIELDS = ("id", "url", "schema", "tags", "group", "enabled")
_TRUE = {"true", "yes", "1", "on", "y"}
_FALSE = {"false", "no", "0", "off", "n", ""}
_BOM = b"\xef\xbb\xbf"
_YAML_TAG = "tag:yaml.org,2002:"
_STR, _BOOL, _NULL, _MAP, _SEQ = (f"{_YAML_TAG}{kind}" for kind in ("str", "bool", "null", "map", "seq"))
_JSON_SPACE = " \t\r\n"

Rows = list[tuple[int, Any]]


@dataclass(frozen=True, kw_only=True)
class ExtraColumns:
    """Columns beyond the tenant fields that a source maps onto them: each of ``tags`` adds its value as
    one tag (a list value, one tag per item), ``group`` sets the group. A customers table rarely names
    its columns after tenantctl's fields; this saves rewriting every export or query around them."""

    tags: tuple[str, ...] = ()
    group: str | None = None

    def names(self) -> set[str]:
        return {*self.tags, *((self.group,) if self.group else ())}

    def problem(self, columns: Sequence[str], *, rows: bool = True) -> str | None:
        """Why these extra columns cannot be used with a source of ``columns``, or None. A source without
        ``rows`` (YAML or JSON, where the columns are the keys of its rows) cannot lack a column."""
        fields = sorted(self.names() & set(FIELDS))
        if fields:
            return f"column {fields[0]!r} is a tenant field: it cannot also be a tag or group column"
        for name in [*self.tags, *((self.group,) if self.group else ())]:
            if rows and name not in columns:
                return f"no column {name!r} for --{'group' if name == self.group else 'tag'}-column"
        if self.group and "group" in columns:
            return f"both a 'group' column and --group-column {self.group!r}: keep one"
        return None


NO_EXTRA = ExtraColumns()


FORMATS = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".csv": "csv"}


def read(path: Path, extra: ExtraColumns = NO_EXTRA) -> list[TenantSpec]:
    """Parse and validate a whole tenant file; raises ImportFileError naming the first bad line."""
    name = str(path)
    text = _text(name, path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        if not text.strip():
            raise ImportFileError(name, None, "the file is empty: expected a list of tenants")
        raise ImportFileError(name, None, "unknown file type: use .yaml, .yml, .json or .csv")
    return parse(text, fmt, name, extra)


def parse(text: str, fmt: str, name: str = "<body>", extra: ExtraColumns = NO_EXTRA) -> list[TenantSpec]:
    """Parse and validate tenants from text in ``fmt`` (``yaml``, ``json`` or ``csv``): an import
    file, or the body of ``POST /api/v1/tenants/import``; errors name ``name`` and the line."""
    with collector_paused():
        return _parse(text, fmt, name, extra)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused for a burst of acyclic objects, then as it was. A YAML
    file of 10,000 tenants composes into half a million nodes and marks, and each full collection
    walked them all again: reading it took 1.5 s of CPU with the collector running, 0.7 s without."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse(text: str, fmt: str, name: str, extra: ExtraColumns) -> list[TenantSpec]:
    if not text.strip():
        raise ImportFileError(name, None, "the file is empty: expected a list of tenants")
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ImportFileError(name, line, "a NUL byte: not a text file")
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if fmt == "yaml":
        rows = _yaml_rows(name, text)
    elif fmt == "json":
        rows = _json_rows(name, text)
    elif fmt == "csv":
        rows = _csv_rows(name, text, extra)
    else:
        raise ImportFileError(name, None, f"unknown format {fmt!r}: use yaml, json or csv")
    specs: list[TenantSpec] = []
    seen: dict[str, int] = {}
    if extra.names() and fmt != "csv":
        keys = sorted({str(k) for _, row in rows if isinstance(row, Mapping) for k in row})
        problem = extra.problem(keys, rows=bool(rows))
        if problem:
            raise ImportFileError(name, None, problem)
    for line, row in rows:
        spec = _spec(name, line, row, extra)
        if spec.id in seen:
            raise ImportFileError(
                name, line, f"tenant {spec.id!r} appears twice (first on line {seen[spec.id]})"
            )
        seen[spec.id] = line
        specs.append(spec)
    return specs


def _text(name: str, path: Path) -> str:
    """The file as text, UTF-8 (a BOM is allowed), line ends made ``\\n`` as ``read_text`` would."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImportFileError(name, None, "no such file") from None
    except IsADirectoryError:
        raise ImportFileError(name, None, "a directory, not a file") from None
    except PermissionError:
        raise ImportFileError(name, None, "permission denied") from None
    except OSError as exc:
        raise ImportFileError(name, None, f"cannot read: {exc.strerror or exc.__class__.__name__}") from None
    data = data.removeprefix(_BOM)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        reason = f"not UTF-8 text (byte 0x{data[exc.start]:02x}): save the file as UTF-8"
        raise ImportFileError(name, line, reason) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _spec(name: str, line: int, row: Any, extra: ExtraColumns) -> TenantSpec:
    try:
        return spec_from_row(row, extra)
    except (InvalidTenant, ValueError) as exc:
        raise ImportFileError(name, line, mask_text(str(exc))) from exc


def spec_from_row(row: Any, extra: ExtraColumns = NO_EXTRA) -> TenantSpec:
    """One row of any source (a file's item, a query's row) as a validated spec. The one place rows are
    checked, so a file and a live source refuse the same things; raises InvalidTenant or ValueError with
    the problem, which the caller ties to the row's line or number."""
    if not isinstance(row, Mapping):
        raise ValueError("each tenant must be a mapping of fields")
    unknown = sorted(set(map(str, row)) - set(FIELDS) - extra.names())
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})")
    for required in ("id", "url"):
        if row.get(required) in (None, ""):
            raise ValueError(f"missing field {required!r}")
        if not isinstance(row[required], str):
            kind = type(row[required]).__name__
            raise ValueError(f"field {required!r} must be text, not {kind}")
    tags = _tags(row.get("tags"))
    for column in extra.tags:
        tags += _column_tags(column, row.get(column))
    group_field = extra.group or "group"
    return validation.spec(
        TenantSpec(
            id=row["id"],
            url=row["url"],
            schema=_optional_str("schema", row.get("schema")),
            tags=tags,
            group=_optional_str(group_field, row.get(group_field)),
            enabled=_bool(row.get("enabled", True)),
        )
    )


def _column_tags(column: str, value: Any) -> tuple[str, ...]:
    """A tag column's value is one tag, never split: ``gold plan`` is refused, not read as two tags."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(t, str) for t in value):
        return tuple(t for t in value if t)
    raise ValueError(f"tag column {column!r} must hold text or a list of text, not {type(value).__name__}")


def _optional_str(field: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"field {field!r} must be text, not {type(value).__name__}")
    return value


def _tags(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(t for t in value.replace(",", " ").replace(";", " ").split() if t)
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return tuple(value)
    raise ValueError("tags must be a list of strings")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"enabled must be true or false, got {value!r}")


def _yaml_rows(name: str, text: str) -> Rows:
    """Each list item with its line. Nodes are composed first and built one by one, so an error (a tag
    the safe loader refuses) is tied to the item that holds it. Composed by libyaml when PyYAML was
    built with it (10,000 rows: 6.7 s of CPU in pure Python, 1.2 s in libyaml); imported here, so that
    reading JSON or CSV does not load PyYAML."""
    import yaml

    try:
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        if root is None:
            raise ImportFileError(name, None, "the file holds no YAML document: expected a list of tenants")
        if isinstance(root, yaml.MappingNode) and len(root.value) == 1:
            key, value = root.value[0]
            if key.value == "tenants":
                _plain_yaml_tag(name, root)
                root = value
        if not isinstance(root, yaml.SequenceNode):
            raise ImportFileError(name, root.start_mark.line + 1, "expected a list of tenants")
        _plain_yaml_tag(name, root)
        loader = yaml.SafeLoader("")
        rows: Rows = []
        for node in root.value:
            try:
                rows.append((node.start_mark.line + 1, _yaml_value(node, loader)))
            except (ValueError, KeyError, TypeError, AttributeError):  # `!!bool maybe`, `!!int x`
                line = node.start_mark.line + 1
                raise ImportFileError(
                    name, line, "not valid YAML: a value that its tag does not allow"
                ) from None
        return rows
    except yaml.MarkedYAMLError as exc:
        mark = exc.context_mark or exc.problem_mark
        raise ImportFileError(name, mark.line + 1 if mark else None, _yaml_problem(exc)) from None
    except yaml.YAMLError as exc:
        raise ImportFileError(name, None, f"not valid YAML: {exc}") from None
    except RecursionError:
        raise ImportFileError(name, None, "not valid YAML: nested too deeply") from None


def _yaml_value(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    """What the safe loader constructs from ``node``, built directly for what tenant files hold (plain
    maps and lists of text, booleans and nulls, resolved by the composer): a tenant took 25 to 35 µs
    through the loader's generic construction, 3 to 4 µs here. Any other node (a number, a merge key, a
    tag beyond these, a tag on the wrong kind of node) goes to the loader itself, which builds or
    refuses it."""
    import yaml

    tag = node.tag
    if isinstance(node, yaml.ScalarNode):
        if tag == _STR:
            return node.value
        if tag == _BOOL:
            return loader.bool_values[node.value.lower()]
        if tag == _NULL:
            return None
    elif isinstance(node, yaml.MappingNode) and tag == _MAP:
        mapping: dict[str, Any] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag != _STR:
                break
            mapping[key.value] = _yaml_value(value, loader)
        else:
            return mapping
    elif isinstance(node, yaml.SequenceNode) and tag == _SEQ:
        return [_yaml_value(item, loader) for item in node.value]
    return loader.construct_object(node, deep=True)


def _plain_yaml_tag(name: str, node: yaml.Node) -> None:
    if node.tag not in (f"{_YAML_TAG}seq", f"{_YAML_TAG}map"):
        raise ImportFileError(name, node.start_mark.line + 1, _unsupported_tag(node.tag))


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    import yaml

    problem = exc.problem or ""
    if isinstance(exc, yaml.constructor.ConstructorError) and "constructor for the tag" in problem:
        tag = re.search(r"'([^']*)'", problem)
        return _unsupported_tag(tag[1] if tag else "?")
    said = ", ".join(part for part in (exc.context, problem) if part)
    return f"not valid YAML: {said}" if said else "not valid YAML"


def _unsupported_tag(tag: str) -> str:
    shown = "!!" + tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else tag
    return f"unsupported YAML tag {shown!r}: tenant files are plain YAML"


def _json_rows(name: str, text: str) -> Rows:
    """JSON rows with their line: the list is scanned element by element with raw_decode."""
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ImportFileError(name, exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    except _DuplicateKey as exc:
        raise ImportFileError(
            name, None, f"not valid JSON: key {exc.key!r} appears twice in an object"
        ) from None
    except RecursionError:
        raise ImportFileError(name, None, "not valid JSON: nested too deeply") from None
    wrapped = isinstance(data, dict) and set(data) == {"tenants"}
    if wrapped:
        data = data["tenants"]
    if not isinstance(data, list):
        raise ImportFileError(name, 1, "expected a list of tenants")
    decoder = json.JSONDecoder()
    pos = _json_skip(text, 0)
    if wrapped:  # past `{`, the key and `:`; json.loads has checked the shape already
        _key, pos = decoder.raw_decode(text, _json_skip(text, pos + 1))
        pos = _json_skip(text, _json_skip(text, pos) + 1)
    pos += 1  # past `[`
    rows: Rows = []
    line, counted = 1, 0  # lines are counted on from the previous row: from the top was quadratic
    for _ in data:
        pos = _json_skip(text, pos, ",")
        value, end = decoder.raw_decode(text, pos)
        line += text.count("\n", counted, pos)
        counted = pos
        rows.append((line, value))
        pos = end
    return rows


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Python's json keeps the last of two equal keys silently; a tenant file with ``"url"`` twice is a
    mistake to show, not to guess at."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _json_skip(text: str, pos: int, also: str = "") -> int:
    while text[pos] in _JSON_SPACE + also:
        pos += 1
    return pos


def _csv_rows(name: str, text: str, extra: ExtraColumns = NO_EXTRA) -> Rows:
    """Rows keyed by the header's columns, each with the line it starts on. The header is checked on its
    own (a file without one, or with a misspelt column, is named at line 1) and the reader is strict, so
    a stray or unclosed quote is an error at its row rather than a field that swallows the file."""
    reader = csv.reader(io.StringIO(text), strict=True)
    start = 1
    try:
        columns = [c.strip() for c in next(reader)]
        _check_header(name, columns, extra)
        start = reader.line_num + 1
        rows: Rows = []
        for values in reader:
            if any(v.strip() for v in values):
                rows.append((start, _csv_row(name, start, columns, values)))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ImportFileError(name, start, f"not valid CSV: {exc}") from None
    return rows


def _check_header(name: str, columns: list[str], extra: ExtraColumns) -> None:
    named = [c for c in columns if c]
    unknown = [c for c in named if c not in FIELDS and c not in extra.names()]
    if unknown:
        raise ImportFileError(
            name, 1, f"unknown column {unknown[0]!r}: the first line names the columns ({', '.join(FIELDS)})"
        )
    twice = sorted({c for c in named if named.count(c) > 1})
    if twice:
        raise ImportFileError(name, 1, f"column {twice[0]!r} appears twice")
    missing = [c for c in ("id", "url") if c not in named]
    if missing:
        raise ImportFileError(name, 1, f"missing column {missing[0]!r} (columns: {', '.join(FIELDS)})")
    problem = extra.problem(named)
    if problem:
        raise ImportFileError(name, 1, problem)


def _csv_row(name: str, line: int, columns: list[str], values: list[str]) -> dict[str, str]:
    if len(values) > len(columns):
        raise ImportFileError(name, line, f"{len(values)} fields, but the header names {len(columns)}")
    row: dict[str, str] = {}
    for column, value in zip(columns, values, strict=False):
        if value.strip():
            if not column:
                raise ImportFileError(name, line, "a value in a column the header does not name")
            row[column] = value.strip()
    return row
