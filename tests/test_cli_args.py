"""stgraph.cli_args: the argument groups the commands share (same flags, checks, defaults)."""

import pytest

from stgraph.cli import build_parser

EMBED = ("eval_feature", "pool", "last_clip", "test_batch", "workers", "device",
         "no_progress")


def _parse(*argv):
    return vars(build_parser().parse_args(list(argv)))


def test_extract_embeds_with_the_defaults_of_evaluate():
    ev = _parse("evaluate", "--checkpoint", "c.pth")
    ex = _parse("extract", "--checkpoint", "c.pth", "--out", "f.npz")
    tr = _parse("train", "--model", "tp", "--dataset", "synthetic", "--output", "o")
    for key in EMBED:
        assert ex[key] == ev[key] == tr[key], key
    assert ev["last_clip"] == "overlap"
    assert _parse("evaluate", "--checkpoint", "c", "--last-clip", "pad")["last_clip"] == "pad"
    for key in ("dataset", "root", "split_file", "split_id", "keypoints"):
        assert key in ex and key in ev


@pytest.mark.parametrize("command", [["evaluate", "--checkpoint", "c"],
                                     ["extract", "--checkpoint", "c", "--out", "f"]])
def test_extract_and_evaluate_refuse_the_same_values(command, capsys):
    for bad in (["--test-batch", "0"], ["--workers", "-1"], ["--pool", "median"],
                ["--last-clip", "wrap"]):
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args([*command, *bad])
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "must be >= 1, got 0" in err and "must be >= 0, got -1" in err
    assert "--last-clip: invalid choice: 'wrap'" in err


def test_train_and_cache_share_the_backbone_group_with_their_own_defaults():
    tr = _parse("train", "--model", "tp", "--dataset", "synthetic", "--output", "o")
    ca = _parse("cache", "--dataset", "synthetic", "--out", "c")
    assert (tr["backbone"], tr["pretrained"]) == ("resnet50", None)
    assert (ca["backbone"], ca["pretrained"]) == ("efficientnet_lite0", "imagenet")
    for key in ("last_stride", "height", "width"):
        assert tr[key] == ca[key], key
