"""Training loop plumbing: epochs reach the loader workers; a few steps learn."""

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
