"""``stgraph train`` on a small synthetic dataset, for the multi-process tests.

Run as ``python tests/ddp_train.py ARGS`` or ``torchrun ... tests/ddp_train.py ARGS`` with
the arguments of ``stgraph train``: ``--dataset synthetic`` is replaced by
``SyntheticReID(num_train_ids=6, num_test_ids=8, image_size=(64, 32))``, 2 tracklets per
training identity, so a P=2 x K=2 batch gives 3 steps per epoch.
"""

import sys

import torch

from stgraph import cli
from stgraph.data import SyntheticReID

torch.set_num_threads(1)


def _small(cfg, protocol=None):
    return SyntheticReID(num_train_ids=6, num_test_ids=8, image_size=(64, 32), seed=0)


cli._load_dataset = _small
sys.exit(cli.main(sys.argv[1:]))
