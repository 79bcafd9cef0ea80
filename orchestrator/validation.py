"""Validation of what users type about tenants, and of the URLs in the settings; pure, so the CLI, the
importer and the API agree."""

from __future__ import annotations

import re
import weakref
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .exceptions import ConfigurationError, InvalidTenant
from .models import TenantSpec
from .secrets import mask_text, mask_url, parse_url

if TYPE_CHECKING:
    from .settings import Settings

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]*$")
SUPPORTED_BACKENDS = ("postgresql", "sqlite")
_MAX_PORT = 65535


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
    _checked_url(value)
    return value


def _checked_url(value: str) -> URL:
    parsed = parse_url(value)
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise InvalidTenant("url", mask_url(value), "only postgresql:// and sqlite:// tenants are supported")
    if backend == "postgresql" and not parsed.database:
        raise InvalidTenant("url", mask_url(value), "the URL names no database")
    if backend == "sqlite" and not parsed.database:
        raise InvalidTenant("url", mask_url(value), "a SQLite tenant needs a file path")
    if parsed.port is not None and not 1 <= parsed.port <= _MAX_PORT:
        raise InvalidTenant("url", mask_url(value), f"port {parsed.port} is out of range (1-{_MAX_PORT})")
    return parsed


def spec(s: TenantSpec) -> TenantSpec:
    """Validate every field of a tenant spec, returning it normalised (tags sorted, deduplicated)."""
    return checked(s)[0]


_CHECKED: weakref.WeakKeyDictionary[TenantSpec, URL] = weakref.WeakKeyDictionary()


def checked(s: TenantSpec) -> tuple[TenantSpec, URL]:
    """:func:`spec`, with its URL as parsed: the registry splits the password from it without parsing
    it again (URL parsing was most of a 10,000-row import's validation).

    A spec that :func:`spec` returned is not checked again while it lives: a file's rows are checked
    as they are read (to name a bad row's line), then by the registry, which parsed each URL twice.
    Specs are frozen and compare by value, and the result depends on the value alone."""
    known = _CHECKED.get(s)
    if known is not None:
        return s, known
    tenant_id(s.id)
    parsed = _checked_url(s.url)
    if s.schema is not None:
        schema_name(s.schema)
        if parsed.get_backend_name() != "postgresql":
            raise InvalidTenant("schema", s.schema, "schemas are only supported on PostgreSQL tenants")
    tags = tuple(sorted({label("tag", t) for t in s.tags}))
    if s.group is not None:
        label("group", s.group)
    if tags != s.tags:  # else already normalised: the spec itself (frozen) serves
        s = TenantSpec(id=s.id, url=s.url, schema=s.schema, tags=tags, group=s.group, enabled=s.enabled)
    _CHECKED[s] = parsed
    return s, parsed


def settings(cfg: Settings) -> Settings:
    """Check the URLs among the settings, which pydantic takes as any text: a port past 65535 or a
    webhook that is not HTTP otherwise fails mid-command, in a driver, with a traceback. The webhook's
    URL is never shown: a Slack webhook's path is its secret."""
    control = cfg.database_url.get_secret_value()
    try:
        parsed = make_url(control)
    except (ArgumentError, ValueError):
        reason = "not a database URL (e.g. postgresql://user@host/db)"
        raise _bad_setting("DATABASE_URL", control, reason) from None
    if parsed.port is not None and not 1 <= parsed.port <= _MAX_PORT:
        raise _bad_setting("DATABASE_URL", control, f"port {parsed.port} is out of range (1-{_MAX_PORT})")
    if cfg.broker_url is not None:
        _service_url("BROKER_URL", cfg.broker_url.get_secret_value(), "redis://host:6379/0")
    if cfg.webhook_url is not None:
        webhook = cfg.webhook_url.get_secret_value()
        _service_url("WEBHOOK_URL", webhook, "https://host/path", ("http", "https"), shown=False)
    return cfg


def _service_url(
    setting: str, raw: str, example: str, schemes: tuple[str, ...] = (), *, shown: bool = True
) -> None:
    value = raw if shown else None
    bad_port = f"the port is not a number from 1 to {_MAX_PORT}"
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise _bad_setting(setting, value, bad_port) from None
    if not parts.scheme or "://" not in raw:
        raise _bad_setting(setting, value, f"not a URL (e.g. {example})")
    if schemes and parts.scheme not in schemes:
        raise _bad_setting(setting, value, f"use {' or '.join(f'{s}://' for s in schemes)}")
    if schemes and not parts.hostname:
        raise _bad_setting(setting, value, f"the URL names no host (e.g. {example})")
    if port == 0:
        raise _bad_setting(setting, value, bad_port)


def _bad_setting(setting: str, raw: str | None, reason: str) -> ConfigurationError:
    where = f" {mask_text(raw)!r}" if raw is not None else ""
    return ConfigurationError(f"invalid TENANTCTL_{setting}{where}: {reason}")
