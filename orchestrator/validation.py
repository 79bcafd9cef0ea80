"""Validation of what users type about tenants; pure, so the CLI, the importer and the API agree."""

from __future__ import annotations

import re

from .exceptions import InvalidTenant
from .models import TenantSpec
from .secrets import mask_url, parse_url

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]*$")
SUPPORTED_BACKENDS = ("postgresql", "sqlite")


def tenant_id(value: str) -> str:
    if not _SLUG.fullmatch(value):
        raise InvalidTenant(
            "tenant id", value, "use 1-63 lowercase letters, digits, '-', '_' or '.', starting alphanumeric"
        )
    return value


def label(kind: str, value: str) -> str:
    """A tag or group name: same rule as tenant ids."""
    if not _SLUG.fullmatch(value):
        raise InvalidTenant(kind, value, "use 1-63 lowercase letters, digits, '-', '_' or '.'")
    return value


def schema_name(value: str) -> str:
    """A PostgreSQL schema name safe to quote: no quotes, semicolons or spaces, at most 63 bytes."""
    if len(value.encode()) > 63:
        raise InvalidTenant("schema", value, "PostgreSQL identifiers are at most 63 bytes")
    if not _SCHEMA.fullmatch(value):
        raise InvalidTenant(
            "schema", value, "use letters, digits, '_', '$' or '-', starting with a letter or '_'"
        )
    return value


def url(value: str) -> str:
    parsed = parse_url(value)
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise InvalidTenant("url", mask_url(value), "only postgresql:// and sqlite:// tenants are supported")
    if backend == "postgresql" and not parsed.database:
        raise InvalidTenant("url", mask_url(value), "the URL names no database")
    if backend == "sqlite" and not parsed.database:
        raise InvalidTenant("url", mask_url(value), "a SQLite tenant needs a file path")
    return value


def spec(s: TenantSpec) -> TenantSpec:
    """Validate every field of a tenant spec, returning it normalised (tags sorted, deduplicated)."""
    tenant_id(s.id)
    url(s.url)
    if s.schema is not None:
        schema_name(s.schema)
        if parse_url(s.url).get_backend_name() != "postgresql":
            raise InvalidTenant("schema", s.schema, "schemas are only supported on PostgreSQL tenants")
    tags = tuple(sorted({label("tag", t) for t in s.tags}))
    group = label("group", s.group) if s.group is not None else None
    return TenantSpec(id=s.id, url=s.url, schema=s.schema, tags=tags, group=group, enabled=s.enabled)
