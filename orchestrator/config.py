"""Settings as every entry point reads them (CLI, worker, API): from the environment and ``.env``, with
whatever is wrong turned into one :class:`ConfigurationError` line instead of a validation dump."""

from __future__ import annotations

import logging
import re

from pydantic import ValidationError
from pydantic_settings import SettingsError

from . import validation
from .exceptions import ConfigurationError
from .settings import Settings


def load_settings() -> Settings:
    """Settings from the environment and ``.env``; an invalid value, or a ``.env`` that cannot be read,
    is one clear line. python-dotenv only logs a line it cannot parse and drops it (a setting silently
    lost): that warning is caught and made the error."""
    dropped = _Collect()
    dotenv_log = logging.getLogger("dotenv.main")
    propagate, dotenv_log.propagate = dotenv_log.propagate, False
    dotenv_log.addHandler(dropped)
    try:
        cfg = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "TENANTCTL_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigurationError(f"invalid {name}: {first['msg']}") from None
    except SettingsError as exc:  # a complex setting (a JSON list) that is not JSON
        found = re.search(r'field "(\w+)"', str(exc))
        name = "TENANTCTL_" + found.group(1).upper() if found else "settings"
        raise ConfigurationError(f"invalid {name}: not valid JSON") from None
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x})"
        raise ConfigurationError(f"cannot read .env: {reason}") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read .env: {exc.strerror or exc.__class__.__name__}") from None
    finally:
        dotenv_log.removeHandler(dropped)
        dotenv_log.propagate = propagate
    if dropped.messages:
        raise ConfigurationError(f"invalid .env: {dropped.messages[0]}")
    return validation.settings(cfg)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
