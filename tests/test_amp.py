"""Mixed precision (``--amp``): bfloat16 autocast on the CPU trains, starts where float32
starts, keeps the losses in float32, and is a setting ``--resume`` compares."""

import pytest
import torch

from stgraph.data import SyntheticReID
from stgraph.engine import Trainer, make_train_loader, mixed_precision
from stgraph.losses import ReIDLoss
from stgraph.models import create_model


def _losses(amp: bool, steps: int = 20, seed: int = 0) -> list[float]:
    data = SyntheticReID(num_train_ids=8, num_test_ids=2, image_size=(64, 32), seed=0)
    loader = make_train_loader(data, seq_len=4, height=64, width=32, batch_ids=4,
                               batch_instances=2, seed=seed)
    torch.manual_seed(seed)
    model = create_model("tp", num_classes=data.num_train_pids, backbone="resnet18")
    autocast, scaler, dtype = mixed_precision("cpu")
    assert dtype == torch.bfloat16 and scaler is None
    trainer = Trainer(model, loader, ReIDLoss(data.num_train_pids),
                      torch.optim.Adam(model.parameters(), lr=3e-4), epochs=1, verbose=False,
                      autocast=autocast if amp else None)
    model.train()
    losses, epoch = [], 0
    while len(losses) < steps:
        trainer._set_epoch(epoch)
        for batch in loader:
            losses.append(trainer._step(batch, epoch, len(losses))["loss"])
            if len(losses) == steps:
                break
        epoch += 1
    return losses


@pytest.mark.slow
@pytest.mark.learns
def test_bf16_autocast_loss_falls_and_starts_at_the_fp32_loss(train_seed):
    amp, fp32 = _losses(True, seed=train_seed), _losses(False, steps=1, seed=train_seed)
    print(f"\n[learns] amp seed {train_seed}: first loss fp32 {fp32[0]:.4f}, bf16 "
          f"{amp[0]:.4f}; bf16 mean of steps 1-5 {sum(amp[:5]) / 5:.4f}, of steps 16-20 "
          f"{sum(amp[-5:]) / 5:.4f}")
    assert amp[0] == pytest.approx(fp32[0], rel=0.02)
    # 5 seeds (conftest.train_seed): the ratio is 0.61-0.85
    assert sum(amp[-5:]) / 5 < 0.92 * sum(amp[:5]) / 5


def test_losses_are_float32_for_half_outputs():
    g = torch.Generator().manual_seed(0)
    feats = (torch.randn(8, 16, generator=g) * 300).half().requires_grad_()  # |x|^2 > 65504
    logits = torch.randn(8, 4, generator=g).bfloat16().requires_grad_()
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss, parts = ReIDLoss(4)({"features": (feats,), "logits": (logits,)}, pids)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert feats.grad.dtype == torch.float16 and torch.isfinite(feats.grad.float()).all()


def test_amp_on_an_unsupported_device_is_a_clear_error():
    with pytest.raises(ValueError, match="amp: mixed precision runs on cpu .* not on meta"):
        mixed_precision("meta")


def test_distances_of_half_features_are_float32():
    from stgraph.eval import compute_distance_matrix

    q = torch.randn(3, 8).bfloat16()
    assert compute_distance_matrix(q, q).dtype == torch.float32


def test_cli_amp_is_recorded_and_compared_by_resume(tmp_path, capsys):
    # 64 x 32, not the 32 x 16 of the other quick CLI tests: torch 2.13's CPU bfloat16
    # convolution (oneDNN) returns NaN in about a third of the calls of a stride-2 3x3
    # convolution on a 4 x 2 map (ResNet's layer3 at 32 x 16 input); 8 x 4 is fine
    from stgraph.cli import main

    small = ["train", "--model", "tp", "--dataset", "synthetic", "--backbone", "resnet18",
             "--height", "64", "--width", "32", "--seq-len", "2", "--batch-ids", "8",
             "--batch-instances", "2", "--test-batch", "64", "--no-progress", "--workers", "0",
             "--output", str(tmp_path / "o")]
    assert main([*small, "--epochs", "1", "--amp"]) == 0
    state = torch.load(tmp_path / "o" / "last.pth", weights_only=True)
    assert state["config"]["args"]["amp"] is True
    assert "grad_scaler" in state["trainer"]  # None on the CPU (bfloat16 needs no scaler)
    capsys.readouterr()
    assert main([*small, "--epochs", "2", "--resume"]) == 2
    assert "--amp False (last.pth: True)" in capsys.readouterr().err
