"""The ``tenantctl`` command line. ``main`` turns every user mistake into one line and an exit code:
0 all succeeded, 1 some tenants failed, 2 bad input, 3 refused by preflight."""

from __future__ import annotations

import re
import sys
from collections.abc import Collection
from typing import Any

# Alembic imports Mako, whose error module loads Pygments' lexers when Pygments is installed (Rich brings
# it): 40 ms of every command's start, for highlighted HTML error pages tenantctl never renders. A None
# entry makes that import fail, and Mako uses its own plain fallback (mako.exceptions._install_fallback).
sys.modules.setdefault("mako.ext.pygmentplugin", None)  # type: ignore[arg-type]

import typer  # noqa: E402

from ..exceptions import TenantctlError  # noqa: E402
from ..secrets import mask_text  # noqa: E402
from .app import app  # noqa: E402

_REVISION_VERBS = {"upgrade", "downgrade", "stamp"}
_NEGATIVE = re.compile(r"^-\d+$")


def normalise_args(args: list[str], valued: Collection[str] = ()) -> list[str]:
    """Let ``tenantctl downgrade -1`` mean what it means to Alembic: a bare ``-N`` after a revision verb
    is the revision, not an option, so it is moved behind ``--``. One right after an option in
    ``valued`` (``--parallel -1``) is that option's value, and is left for it to refuse."""
    verb = next((a for a in args if not a.startswith("-")), None)
    if verb not in _REVISION_VERBS:
        return args
    negatives = [
        i for i, a in enumerate(args) if _NEGATIVE.match(a) and (i == 0 or args[i - 1] not in valued)
    ]
    if len(negatives) != 1 or "--" in args:
        return args
    (at,) = negatives
    return [*args[:at], *args[at + 1 :], "--", args[at]]


def _valued_options(command: Any, args: list[str]) -> set[str]:
    """The names of the options of ``args``'s revision verb that take a value (``--parallel``, ``-p``)."""
    verb = next((a for a in args if not a.startswith("-")), None)
    if verb not in _REVISION_VERBS:
        return set()
    sub = command.get_command(None, verb)
    params = getattr(sub, "params", ())
    return {
        name
        for param in params
        if isinstance(param, typer.core.TyperOption) and not param.is_flag
        for name in (*param.opts, *param.secondary_opts)
    }


def main(argv: list[str] | None = None) -> None:
    command = typer.main.get_command(app)
    raw = sys.argv[1:] if argv is None else list(argv)
    args = normalise_args(raw, _valued_options(command, raw))
    cut = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:cut]
    if debug:  # accepted anywhere on the line, not only before the command
        args = ["--debug", *(a for a in args[:cut] if a != "--debug"), *args[cut:]]
    try:
        code = command.main(args=args, prog_name="tenantctl", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        sys.stderr.write("tenantctl: interrupted\n")
        code = 130
    except typer.TyperException as exc:
        if exc.__class__.__name__ == "NoArgsIsHelpError":
            exc.show()  # type: ignore[attr-defined]
            code = 2
        elif debug:
            raise
        else:
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            sys.stderr.write(f"tenantctl: error: {mask_text(' '.join(message.split()))}\n")
            code = getattr(exc, "exit_code", 2)
    except TenantctlError as exc:
        if debug:
            raise
        sys.stderr.write(f"tenantctl: error: {mask_text(' '.join(exc.message.split()))}\n")
        code = exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("tenantctl: interrupted\n")
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["app", "main"]
