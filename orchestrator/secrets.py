"""Keeping passwords out of storage and out of sight: encryption at rest, ``${ENV}`` references,
masking for display and scrubbing of free text (error messages, tracebacks)."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Iterable, Mapping

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .exceptions import ConfigurationError, InvalidTenant

MASK = "***"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# user:password@ inside any URL-looking text; the password part is replaced.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<at>@)")
# driver://user@ as URL.render_as_string writes it: the user quoted (safe " +"), no password, and no
# other @ before the path (SQLAlchemy would read "u@@h" as user "u@")
_STORED_USER = re.compile(r"[A-Za-z0-9_+]+://[A-Za-z0-9_.~ +%-]*@(?=[^@/?]*(?:[/?]|$))")
_KV_PASSWORD = re.compile(r"(?i)(?P<head>\bpassword\s*[=:]\s*['\"]?)(?P<pw>[^\s'\",;]+)")


def parse_url(raw: str) -> URL:
    """Parse a tenant URL; the error never echoes the URL (it may hold a password)."""
    try:
        return make_url(raw)
    except (ArgumentError, ValueError) as exc:
        raise InvalidTenant(
            "url", mask_text(raw), "not a database URL (e.g. postgresql://user@host/db)"
        ) from exc


def mask_url(raw: str) -> str:
    """The URL for display: a clear password becomes ``***``; ``${VAR}`` references are kept."""
    return mask_text(raw)


def with_masked_password(stored: str) -> str:
    """A stored URL whose password was taken out (and encrypted) with ``***`` where it was: what
    ``make_url(stored).set(password=…).render_as_string()`` shows. Stored URLs are SQLAlchemy's own
    rendering (:func:`split_password`), ``driver://user@…`` with the user quoted, so ``:***`` goes before
    the first ``@``: 1 µs against 15 µs to parse and render, per tenant of a 10,000-tenant list. Any
    other shape (no user, a hand-written row) is parsed and rendered."""
    at = _STORED_USER.match(stored)
    if at is not None:
        return f"{stored[: at.end() - 1]}:{MASK}{stored[at.end() - 1 :]}"
    return make_url(stored).set(password="hidden").render_as_string(hide_password=True)


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove every known secret and every ``scheme://user:password@`` password from free text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(
        lambda m: m["head"] + (m["pw"] if _ENV_REF.fullmatch(m["pw"]) else MASK) + m["at"], text
    )
    return _KV_PASSWORD.sub(lambda m: m["head"] + MASK, text)


class SecretBox:
    """Encrypts passwords with a key derived from ``TENANTCTL_SECRET_KEY`` (Fernet: AES + HMAC).

    A Fernet token costs 35-40 µs to make or open, 0.4 s for each of a 10,000-tenant import and of every
    command that resolves 10,000 URLs. So a box remembers what it did: the tenants of one ``scope`` (the
    URL without its password: one role on one database, as the schema tenants of a database are) with
    the same password get the same token, and a token is opened once. Sharing tells nothing their URLs
    do not: one role has one password. Tenants of different scopes never share a token, even with equal
    passwords (each gets its own IV)."""

    def __init__(self, key: str | None) -> None:
        self._fernet = (
            Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest())) if key else None
        )
        self._made: dict[tuple[str, str], str] = {}
        self._opened: dict[str, str] = {}

    def encrypt(self, password: str, scope: str | None = None) -> str:
        if self._fernet is None:
            raise ConfigurationError(
                "a tenant URL holds a password but TENANTCTL_SECRET_KEY is not set: set it to encrypt "
                "passwords at rest, or write the password as ${ENV_VAR} in the URL"
            )
        if scope is None:
            return self._fernet.encrypt(password.encode()).decode()
        token = self._made.get((scope, password))
        if token is None:
            token = self._made[(scope, password)] = self._fernet.encrypt(password.encode()).decode()
            self._opened[token] = password
        return token

    def decrypt(self, token: str) -> str:
        if self._fernet is None:
            raise ConfigurationError("TENANTCTL_SECRET_KEY is not set: cannot decrypt tenant passwords")
        known = self._opened.get(token)
        if known is not None:
            return known
        try:
            password = self._opened[token] = self._fernet.decrypt(token.encode()).decode()
            return password
        except InvalidToken as exc:
            raise ConfigurationError(
                "TENANTCTL_SECRET_KEY does not decrypt the stored tenant passwords (was the key changed?)"
            ) from exc


def split_password(raw: str, parsed: URL | None = None) -> tuple[str, str | None]:
    """Split a URL into (URL without a clear password, the clear password or None). ``parsed``: ``raw``
    already parsed by the caller (a 10,000-row import parsed each URL five times).

    A password written as ``${VAR}`` is a reference, not a secret: it stays in the URL.
    """
    url = parsed if parsed is not None else parse_url(raw)
    password = url.password
    if password is None or _ENV_REF.fullmatch(str(password)):
        return raw, None
    bare = URL.create(url.drivername, url.username, None, url.host, url.port, url.database, url.query)
    return bare.render_as_string(hide_password=False), str(password)


def resolve_url(stored: str, password: str | None, environ: Mapping[str, str]) -> str:
    """The URL a unit of work connects with: ``${VAR}`` resolved from ``environ``, the password put back."""

    def env(match: re.Match[str]) -> str:
        name = match[1]
        if name not in environ:
            raise ConfigurationError(f"environment variable {name} referenced by a tenant URL is not set")
        return environ[name]

    if not _ENV_REF.search(stored):
        return _with_password(stored, password)
    url = make_url(_ENV_REF.sub(env, stored))
    if password is not None:
        url = url.set(password=password)
    return url.render_as_string(hide_password=False)


@functools.lru_cache(maxsize=16384)
def _with_password(stored: str, password: str | None) -> str:
    """Cached: schema tenants share their URL and password, and a parse and render costs 50 µs."""
    url = make_url(stored)
    return (url.set(password=password) if password is not None else url).render_as_string(hide_password=False)


@functools.lru_cache(maxsize=16384)
def password_of(url: str) -> str | None:
    """The clear password of a resolved URL (to scrub it from errors), parsed once per URL."""
    password = make_url(url).password
    return str(password) if password else None


def env_references(stored: str) -> list[str]:
    return _ENV_REF.findall(stored)
