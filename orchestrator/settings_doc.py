"""The settings reference, ``docs/settings.md``, written from the :class:`~orchestrator.settings.Settings`
model itself, so the page cannot say anything the code does not.

    python -m orchestrator.settings_doc > docs/settings.md

``tests/unit/test_docs.py`` fails, printing that command, when the page and the model differ.
"""

from __future__ import annotations

import enum
import sys
import types
import typing
from pathlib import PurePath
from typing import Any

from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo

from .settings import Settings

COMMAND = "python -m orchestrator.settings_doc > docs/settings.md"

_NAMES: dict[Any, str] = {  # in this order: a bool is an int
    bool: "boolean",
    str: "string",
    int: "integer",
    float: "number",
    SecretStr: "secret string",
    PurePath: "path",
}

_HEADER = f"""\
# Settings

<!-- Generated from orchestrator/settings.py: do not edit by hand. Regenerate with
     {COMMAND} -->

Every setting is an environment variable, or a line of a `.env` file in the working directory
(`NAME=value`; the environment wins over the file). Each entry point (the CLI, a worker, beat) reads
them once when it starts, so a change applies to commands and processes started after it.

A **secret string** is never printed or logged (`***`). Keep those out of version control: in a `.env`
that is never committed, or, on Kubernetes, in the `tenantctl` Secret ([Kubernetes](kubernetes.md)); the
others go in the ConfigMap (`deploy/kubernetes/settings.env`). Durations are in seconds. A boolean is
`true` or `false` (also `1`/`0`, `yes`/`no`).

| setting | type | default | meaning |
| --- | --- | --- | --- |
"""


def env_names(name: str, field: FieldInfo) -> list[str]:
    """The environment variables a field is read from: ``TENANTCTL_<NAME>`` unless the field has an alias,
    which pydantic-settings takes as the whole variable name, without the prefix."""
    alias = field.validation_alias or field.alias
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
    named = [choice.upper() for choice in choices if isinstance(choice, str)]
    return named or [f"{Settings.model_config.get('env_prefix', '')}{name}".upper()]


def type_name(annotation: Any) -> str:
    """A reader's name for a field's type: ``integer``, ``secret string, optional``, ``one of a, b``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (", optional" if type(None) in args else "")
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if typing.get_origin(annotation) in (list, tuple, set, frozenset):
        return f"list of {type_name(args[0])}" if args else "list"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
    for known, name in _NAMES.items():
        if isinstance(annotation, type) and issubclass(annotation, known):
            return name
    return getattr(annotation, "__name__", str(annotation))


def bounds(field: FieldInfo) -> str:
    """The field's numeric limits, as pydantic enforces them (``≥ 1, ≤ 512``)."""
    signs = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
    return ", ".join(
        f"{sign} {_plain(value)}"
        for item in field.metadata
        for attr, sign in signs.items()
        if (value := getattr(item, attr, None)) is not None
    )


def default_text(field: FieldInfo) -> str:
    """The default as it would be written in the environment; ``unset`` for None."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True, validated_data={})
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()  # a default is shipped in the code: not a secret
    text = _plain(value)
    return f"`{text}`" if text else "empty"


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(_plain(v) for v in value)
    return str(value)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """The whole of ``docs/settings.md``."""
    rows = []
    for name, field in Settings.model_fields.items():
        kind = type_name(field.annotation)
        limits = bounds(field)
        rows.append(
            "| "
            + " | ".join(
                [
                    "<br>".join(f"`{env}`" for env in env_names(name, field)),
                    _cell(f"{kind} ({limits})" if limits else kind),
                    _cell(default_text(field)),
                    _cell(field.description or ""),
                ]
            )
            + " |"
        )
    return _HEADER + "\n".join(rows) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
