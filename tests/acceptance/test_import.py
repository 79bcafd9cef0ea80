"""`tenantctl tenants import`: YAML, JSON, CSV; idempotent; all or nothing; a bad row named by its line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from orchestrator import tenantfile
from orchestrator.exceptions import ImportFileError
from tests.support.harness import Harness

YAML = """\
tenants:
  - id: acme
    url: postgresql://app@db1/acme
    tags: [eu, big]
    group: g1
  - id: globex
    url: postgresql://app:${GLOBEX_PW}@db1/globex
    schema: globex
  - id: initech
    url: postgresql://app:plainpw@db2/initech
    enabled: false
"""

JSON = """[
  {"id": "acme", "url": "postgresql://app@db1/acme", "tags": ["eu", "big"], "group": "g1"},
  {"id": "globex", "url": "postgresql://app:${GLOBEX_PW}@db1/globex", "schema": "globex"},
  {"id": "initech", "url": "postgresql://app:plainpw@db2/initech", "enabled": false}
]
"""

CSV = """id,url,schema,tags,group,enabled
acme,postgresql://app@db1/acme,,eu;big,g1,true
globex,postgresql://app:${GLOBEX_PW}@db1/globex,globex,,,
initech,postgresql://app:plainpw@db2/initech,,,,false
"""


def _tenants(harness: Harness) -> list[dict[str, object]]:
    return json.loads(harness.cli("tenants", "list", "--json").stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("suffix", "text"), [(".yaml", YAML), (".json", JSON), (".csv", CSV)])
def test_import_each_format_is_idempotent(harness: Harness, tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"tenants{suffix}"
    path.write_text(text)
    first = harness.cli("tenants", "import", str(path), "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"created": 3, "updated": 0, "unchanged": 0}
    again = harness.cli("tenants", "import", str(path), "--json")
    assert json.loads(again.stdout) == {"created": 0, "updated": 0, "unchanged": 3}
    tenants = {t["id"]: t for t in _tenants(harness)}
    assert tenants["acme"]["tags"] == ["big", "eu"] and tenants["acme"]["group"] == "g1"
    assert tenants["globex"]["schema"] == "globex"
    assert tenants["initech"]["enabled"] is False
    assert "plainpw" not in json.dumps(tenants)

    path.write_text(text.replace("plainpw", "newpw"))
    changed = harness.cli("tenants", "import", str(path), "--json")
    assert json.loads(changed.stdout) == {"created": 0, "updated": 1, "unchanged": 2}


@pytest.mark.parametrize(
    ("suffix", "text", "line", "needle"),
    [
        (".yaml", YAML.replace("id: globex", "id: Not Valid"), 6, "tenant id"),
        (".yaml", "tenants:\n  - id: a\n    url: [unclosed\n", 3, "YAML"),
        (".json", JSON.replace('"schema": "globex"', '"schema": "bad;name"'), 3, "schema"),
        (".json", '[{"id": "a", "url": "postgresql://h/db"},\n {"id": }]', 2, "JSON"),
        (
            ".csv",
            CSV.replace("initech,postgresql://app:plainpw@db2/initech", "initech,mysql://app:plainpw@h/x"),
            4,
            "url",
        ),
        (".csv", CSV + "acme,postgresql://h/dup,,,,\n", 5, "twice"),
        (".yaml", YAML.replace("group: g1", "colour: blue"), 2, "colour"),
    ],
)
def test_bad_row_is_named_and_nothing_is_written(
    harness: Harness, tmp_path: Path, suffix: str, text: str, line: int, needle: str
) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    result = harness.cli("tenants", "import", str(path))
    assert result.returncode == 2
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and f"{path}:{line}:" in err and needle in err, err
    assert "plainpw" not in err
    assert _tenants(harness) == []


def test_ten_thousand_rows_import_in_seconds(harness: Harness, tmp_path: Path) -> None:
    path = tmp_path / "fleet.csv"
    rows = [f"t{i:05d},postgresql://app@db{i % 7}/t{i:05d},,tier{i % 3},g{i % 5}," for i in range(10_000)]
    path.write_text("id,url,schema,tags,group,enabled\n" + "\n".join(rows) + "\n")
    started = time.monotonic()
    first = harness.cli("tenants", "import", str(path), "--json")
    elapsed = time.monotonic() - started
    assert json.loads(first.stdout) == {"created": 10_000, "updated": 0, "unchanged": 0}, first.stderr
    again = harness.cli("tenants", "import", str(path), "--json")
    assert json.loads(again.stdout) == {"created": 0, "updated": 0, "unchanged": 10_000}
    print(f"imported 10,000 tenants in {elapsed:.2f}s (including interpreter start)")


@pytest.mark.parametrize(
    ("name", "content", "where", "needle"),
    [
        (
            "root-tag.yaml",
            '!!python/object/apply:os.system ["touch pwned"]\n',
            ":1:",
            "'!!python/object/apply",
        ),
        ("nested-tag.yaml", "- id: a\n  url: !!python/name:os.system\n", ":2:", "'!!python/name:os.system'"),
        ("two-docs.yaml", "- id: a\n---\n- id: b\n", ":1:", "but found another document"),
        ("comments.yaml", "# nothing here\n", ":", "no YAML document"),
        (
            "wrapped.json",
            '{"tenants": [\n {"id": "a", "url": "postgresql://h/a"},\n {"id": "b"}]}',
            ":3:",
            "'url'",
        ),
        ("dup-key.json", '[{"id": "a", "url": "postgresql://h/a", "id": "b"}]', ":", "'id' appears twice"),
        ("deep.json", "[" * 50_000 + "]" * 50_000, ":", "nested too deeply"),
        ("scalar.json", "null", ":1:", "expected a list"),
        ("utf16.json", '[{"id": "a"}]'.encode("utf-16"), ":1:", "not UTF-8"),
        ("extra.csv", "id,url\na,postgresql://h/a,surplus\n", ":2:", "3 fields, but the header names 2"),
        ("no-url.csv", "id,schema\na,s\n", ":1:", "missing column 'url'"),
        ("header-twice.csv", "id,url,id\na,postgresql://h/a,b\n", ":1:", "'id' appears twice"),
        ("stray-quote.csv", 'id,url\na,"postgresql://h/a"x\n', ":2:", "not valid CSV"),
        ("id-number.yaml", "- id: 123\n  url: postgresql://h/a\n", ":1:", "'id' must be text, not int"),
        ("tenants.txt", "id,url\n", ":", "unknown file type"),
    ],
)
def test_malformed_files_are_one_error_naming_file_and_line(
    tmp_path: Path, name: str, content: str | bytes, where: str, needle: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ImportFileError) as caught:
        tenantfile.read(path)
    message = caught.value.message
    assert message.startswith(f"{path}{where}") and needle in message and "\n" not in message, message
    assert not (tmp_path / "pwned").exists()


def test_bom_and_crlf_are_read_as_plain_utf8(tmp_path: Path) -> None:
    path = tmp_path / "windows.csv"
    path.write_bytes(
        b"\xef\xbb\xbfid,url,tags\r\nacme,postgresql://h/acme,eu;big\r\n\r\nb,postgresql://h/b,\r\n"
    )
    specs = tenantfile.read(path)
    assert [(s.id, s.tags) for s in specs] == [("acme", ("big", "eu")), ("b", ())]
