"""``stgraph train`` on a synthetic dataset, for the multi-process tests.

Run as ``python tests/ddp_train.py ARGS`` or ``torchrun ... tests/ddp_train.py ARGS`` with
the arguments of ``stgraph train``. Two environment variables choose the run:

* ``STGRAPH_TEST_DATA``: ``small`` (default) replaces ``--dataset synthetic`` by
  ``SyntheticReID(num_train_ids=6, num_test_ids=8, image_size=(64, 32))``, 2 tracklets per
  training identity, so a P=2 x K=2 batch gives 3 steps per epoch; ``full`` keeps the
  built-in synthetic set (64 training identities: P=4 x K=2 gives 16 steps).
* ``STGRAPH_TEST_DTYPE``: ``float64`` makes float64 the default dtype, so the model is
  built in float64 and the loops feed it float64 clips (no float32 rounding); default
  ``float32``.
"""

import os
import sys

import torch

from stgraph import cli, recipe
from stgraph.data import SyntheticReID

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
if os.environ.get("STGRAPH_TEST_DTYPE", "float32") == "float64":
    torch.set_default_dtype(torch.float64)


def _small(cfg, protocol=None):
    return SyntheticReID(num_train_ids=6, num_test_ids=8, image_size=(64, 32), seed=0)


if os.environ.get("STGRAPH_TEST_DATA", "small") == "small":
    recipe.load_dataset = _small
sys.exit(cli.main(sys.argv[1:]))
