"""The documentation builds with Sphinx, warnings treated as errors (what CI runs)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The CI docs build. ``-E`` (re-read every page) is added here because an incremental
#: build neither re-reads pages whose autodoc'd docstrings changed nor repeats the warnings
#: of unchanged pages, so a stale docs/_build cache could hide a warning CI would see.
COMMAND = ["-m", "sphinx", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"]

_MISSING = [m for m in ("sphinx", "myst_parser", "furo") if importlib.util.find_spec(m) is None]


@pytest.mark.skipif(bool(_MISSING), reason=f"docs tools not installed ({', '.join(_MISSING)}); "
                    "pip install -c constraints.txt -e '.[dev]'")
def test_docs_build_without_warnings():
    proc = subprocess.run([sys.executable, *COMMAND, "-E"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, (
        f"sphinx exited with {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
