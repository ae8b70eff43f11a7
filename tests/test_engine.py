"""Training loop plumbing: epochs reach the loader workers; a few steps learn."""

import pytest
import torch

from stgraph.data import SyntheticReID
from stgraph.engine import make_train_loader, warmup_cosine


def _first_batch(loader, epoch):
    loader.dataset.set_epoch(epoch)
    loader.sampler.set_epoch(epoch)
    return next(iter(loader))


def test_epoch_reaches_worker_processes():
    data = SyntheticReID(num_train_ids=4, num_test_ids=2, image_size=(32, 16), seed=0)
    loader = make_train_loader(data, seq_len=2, height=32, width=16, batch_ids=2,
                               batch_instances=2, seed=0, workers=2)
    a0, a0_again, a1 = (_first_batch(loader, e) for e in (0, 0, 1))
    assert torch.equal(a0["clip"], a0_again["clip"])  # reproducible
    assert not torch.equal(a0["clip"], a1["clip"])  # a new epoch samples anew


def test_warmup_cosine_schedule_values():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.01 and abs(lrs[1] - 0.505) < 1e-9 and lrs[2] == 1.0
    assert abs(lrs[6] - 0.5) < 1e-9  # halfway through the cosine
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))


class _RecordsKeypoints(torch.nn.Module):
    """A model that takes keypoints and remembers the ones it was given."""

    input_keys = ("keypoints",)

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)
        self.seen = []

    def forward(self, clips, keypoints=None):
        self.seen.append(keypoints)
        f = self.lin(clips.mean(dim=(1, 3, 4)))
        return {"embedding": f, "features": (f,), "logits": (f,), "branches": ("x",)}


def test_models_that_take_keypoints_get_each_clips_keypoints():
    from stgraph.engine import evaluate, train_one_epoch
    from stgraph.losses import ReIDLoss

    data = SyntheticReID(num_train_ids=4, num_test_ids=2, image_size=(32, 16), seed=0)
    model = _RecordsKeypoints()
    loader = make_train_loader(data, seq_len=2, height=32, width=16, batch_ids=2,
                               batch_instances=2, seed=0, keypoints=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    train_one_epoch(model, loader, ReIDLoss(4), opt, epoch=0, progress=False)
    expected = _first_batch(loader, 0)["keypoints"]
    assert torch.equal(model.seen[0], expected) and expected.shape == (4, 2, 17, 3)
    model.seen.clear()
    evaluate(model, data, seq_len=2, height=32, width=16, progress=False)
    assert model.seen and all(k is not None and k.shape[1:] == (2, 17, 3) for k in model.seen)


class _WithBackbone(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(3, 4)
        self.head = torch.nn.Linear(4, 2)
        self.frozen = torch.nn.Parameter(torch.zeros(1), requires_grad=False)


def test_build_optimizer_gives_the_backbone_its_own_lr():
    from stgraph.engine import build_optimizer

    model = _WithBackbone()
    opt = build_optimizer(model, lr=1e-3, weight_decay=1e-4, backbone_lr_mult=0.1)
    (bb, rest) = opt.param_groups
    assert bb["lr"] == pytest.approx(1e-4) and rest["lr"] == 1e-3
    assert {id(p) for p in bb["params"]} == {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in rest["params"]} == {id(p) for p in model.head.parameters()}
    assert bb["weight_decay"] == rest["weight_decay"] == 1e-4  # model.frozen is in neither
    sched = warmup_cosine(opt, total_steps=10, warmup_steps=2)  # scales both groups
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-6, 1e-5])
    for _ in range(2):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4, 1e-3])
    only_head = build_optimizer(model, lr=1e-3, backbone_lr_mult=0.0)
    assert len(only_head.param_groups) == 1 and only_head.param_groups[0]["lr"] == 1e-3
    plain = build_optimizer(torch.nn.Linear(3, 2), lr=2e-3)  # no .backbone: one group
    assert len(plain.param_groups) == 1 and len(plain.param_groups[0]["params"]) == 2
    with pytest.raises(ValueError, match="backbone_lr_mult must be >= 0"):
        build_optimizer(model, lr=1e-3, backbone_lr_mult=-1.0)


