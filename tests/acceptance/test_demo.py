"""`tenantctl demo` from a plain (non-editable) install, in an empty directory, with nothing configured."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def see_our_dependencies(py: Path) -> None:
    """Make the new venv see the packages this interpreter sees, listed in a ``.pth`` file: tenantctl's
    dependencies come from here, tenantctl itself only from the wheel (its own site-packages comes first,
    and the directories listed are not scanned for ``.pth`` files, so an editable install of the source
    tree stays out). ``--system-site-packages`` would do it only outside a virtualenv: from inside one,
    the new venv sees the base interpreter's packages, not the virtualenv's, and typer is missing."""
    ours = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    purelib = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    lines = [p for p in ours if Path(p).is_dir()]
    (Path(purelib) / "tenantctl-test-dependencies.pth").write_text("\n".join(lines) + "\n")


def test_demo_from_a_built_wheel_in_an_empty_directory(tmp_path: Path) -> None:
    dist, venv, empty = tmp_path / "dist", tmp_path / "venv", tmp_path / "empty"
    empty.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("tenantctl-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    see_our_dependencies(py)
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTCTL_")}
    env["PYTHONSAFEPATH"] = "1"
    where = subprocess.run(
        [py, "-c", "import orchestrator; print(orchestrator.__file__)"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(venv) in where, f"the demo must run from the wheel, not the source tree: {where}"

    demo = subprocess.run(
        [venv / "bin" / "tenantctl", "demo", "--tenants", "6"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert demo.returncode == 0, demo.stderr
    assert "6 succeeded" in demo.stdout
    assert "tenantctl status --json" in demo.stdout

    workspace = empty / "tenantctl-demo"
    status = subprocess.run(
        [venv / "bin" / "tenantctl", "status", "--json"],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(status.stdout)
    assert report["state"] == "succeeded" and report["counts"]["succeeded"] == 6
    assert {t["to_revision"] for t in report["tenants"]} == {"0004"}

    again = subprocess.run(
        [venv / "bin" / "tenantctl", "demo"], cwd=empty, env=env, capture_output=True, text=True
    )
    assert again.returncode == 2 and "already exists" in again.stderr
