"""Multi-process training (torchrun, DDP on gloo) equals one process on the global batch.

The end-to-end test starts ``python -m torch.distributed.run --nproc_per_node 2`` on
``tests/ddp_train.py`` (``stgraph train`` on a 6-identity synthetic set: P=2 x K=2 gives 3
steps per epoch) and compares with one process on the same global batches: each of the 2
processes gets 2 clips per step, both of one identity, so its triplet loss exists only on
the gathered batch. (With 1 clip per process, the issue's wording, the global batch would
hold 2 clips, on which the batch-hard triplet is 0 whatever is gathered, and the CLI
refuses P or K = 1.) ``--pad 0``: the zero border of the pad-and-crop augmentation makes
large regions of exactly equal activations, and where such a plateau sits at a ReLU's
kink, float32 rounding (one process sums the batch norm statistics in another order than
two) flips whole plateaus, so gradients differ by percents; without the border the
gradients agree to 1e-6 relative.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stgraph.data import PKSampler
from stgraph.distributed import SyncBatchNorm, convert_sync_batchnorm, gather_batch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ARGS = ["train", "--model", "tp", "--dataset", "synthetic", "--backbone", "resnet18",
        "--height", "64", "--width", "32", "--seq-len", "4", "--batch-ids", "2",
        "--batch-instances", "2", "--seed", "3", "--workers", "0", "--no-progress",
        "--test-batch", "16", "--pad", "0"]


def _env():
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*args, nproc=1):
    cmd = [sys.executable]
    if nproc > 1:
        cmd += ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                "--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    proc = subprocess.run([*cmd, str(HERE / "ddp_train.py"), *args], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _weights(folder, name="checkpoint.pth"):
    return torch.load(Path(folder) / name, weights_only=True)["state_dict"]


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.mark.slow
def test_two_processes_equal_one_on_the_global_batch_and_resume(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _run(*ARGS, "--epochs", "1", "--output", str(one))
    proc = _run(*ARGS, "--epochs", "1", "--sync-bn", "--output", str(two), nproc=2)
    assert proc.stdout.count("wrote ") == 1  # rank 0 alone prints the table and writes
    diff = _max_diff(_weights(one), _weights(two))
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    print(f"3 steps: max weight difference {diff:.2e}; one process rank1 "
          f"{m1['rank1']:.4f} mAP {m1['mAP']:.4f}, two rank1 {m2['rank1']:.4f} "
          f"mAP {m2['mAP']:.4f}")
    assert diff < 1e-5
    for key in ("rank1", "rank5", "mAP"):
        assert m1[key] == pytest.approx(m2[key], abs=1e-6)
    h1, h2 = m1["history"][0], m2["history"][0]
    for key in ("loss", "ce", "triplet"):
        assert h1[key] == pytest.approx(h2[key], abs=1e-5)
    assert m2["processes"] == 2
    # --resume under torchrun: a second epoch equals one process's second epoch
    one2 = tmp_path / "one2"
    _run(*ARGS, "--epochs", "2", "--output", str(one2))
    _run(*ARGS, "--epochs", "2", "--sync-bn", "--output", str(two), "--resume", nproc=2)
    assert len(json.loads((two / "metrics.json").read_text())["history"]) == 2
    diff2 = _max_diff(_weights(one2), _weights(two))
    print(f"6 steps (resumed after 3): max weight difference {diff2:.2e}")
    assert diff2 < 1e-5


def test_pk_sampler_shares_put_together_are_the_global_batch():
    pids = [i // 3 for i in range(30)]  # 10 identities x 3 tracklets
    full = list(PKSampler(pids, 4, 2, seed=1))
    shares = [list(PKSampler(pids, 4, 2, seed=1, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(shares[0]) == len(full) // 2
    for b in range(len(full) // 8):
        assert shares[0][4 * b:4 * b + 4] + shares[1][4 * b:4 * b + 4] == full[8 * b:8 * b + 8]
        # K = 2 tracklets of an identity stay on one process
        for share in shares:
            chunk = [pids[i] for i in share[4 * b:4 * b + 4]]
            assert chunk[0] == chunk[1] and chunk[2] == chunk[3]
    with pytest.raises(ValueError, match="multiple of 3"):
        PKSampler(pids, 4, 2, num_replicas=3, rank=0)


def test_without_a_process_group_nothing_is_gathered_or_synchronised():
    x = torch.randn(4, 3, requires_grad=True)
    assert gather_batch(x) is x
    net = convert_sync_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1),
                                                     torch.nn.BatchNorm2d(4)), "cpu")
    assert isinstance(net[1], SyncBatchNorm)
    ref = torch.nn.BatchNorm2d(4)
    inp = torch.randn(2, 4, 3, 3)
    assert torch.allclose(net[1](inp), ref(inp))  # plain batch norm in one process
    assert set(net[1].state_dict()) == set(ref.state_dict())


def test_sync_bn_in_one_process_warns(tmp_path, capsys):
    from stgraph.cli import main

    code = main([*ARGS, "--epochs", "1", "--sync-bn", "--output", str(tmp_path / "o"),
                 "--batch-ids", "8", "--batch-instances", "2", "--height", "32",
                 "--width", "16", "--seq-len", "2", "--test-batch", "64"])
    assert code == 0
    assert "--sync-bn has no effect in a single process" in capsys.readouterr().err