def test_make_train_loader_passes_the_augmentation_switches():
    from stgraph.data.transforms import ClipAugment

    data = SyntheticReID(num_train_ids=4, num_test_ids=2, image_size=(32, 16), seed=0)
    kw = dict(seq_len=2, height=32, width=16, batch_ids=2, batch_instances=2)
    # default pad: the recipe's 10 px per 128 px of width (here 16 px wide -> 1 px)
    assert make_train_loader(data, **kw).dataset.augment == ClipAugment(True, 1, 0.5)
    assert make_train_loader(data, **kw, pad=10).dataset.augment == ClipAugment(True, 10, 0.5)
    wide = dict(kw, height=256, width=128)
    assert make_train_loader(data, **wide).dataset.augment == ClipAugment(True, 10, 0.5)
    off = make_train_loader(data, **kw, flip=False, pad=0, erasing=0.0)
    assert off.dataset.augment == ClipAugment(False, 0, 0.0)
    with pytest.raises(ValueError, match="pad must be an int >= 0"):
        make_train_loader(data, **kw, pad=-1)


class _TinyNet(torch.nn.Module):
    """A small model with dropout (global RNG) for Trainer tests."""

    def __init__(self, num_classes=4):
        super().__init__()
        self.lin = torch.nn.Linear(3, 8)
        self.drop = torch.nn.Dropout(0.5)
        self.cls = torch.nn.Linear(8, num_classes)

    def forward(self, clips):
        f = self.drop(self.lin(clips.mean(dim=(1, 3, 4))))
        return {"embedding": f, "features": (f,), "logits": (self.cls(f),), "branches": ("x",)}


def _trainer(epochs, seed=0, **kw):
    from stgraph.engine import Trainer, build_optimizer
    from stgraph.losses import ReIDLoss

    data = SyntheticReID(num_train_ids=4, num_test_ids=2, image_size=(32, 16), seed=0)
    torch.manual_seed(seed)
    model = _TinyNet()
    loader = make_train_loader(data, seq_len=2, height=16, width=8, batch_ids=2,
                               batch_instances=2, seed=seed)
    opt = build_optimizer(model, 1e-2)
    sched = warmup_cosine(opt, epochs * len(loader), len(loader))
    return Trainer(model, loader, ReIDLoss(4), opt, sched, epochs=epochs, verbose=False, **kw)


