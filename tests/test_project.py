"""The project's own files: the licence it declares, and what ``make run`` tells a
newcomer."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_license_file_matches_the_declared_licence():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_run_prints_the_addresses_and_the_finance_user_command(tmp_path):
    """What ``make run`` echoes before it serves (its recipe, run by make without serving)."""
    recipe = subprocess.run(["make", "-n", "--no-print-directory",
                             "-C", str(ROOT), "run", "PORT=7599"],
                            capture_output=True, text=True, timeout=60)
    assert recipe.returncode == 0, recipe.stderr
    echoed = subprocess.run(["bash", "-c", "\n".join(
        line for line in recipe.stdout.splitlines() if line.startswith("echo"))],
        capture_output=True, text=True, timeout=60).stdout
    for path in ("/", "/docs", "/openapi.json", "/member", "/finance", "/member/terms"):
        assert f"http://127.0.0.1:7599{path}\n" in echoed, path
    assert ". .venv/bin/activate" in echoed
    assert 'coalition finance user create fiona --name "Fiona Ledger"' in echoed
    assert "coalition demo load --with-history" in recipe.stdout
