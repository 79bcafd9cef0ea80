"""docs/ stays true to the code: the settings reference is the Settings model's, every tenantctl command
the pages tell users to paste parses against the CLI, and every setting, module, function and link they
name exists."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest

from orchestrator import settings_doc
from orchestrator.controldb.store import Store
from orchestrator.settings import Settings
from tests.conftest import ROOT
from tests.unit.test_kubernetes import cli_problem, tenantctl_invocations

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
# In the pages' shell blocks, N and M stand for rollout ids.
PLACEHOLDERS = {"N": "1", "M": "2"}


def _without_fences(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def test_the_settings_reference_is_up_to_date() -> None:
    page = DOCS / "settings.md"
    if not page.exists() or page.read_text() != settings_doc.render():
        pytest.fail(
            "docs/settings.md is out of date with orchestrator/settings.py; regenerate it:\n\n"
            f"    {settings_doc.COMMAND}\n",
            pytrace=False,
        )


def test_every_setting_is_described() -> None:
    bare = [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()]
    assert not bare, f"give these settings a description (docs/settings.md shows it): {bare}"


def test_the_reference_reads_types_defaults_and_limits() -> None:
    page = settings_doc.render()
    assert "| `TENANTCTL_PARALLELISM` | integer (≥ 1, ≤ 512) | `4` |" in page
    assert "| `TENANTCTL_BROKER_URL` | secret string, optional | unset |" in page
    assert "| `TENANTCTL_DATABASE_URL` | secret string | `sqlite+aiosqlite:///tenantctl.db` |" in page
    assert "| `TENANTCTL_AUDIT_SCHEMA_NIGHTLY` | boolean | `false` |" in page
    assert "| `TENANTCTL_POLL_INTERVAL` | number (> 0) | `0.5` |" in page
    assert page.count("\n| `TENANTCTL_") == len(Settings.model_fields)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_in_the_page_parses(page: Path) -> None:
    blocks = re.findall(r"^```(?:sh|bash)\n(.*?)^```", page.read_text(), re.MULTILINE | re.DOTALL)
    argvs = [
        [PLACEHOLDERS.get(word, word) for word in argv]
        for block in blocks
        for argv in tenantctl_invocations(block)
    ]
    problems = [f"{page.name}: {p}" for argv in argvs if (p := cli_problem(argv))]
    assert not problems, "\n".join(problems)


def test_the_tutorial_and_the_runbook_are_checked() -> None:
    """The scan above finds the commands (a page whose blocks it missed would pass on nothing)."""
    for name, least in (("tutorial.md", 20), ("runbook.md", 15)):
        text = (DOCS / name).read_text()
        blocks = re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
        assert sum(len(tenantctl_invocations(b)) for b in blocks) >= least, name


def test_every_setting_named_exists() -> None:
    known = {env for name, f in Settings.model_fields.items() for env in settings_doc.env_names(name, f)}
    files = [*PAGES, *(p for p in (ROOT / "deploy" / "kubernetes").iterdir() if p.is_file())]
    unknown = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in re.findall(r"\bTENANTCTL_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())
        if name not in known
    }
    assert not unknown, sorted(unknown)


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package does not exist
        return False


def _named_object(token: str) -> bool | None:
    """Whether ``module.attr`` (``runs.claim``, ``workers/executor.CeleryExecutor.ready``,
    ``store.claim_context``) exists; None when the token names nothing of tenantctl's."""
    head, _, rest = token.partition(".")
    if not rest or rest == "py" or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", rest):
        return None
    owners: list[Any] = [Store] if head == "store" else []
    name = head.replace("/", ".")
    for module in (f"orchestrator.{name}", f"orchestrator.controldb.{name}", name):
        if module.split(".")[0] in ("orchestrator", "workers") and _exists(module):
            owners.append(importlib.import_module(module))
    if not owners:
        return None

    def has(obj: Any) -> bool:
        for attr in rest.split("."):
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True

    return any(has(owner) for owner in owners)


def test_every_module_function_and_file_named_exists() -> None:
    missing = []
    for page in PAGES:
        for token in re.findall(r"`([^`\s]+)`", _without_fences(page.read_text())):
            if re.search(r"\.(py|ya?ml|md|env|example|ini)$", token):
                if "/" in token and not any(
                    (base / token).exists() for base in (ROOT, ROOT / "orchestrator")
                ):
                    missing.append(f"{page.name}: {token}")
            elif _named_object(token.removesuffix("()")) is False:
                missing.append(f"{page.name}: {token}")
    assert not missing, missing


def _anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", _without_fences(page.read_text()), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_link_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", _without_fences(page.read_text())):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
                broken.append(f"{page.name}: {target}")
    assert not broken, broken