def test_trainer_state_dict_resumes_bit_identically(tmp_path):
    full = _trainer(3)
    full.fit()
    first = _trainer(3)
    first.train_epoch()
    torch.save(first.state_dict(), tmp_path / "s.pth")
    torch.manual_seed(123)  # a restart: other global RNG state, new objects
    second = _trainer(3, seed=0)
    second.load_state_dict(torch.load(tmp_path / "s.pth", weights_only=True))
    assert second.epoch == 1 and len(second.history) == 1
    second.fit()
    for (k, a), b in zip(full.model.state_dict().items(), second.model.state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k
    assert [r["loss"] for r in full.history] == [r["loss"] for r in second.history]
    assert set(full.history[0]) >= {"epoch", "loss", "ce", "triplet", "acc", "lr", "seconds"}


def test_trainer_writes_logs_last_and_best(tmp_path):
    import json

    config = {"model": "tp", "model_kwargs": {}, "num_classes": 4}
    scores = iter([0.5, 0.25, 0.75])
    best_seen = []

    def fake_eval(model):
        return {"rank1": 0.5, "rank5": 1.0, "rank10": 1.0, "rank20": 1.0, "mAP": next(scores),
                "num_query": 2, "num_gallery": 2}

    def after(trainer, record):
        best = torch.load(tmp_path / "best.pth", weights_only=True)
        best_seen.append((best["config"]["epoch"], best["metrics"]["mAP"]))
        last = torch.load(tmp_path / "last.pth", weights_only=True)
        assert last["trainer"]["epoch"] == record["epoch"]

    trainer = _trainer(3, evaluate_fn=fake_eval, eval_every=1, output=tmp_path,
                       config=config, tensorboard=False, callbacks=[after])
    trainer.fit()
    assert best_seen == [(1, 0.5), (1, 0.5), (3, 0.75)]
    assert trainer.best == {"epoch": 3, "mAP": 0.75}
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3]
    assert [x["mAP"] for x in lines] == [0.5, 0.25, 0.75]
    assert all(len(x["lr"]) == 1 and x["loss"] > 0 for x in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pth", "last.pth", "log.jsonl"]


def test_trainer_refuses_bad_settings():
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        _trainer(0)
    with pytest.raises(ValueError, match="output needs config"):
        _trainer(1, output="x")


def test_tensorboard_scalars_when_installed_else_nothing(tmp_path):
    import importlib.util

    config = {"model": "tp", "model_kwargs": {}, "num_classes": 4}
    _trainer(1, output=tmp_path, config=config).fit()
    if importlib.util.find_spec("tensorboard") is None:
        assert not (tmp_path / "tb").exists()  # the extra 'tb' is optional: skipped silently
    else:
        assert any(p.name.startswith("events.") for p in (tmp_path / "tb").iterdir())


def test_frozen_bn_epochs_keep_the_backbones_statistics_then_release_them():
    from stgraph.engine import Trainer, build_optimizer
    from stgraph.losses import ReIDLoss
    from stgraph.models import create_model

    data = SyntheticReID(num_train_ids=4, num_test_ids=2, image_size=(64, 32), seed=0)
    torch.manual_seed(0)
    model = create_model("tp", num_classes=4, backbone="resnet18")
    loader = make_train_loader(data, seq_len=2, height=64, width=32, batch_ids=2,
                               batch_instances=2, seed=0)
    trainer = Trainer(model, loader, ReIDLoss(4), build_optimizer(model, 1e-3), epochs=2,
                      verbose=False, frozen_bn_epochs=1)
    stats = (model.backbone.bn1.running_mean, model.necks[0].bn.running_mean)
    before = [s.clone() for s in stats]
    weight = model.backbone.bn1.weight.detach().clone()
    trainer.run_epoch(0)
    assert torch.equal(stats[0], before[0])  # the backbone's statistics stayed
    assert not torch.equal(model.backbone.bn1.weight, weight)  # its affine weights trained
    assert not torch.equal(stats[1], before[1])  # the head's BNNeck updates as usual
    trainer.run_epoch(1)
    assert not torch.equal(stats[0], before[0])  # released after the first epoch
    with pytest.raises(ValueError, match="frozen_bn_epochs must be >= 0, got -1"):
        Trainer(model, loader, ReIDLoss(4), build_optimizer(model, 1e-3), epochs=1,
                frozen_bn_epochs=-1)


def test_bn_momentum_reaches_every_backbone_batch_norm_and_its_running_statistics(tmp_path):
    from stgraph.config import TrainSettings
    from stgraph.engine import set_bn_momentum
    from stgraph.models import create_model
    from stgraph.recipe import train

    model = create_model("tp", num_classes=4, backbone="efficientnet_lite0")
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {m.momentum for m in norms} == {0.01}  # TF's 0.99, Lite0's own
    assert set_bn_momentum(model.backbone, 0.1) == len(norms) > 40
    assert {m.momentum for m in norms} == {0.1} and model.necks[0].bn.momentum == 0.1
    # one step in train mode moves the running mean by momentum x (batch mean - running)
    bn = torch.nn.BatchNorm1d(3)
    set_bn_momentum(bn, 0.25)
    x = torch.arange(6.0).reshape(2, 3)
    bn(x)
    torch.testing.assert_close(bn.running_mean, 0.25 * x.mean(0))
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="momentum must be > 0 and <= 1"):
            set_bn_momentum(bn, bad)
    # a run's setting: the trained backbone's batch norms have it, and it is recorded
    settings = TrainSettings(model="tp", dataset="synthetic", backbone="resnet18", height=64,
                             width=32, seq_len=2, batch_ids=2, batch_instances=2, epochs=1,
                             workers=0, no_progress=True, bn_momentum=0.3,
                             dataset_kwargs={"num_train_ids": 4, "num_test_ids": 2,
                                             "image_size": [64, 32], "seed": 0},
                             output=str(tmp_path / "run"))
    seen = []
    train(settings, callbacks=[lambda trainer, record: seen.append(
        {m.momentum for m in trainer.model.backbone.modules()
         if isinstance(m, torch.nn.BatchNorm2d)})])
    from stgraph.checkpoint import load_checkpoint

    assert seen == [{0.3}]
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pth")[1]["args"]["bn_momentum"] == 0.3
