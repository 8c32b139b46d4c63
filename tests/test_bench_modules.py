"""Every bench module imports in a plain interpreter, as `python -m bench...` runs it.

The bench is not run in CI (its figures need a quiet machine), so this is what
keeps a refactor of the tests' services or of tcgraph from breaking it unseen.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem != "__main__")


@pytest.mark.parametrize("module", MODULES)
def test_bench_module_imports(module: str) -> None:
    # A fresh interpreter from the repository root, without pytest's sys.path additions.
    done = subprocess.run([sys.executable, "-c", f"import bench.{module}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
