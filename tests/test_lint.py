"""Habits the whole tree keeps, checked by the test command: ruff's lint and format
(pyproject.toml [tool.ruff]), mypy over the product's packages ([tool.mypy]; the modules
still listed under ``ignore_errors`` are known debt, and a module leaves that list the
day it checks clean), and ESLint over the web map's ES modules
(web_map/eslint.config.js). Each fails naming the file and line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_ruff_lint():
    run = _run([str(BIN / "ruff"), "check", "--no-cache", "."])
    assert run.returncode == 0, run.stdout + run.stderr


def test_ruff_format():
    run = _run([str(BIN / "ruff"), "format", "--check", "--no-cache", "."])
    assert run.returncode == 0, "run `.venv/bin/ruff format`:\n" + run.stdout + run.stderr


def test_mypy():
    run = _run([sys.executable, "-m", "mypy", "--no-incremental"])
    assert run.returncode == 0, run.stdout + run.stderr


def test_eslint():
    node = shutil.which("node")
    assert node, "node is missing: bash scripts/setup.sh installs it"
    eslint = ROOT / "web_map" / "node_modules" / "eslint" / "bin" / "eslint.js"
    assert eslint.is_file(), "eslint is missing: bash scripts/setup.sh installs the web map's npm packages"
    run = _run([node, str(eslint), "static", "eslint.config.js"], cwd=ROOT / "web_map")
    assert run.returncode == 0, run.stdout + run.stderr
