"""The direction of the code: the import contracts of pyproject.toml ([tool.importlinter])
hold — layers is the core and imports nothing above it; ingest and tiles build on it
only; web_map is files. A contract broken by a new import fails here, naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    # lint-imports reads pyproject.toml from its working directory; run it as a module of
    # this interpreter so the venv's import-linter and the checkout's packages are used
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--no-cache",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 kept, 0 broken" in run.stdout, run.stdout
