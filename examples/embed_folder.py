"""Embed the tracklets of a folder with a trained model and plot the top-5 of one query.

    python examples/embed_folder.py                      # a demo folder and an untrained TP
    python examples/embed_folder.py --checkpoint runs/prid-tp/checkpoint.pth \\
        --frames-dir tracks/ --query person_0001 --out top5.png

The folder holds one sub-folder of frames (``.png`` / ``.jpg``) per tracklet, e.g. the
tracklets a tracker wrote. Every tracklet is embedded by
:class:`stgraph.inference.FeatureExtractor` as ``stgraph evaluate`` embeds test tracklets
(all frames in consecutive clips, mean pooling); the query (``--query``, a sub-folder
name, default the first) is ranked against all other tracklets by Euclidean distance and
its 5 nearest are drawn with :func:`stgraph.viz.plot_ranking`. Without ``--frames-dir``
the script writes a demo folder of synthetic tracklets (``SyntheticReID``, two cameras
per person, named ``pid_cam``) so it runs anywhere; without ``--checkpoint`` it embeds
with an untrained TP (ResNet-18, 64 x 32, T 4): the ranking is then only a demo of the
API. Identities are read from folder names ``<pid>_<anything>`` when they are numbers, so
matches are framed green and mismatches red.
"""

import argparse
import tempfile
from pathlib import Path

import torch

from stgraph.inference import FeatureExtractor, list_tracklet_folders
from stgraph.viz import plot_ranking


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="a checkpoint of 'stgraph train' (default: an "
                                        "untrained TP, a demo)")
    p.add_argument("--frames-dir", help="one sub-folder of frames per tracklet (default: a "
                                        "demo folder of synthetic tracklets)")
    p.add_argument("--query", help="the query's sub-folder name (default: the first)")
    p.add_argument("--top", type=int, default=5, help="gallery tracklets drawn")
    p.add_argument("--ids", type=int, default=4, help="persons in the demo folder")
    p.add_argument("--out", default="embed_folder_top5.png", help="figure file")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: all cores)")
    return p.parse_args(argv)


def demo_folder(root: Path, ids: int) -> Path:
    """Write ``ids`` synthetic persons x 2 cameras as ``root/<pid>_<cam>/NNN.png``."""
    from stgraph.data import SyntheticReID

    data = SyntheticReID(num_train_ids=2, num_test_ids=ids, min_frames=4, max_frames=8,
                         image_size=(128, 64), seed=3)
    for t in data.query + data.gallery:
        folder = root / f"{t.pid:04d}_c{t.camid}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, key in enumerate(t.frames):
            data.read_frame(key).save(folder / f"{i:03d}.png")
    return root


def _pid(name: str):
    head = name.split("_")[0]
    return int(head) if head.isdigit() else None


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.frames_dir) if args.frames_dir else demo_folder(Path(tmp), args.ids)
        if args.checkpoint:
            fx = FeatureExtractor.from_checkpoint(args.checkpoint)
        else:
            from stgraph.models import create_model

            torch.manual_seed(0)
            model = create_model("tp", num_classes=2, backbone="resnet18")
            fx = FeatureExtractor(model, seq_len=4, height=64, width=32)
        tracks = list_tracklet_folders(root)
        names = [n for n, _ in tracks]
        feats = fx.embed_batch([frames for _, frames in tracks])  # (N, D)
        print(f"embedded {len(names)} tracklets ({fx.num_clips} clips of {fx.seq_len} "
              f"frames) into {feats.shape[1]}-d features with {fx}")
        q = names.index(args.query) if args.query else 0
        gallery = [i for i in range(len(names)) if i != q]
        dist = torch.cdist(feats[q:q + 1], feats[gallery])[0]  # (G,) Euclidean
        k = min(args.top, len(gallery))
        order = torch.argsort(dist, stable=True)[:k].tolist()
        ranked = [(names[gallery[j]], float(dist[j])) for j in order]
        for r, (name, d) in enumerate(ranked, start=1):
            print(f"  {r}. {name}  d={d:.4f}")

        from PIL import Image

        def images(i):  # the first 4 frames of tracklet i
            return [Image.open(p).convert("RGB") for p in tracks[i][1][:4]]

        pids = [_pid(names[i]) for i in gallery]
        known = _pid(names[q]) is not None and all(p is not None for p in pids)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        plot_ranking(images(q), [images(i) for i in gallery], dist,
                     query_pid=_pid(names[q]) if known else None,
                     gallery_pids=pids if known else None, top_k=k,
                     title=f"query {names[q]}: top-{k} of {len(gallery)}", save=out)
        print(f"wrote {out}")
    return {"query": names[q], "ranked": ranked, "figure": str(out),
            "num_tracklets": len(names)}


if __name__ == "__main__":
    main()
