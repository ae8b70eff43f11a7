import subprocess
import sys

import numpy as np


def test_import_does_not_load_matplotlib():
    code = (
        "import sys, stgraph.viz\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "assert 'matplotlib' not in sys.modules\n"
        "assert 'networkx' not in sys.modules\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


def test_no_pyplot_figures_are_created():
    from stgraph.viz import plot_cross_scale, plot_temporal_graph

    plot_temporal_graph(np.random.rand(6, 6), 2, 3, top_k=4, figsize=(2, 2))
    plot_cross_scale(np.full((2, 3), 1 / 3), figsize=(3, 2))
    if "matplotlib.pyplot" in sys.modules:  # networkx imports it when drawing
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []
