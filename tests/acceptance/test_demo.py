"""`tenantctl demo` from a plain (non-editable) install, in an empty directory, with nothing configured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


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
    # dependencies come from this interpreter's site-packages; tenantctl itself only from the wheel
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
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
