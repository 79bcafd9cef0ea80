"""The pure fast paths of the registry give what the general code they stand in for gives: the masked
URL of a listing, the values of a YAML file, a spec checked once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from orchestrator import registry, tenantfile, validation
from orchestrator.exceptions import ImportFileError, InvalidTenant
from orchestrator.models import TenantSpec
from orchestrator.secrets import SecretBox, with_masked_password
from orchestrator.tenantfile import _yaml_value

BOX = SecretBox("unit-test-key")


@pytest.mark.parametrize(
    "raw",
    [
        "postgresql://app:pw@db/t",
        "postgresql+psycopg://app.user:pw@db.example:6543/t?sslmode=require&application_name=x",
        "postgresql://a%40b:p%40ss@[::1]:5432/t",
        "postgresql://:pw@db/t",
        "postgresql://us%20er:pw@db/t%20x?b=2&a=1",
        "postgresql://app:pw@/t?host=/var/run/postgresql",
        "sqlite://u:pw@/relative.db",
    ],
)
def test_a_listed_url_masks_as_sqlalchemy_renders_it(raw: str) -> None:
    tenant = registry.to_tenant(TenantSpec(id="t", url=raw), BOX)
    assert tenant.password_token
    slow = make_url(tenant.url).set(password="hidden").render_as_string(hide_password=True)
    assert with_masked_password(tenant.url) == slow == registry.display_url(tenant)


@pytest.mark.parametrize(
    "stored", ["postgresql://db/t", "postgresql://h:5432", "postgresql://u@@h/t", "postgresql://u@h@x/t"]
)
def test_a_stored_url_of_another_shape_is_parsed_and_rendered(stored: str) -> None:
    assert with_masked_password(stored) == (
        make_url(stored).set(password="hidden").render_as_string(hide_password=True)
    )


DOCUMENT = """
- id: a
  url: postgresql://h/a
  enabled: yes
  on: off
  tags: [x, "y", 'z', Yes, NO, ~, null, Null, '']
  group: ~
  number: 12
  hex: 0x1F
  float: 1.5
  when: 2001-12-14
  anchor: &a {k: v, l: [1, 2]}
  alias: *a
  <<: {merged: 1}
  explicit: !!str 123
  bytes: !!binary aGVsbG8=
  set: !!set {a, b}
  omap: !!omap [a: 1]
  nested: {deep: [1, {x: on}]}
  empty:
  quoted: "true"
  text: |
    two
    lines
  1: one
- plain text
- [a, list]
- !!map {a: 1}
- &b {x: 1}
- *b
"""


def _both(text: str) -> tuple[object, object]:
    """(the fast construction, the safe loader's), or the class and message of what each raised."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    assert root is not None
    nodes = root.value
    results: list[object] = []
    for build in (_yaml_value, lambda n, loader: loader.construct_object(n, deep=True)):
        try:
            results.append([build(n, yaml.SafeLoader("")) for n in nodes])
        except Exception as exc:
            results.append((type(exc).__name__, str(exc).splitlines()[0]))
    return results[0], results[1]


def test_yaml_values_are_what_the_safe_loader_builds() -> None:
    fast, loader = _both(DOCUMENT)
    assert fast == loader and isinstance(fast, list) and fast[0]["tags"][3] is True


@pytest.mark.parametrize(
    "text",
    [
        "- !!str {a: b}",
        "- !!map [1]",
        "- !!seq {a: 1}",
        "- a: !!python/name:os.system",
        "- {[a]: b}",
        "- x: !!null 3",
        "- !!bool maybe",
    ],
)
def test_yaml_nodes_the_fast_path_does_not_take_are_the_loaders(text: str) -> None:
    fast, loader = _both(text)
    assert fast == loader


@pytest.mark.parametrize("value", ["!!bool maybe", "!!int x", "!!float y", "!!timestamp z"])
def test_a_value_its_tag_refuses_is_one_error_naming_the_row(tmp_path: Path, value: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        f"- id: a\n  url: postgresql://h/a\n- id: b\n  url: postgresql://h/b\n  enabled: {value}\n"
    )
    with pytest.raises(ImportFileError) as caught:
        tenantfile.read(path)
    message = caught.value.message
    assert message.startswith(f"{path}:3: not valid YAML: a value that its tag does not allow"), message


def test_a_spec_is_checked_once_and_a_changed_one_again() -> None:
    spec, parsed = validation.checked(TenantSpec(id="t", url="postgresql://app:pw@db/t", tags=("b", "a")))
    assert spec.tags == ("a", "b")
    again, same = validation.checked(TenantSpec(id="t", url="postgresql://app:pw@db/t", tags=("a", "b")))
    assert again == spec and same is parsed
    with pytest.raises(InvalidTenant):
        validation.checked(TenantSpec(id="t", url="mysql://app:pw@db/t", tags=("a", "b")))
    with pytest.raises(InvalidTenant):
        validation.spec(TenantSpec(id="Bad Id", url="postgresql://app:pw@db/t", tags=("a", "b")))
