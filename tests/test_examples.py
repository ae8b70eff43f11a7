"""The examples run and show what they claim."""

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_layers_example_dense_equals_sparse(capsys):
    diff = _load("stgcn_layers_in_your_model").main(["--channels", "32"])
    assert diff < 1e-5
    assert "2 graphs, 32 nodes, 512 edges" in capsys.readouterr().out
