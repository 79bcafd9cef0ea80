"""Reading tenant files (YAML, JSON or CSV) into validated specs, each row tied to its line so that a bad
row can be named. Pure parsing: nothing here touches the registry."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from . import validation
from .exceptions import ImportFileError, InvalidTenant
from .models import TenantSpec
from .secrets import mask_text

FIELDS = ("id", "url", "schema", "tags", "group", "enabled")
_TRUE = {"true", "yes", "1", "on", "y"}
_FALSE = {"false", "no", "0", "off", "n", ""}


def read(path: Path) -> list[TenantSpec]:
    """Parse and validate a whole tenant file; raises ImportFileError naming the first bad line."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFileError(name, None, f"cannot read file: {exc.__class__.__name__}") from exc
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        rows = _yaml_rows(name, text)
    elif suffix == ".json":
        rows = _json_rows(name, text)
    elif suffix == ".csv":
        rows = _csv_rows(text)
    else:
        raise ImportFileError(name, None, "unknown file type: use .yaml, .yml, .json or .csv")
    specs: list[TenantSpec] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        spec = _spec(name, line, row)
        if spec.id in seen:
            raise ImportFileError(
                name, line, f"tenant {spec.id!r} appears twice (first on line {seen[spec.id]})"
            )
        seen[spec.id] = line
        specs.append(spec)
    return specs


def _spec(name: str, line: int, row: Any) -> TenantSpec:
    if not isinstance(row, Mapping):
        raise ImportFileError(name, line, "each tenant must be a mapping of fields")
    unknown = sorted(set(map(str, row)) - set(FIELDS))
    if unknown:
        raise ImportFileError(name, line, f"unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})")
    for required in ("id", "url"):
        if not isinstance(row.get(required), str) or not row[required]:
            raise ImportFileError(name, line, f"missing field {required!r}")
    try:
        return validation.spec(
            TenantSpec(
                id=row["id"],
                url=row["url"],
                schema=_optional_str(row.get("schema")),
                tags=_tags(row.get("tags")),
                group=_optional_str(row.get("group")),
                enabled=_bool(row.get("enabled", True)),
            )
        )
    except (InvalidTenant, ValueError) as exc:
        raise ImportFileError(name, line, mask_text(str(exc))) from exc


def _optional_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {type(value).__name__}")
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


def _unwrap(name: str, data: Any) -> Any:
    if isinstance(data, Mapping) and set(data) == {"tenants"}:
        return data["tenants"]
    return data


def _yaml_rows(name: str, text: str) -> Iterator[tuple[int, Any]]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None)
        reason = f"not valid YAML: {problem}" if problem else "not valid YAML"
        raise ImportFileError(name, mark.line + 1 if mark else None, reason) from exc
    if root is None:
        return iter(())
    if isinstance(root, yaml.MappingNode) and len(root.value) == 1 and root.value[0][0].value == "tenants":
        root = root.value[0][1]
    if not isinstance(root, yaml.SequenceNode):
        raise ImportFileError(name, root.start_mark.line + 1, "expected a list of tenants")
    loader = yaml.SafeLoader("")
    return ((node.start_mark.line + 1, loader.construct_object(node, deep=True)) for node in root.value)


def _json_rows(name: str, text: str) -> Iterator[tuple[int, Any]]:
    """JSON rows with their line: the top-level list is scanned element by element with raw_decode."""
    decoder = json.JSONDecoder()
    try:
        data = _unwrap(name, json.loads(text)) if text.strip() else []
    except json.JSONDecodeError as exc:
        raise ImportFileError(name, exc.lineno, f"not valid JSON: {exc.msg}") from exc
    if not isinstance(data, list):
        raise ImportFileError(name, 1, "expected a list of tenants")
    start = text.index("[") + 1
    rows: list[tuple[int, Any]] = []
    pos = start
    for _ in data:
        while text[pos] in " \t\r\n,":
            pos += 1
        value, end = decoder.raw_decode(text, pos)
        rows.append((text.count("\n", 0, pos) + 1, value))
        pos = end
    return iter(rows)


def _csv_rows(text: str) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    for row in reader:
        cleaned = {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k}
        yield reader.line_num, {k: v for k, v in cleaned.items() if v not in (None, "")}
