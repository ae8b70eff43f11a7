import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stgraph.data import derive_seed, make_generator

REPO = Path(__file__).resolve().parents[2]


def test_known_values_do_not_change():
    # Pinned: changing the mixer would silently change every seeded run.
    assert derive_seed(0) == 3955559762902201395
    assert derive_seed(0, 1, 2) == 6069341706003430320
    assert derive_seed(0, "frame", 1) == 2092417127498692071
    assert len({derive_seed(0, 1), derive_seed(1, 0), derive_seed(0, 1, 0), derive_seed(0)}) == 4
    assert 0 <= derive_seed(-5, 2**70, "x") < 2**63


def test_strings_are_stable_across_processes():
    # A fresh interpreter with another str-hash seed derives the same seed.
    code = (
        "import importlib.util as u, sys; s = u.spec_from_file_location('s', sys.argv[1]); "
        "m = u.module_from_spec(s); s.loader.exec_module(m); print(m.derive_seed(3, 'frame', 7))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "stgraph" / "data" / "seeding.py")],
        capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )  # fmt: skip
    assert int(out.stdout) == derive_seed(3, "frame", 7)


def test_generator_streams():
    a = torch.rand(5, generator=make_generator(1, 2))
    assert torch.equal(a, torch.rand(5, generator=make_generator(1, 2)))
    assert not torch.equal(a, torch.rand(5, generator=make_generator(2, 1)))


def test_bad_key_type():
    with pytest.raises(TypeError, match="keys must be int or str, got float"):
        derive_seed(1.5)
