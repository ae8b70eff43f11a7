r"""Pose keypoints for CTL: reading COCO keypoint results, a prior pose, heatmaps.

Liu et al., "Spatial-Temporal Correlation and Topology Learning for Person
Re-Identification in Videos", CVPR 2021, sec. 3.1: "The heat maps m of
key-points are generated through the key-point estimator, which are then
normalized with a softmax function", and eq. (1) pools the feature map with
them. CTL's keypoints come from outside the model (stgraph DESIGN.md): a COCO
keypoint results file (:func:`load_coco_keypoints`), a pose model the user
passes in, or the fixed :func:`prior_pose`. :func:`keypoint_heatmaps` turns
keypoints into the softmax-normalised heatmaps eq. (1) needs.

Coordinates are continuous pixel coordinates as in COCO: an image of width
``W_img`` spans ``[0, W_img]``, so pixel column ``j`` covers ``[j, j + 1)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "flip_keypoints",
    "heatmap_softmax",
    "keypoint_heatmaps",
    "load_coco_keypoints",
    "prior_pose",
]


class _MissingFileError(FileNotFoundError, ValueError):
    """A missing keypoints file: both a ``FileNotFoundError`` and a ``ValueError``."""


def _parse_entries(path: Path, text: str) -> list[tuple[str, object]]:
    """The JSON entries of ``text`` as ``(where, entry)`` pairs.

    A JSON array (any layout, including one object per line inside ``[ ]``)
    is read whole; otherwise the text is read as JSON Lines, one object per
    non-blank line (a trailing comma and lone ``[`` / ``]`` lines tolerated).
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"keypoints file {path} is empty; expected a JSON list of detections")
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, list):
        return [(f"entry {i}", e) for i, e in enumerate(data)]
    if isinstance(data, dict):
        return [("entry 0", data)]
    entries = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip().rstrip(",").strip()
        if not line or line in ("[", "]"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"keypoints file {path}: line {lineno} is not valid JSON ({err.msg}); expected a "
                "JSON list of detections or one JSON object per line"
            ) from None
        entries.append((f"entry {len(entries)} (line {lineno})", obj))
    return entries


def load_coco_keypoints(path: str | Path, num_keypoints: int = 17) -> dict[Hashable, np.ndarray]:
    r"""Read a COCO keypoint results file: the best detection of each image.

    The file is the COCO / AlphaPose results format, either a JSON list or one
    JSON object per line (JSON Lines)::

        {"image_id": ..., "category_id": 1, "keypoints": [x1, y1, s1, ...], "score": 0.9}

    Where an image has several detections, the one with the highest ``score``
    is kept (the first of equal scores). An entry without ``score`` is ranked
    by the mean of its keypoint scores (our choice). ``category_id`` is not
    checked.

    Args:
        path (str or Path): the results file.
        num_keypoints (int, optional): keypoints per detection ``K``; each
            ``keypoints`` list must hold ``3 * K`` numbers. (default: :obj:`17`)

    Returns:
        dict: ``image_id`` (as written in the file) -> float32 array
        ``(K, 3)`` of rows ``(x, y, score)`` in the image's pixel coordinates.

    Raises:
        FileNotFoundError: the file does not exist (also a ``ValueError``).
        ValueError: the file is empty or not JSON; an entry is not an object,
            lacks ``image_id`` or ``keypoints``, has a ``keypoints`` list of
            the wrong length, holds a NaN, an infinity or a non-number, a keypoint
            score outside [0, 1] or a (scored) keypoint at a negative position (those
            beyond the frame are refused when the frame is read). The
            message names the file, the entry index (and line) and the
            ``image_id``.

    Examples:
        >>> import tempfile, os
        >>> f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        >>> _ = f.write('{"image_id": "a.jpg", "keypoints": [1, 2, 0.5], "score": 0.9}\n')
        >>> f.close()
        >>> load_coco_keypoints(f.name, num_keypoints=1)["a.jpg"]
        array([[1. , 2. , 0.5]], dtype=float32)
        >>> os.unlink(f.name)
    """
    path = Path(path)
    if not path.is_file():
        raise _MissingFileError(
            f"keypoints file not found: {path}; pass the COCO keypoint results JSON of the dataset"
        )
    entries = _parse_entries(path, path.read_text(encoding="utf-8"))
    best: dict[Hashable, tuple[float, np.ndarray]] = {}
    for where, entry in entries:
        if not isinstance(entry, dict):
            raise ValueError(
                f"keypoints file {path}: {where} is a {type(entry).__name__}, expected an object "
                "with image_id and keypoints"
            )
        image_id = entry.get("image_id")
        if image_id is None or "keypoints" not in entry:
            missing = "image_id" if image_id is None else "keypoints"
            raise ValueError(
                f"keypoints file {path}: {where} (image_id={image_id!r}) has no {missing!r}"
            )
        if isinstance(image_id, (list, dict)):
            raise ValueError(
                f"keypoints file {path}: {where} has a {type(image_id).__name__} as image_id; "
                "expected a string or int"
            )
        raw = entry["keypoints"]
        if not isinstance(raw, list) or len(raw) != 3 * num_keypoints:
            got = len(raw) if isinstance(raw, list) else type(raw).__name__
            raise ValueError(
                f"keypoints file {path}: {where} (image_id={image_id!r}) has keypoints of length "
                f"{got}, expected {3 * num_keypoints} (x, y, score for {num_keypoints} keypoints)"
            )
        try:
            kp = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"keypoints file {path}: {where} (image_id={image_id!r}) has non-numeric keypoints"
            ) from None
        if not np.isfinite(kp).all():
            bad = int(np.flatnonzero(~np.isfinite(kp))[0])
            raise ValueError(
                f"keypoints file {path}: {where} (image_id={image_id!r}) has a non-finite value "
                f"({kp[bad]}) at keypoints[{bad}] (keypoint {bad // 3}); NaN and infinity are "
                "not allowed, drop the detection or use score 0"
            )
        kp = kp.reshape(num_keypoints, 3)
        bad = np.flatnonzero((kp[:, 2] < 0) | (kp[:, 2] > 1))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"keypoints file {path}: {where} (image_id={image_id!r}) has keypoint {i} with "
                f"score {kp[i, 2]:g}, outside [0, 1]; keypoint scores must be probabilities"
            )
        if (kp[kp[:, 2] > 0, :2] < 0).any():
            i = int(np.flatnonzero((kp[:, 2] > 0) & (kp[:, :2] < 0).any(axis=1))[0])
            raise ValueError(
                f"keypoints file {path}: {where} (image_id={image_id!r}) has keypoint {i} at "
                f"({kp[i, 0]:g}, {kp[i, 1]:g}), outside the image (negative); keypoints are in "
                "the image's pixels (give missing ones score 0)"
            )
        if "score" in entry:
            score = entry["score"]
            if not isinstance(score, (int, float)) or not math.isfinite(score):
                raise ValueError(
                    f"keypoints file {path}: {where} (image_id={image_id!r}) has score "
                    f"{score!r}; expected a finite number"
                )
            score = float(score)
        else:
            score = float(kp[:, 2].mean())
        if image_id not in best or score > best[image_id][0]:
            best[image_id] = (score, kp.astype(np.float32))
    return {image_id: kp for image_id, (_, kp) in best.items()}


#: Keypoint positions of the prior pose as (x / width, y / height), COCO order.
#: Hand-chosen: an upright pedestrian facing the camera (their left on the
#: image's right), rounded and made left/right symmetric from the medians of
#: frontal CUHK03 crops with confident shoulders.
PRIOR_POSE_FRACTIONS: tuple[tuple[float, float], ...] = (
    (0.50, 0.10),                # nose
    (0.54, 0.08), (0.46, 0.08),  # eyes (left, right)
    (0.59, 0.09), (0.41, 0.09),  # ears
    (0.70, 0.21), (0.30, 0.21),  # shoulders
    (0.76, 0.36), (0.24, 0.36),  # elbows
    (0.74, 0.48), (0.26, 0.48),  # wrists
    (0.62, 0.50), (0.38, 0.50),  # hips
    (0.60, 0.70), (0.40, 0.70),  # knees
    (0.59, 0.89), (0.41, 0.89),  # ankles
)  # fmt: skip


def prior_pose(height: float, width: float) -> np.ndarray:
    """Mean keypoint positions of an upright pedestrian filling a ``height x width`` box.

    Used when no keypoints are available, so that CTL still runs: the 17 COCO
    keypoints at the fixed fractions :data:`PRIOR_POSE_FRACTIONS` of the box
    (a frontal pedestrian: the left shoulder is on the image's right), each
    with score 1.

    Args:
        height (float): box (image) height in pixels.
        width (float): box (image) width in pixels.

    Returns:
        numpy.ndarray: float32 ``(17, 3)`` rows ``(x, y, 1)``.

    Raises:
        ValueError: a non-positive size.

    Examples:
        >>> prior_pose(256, 128)[5]          # left shoulder
        array([89.6 , 53.76,  1.  ], dtype=float32)
    """
    if not (height > 0 and width > 0):
        raise ValueError(f"prior_pose needs a positive height and width, got {height} x {width}")
    frac = np.asarray(PRIOR_POSE_FRACTIONS, dtype=np.float64)
    out = np.ones((len(frac), 3), dtype=np.float64)
    out[:, 0] = frac[:, 0] * width
    out[:, 1] = frac[:, 1] * height
    return out.astype(np.float32)


def flip_keypoints(keypoints: Tensor, width: float,
                   flip_index: Sequence[int] | None = None) -> Tensor:
    r"""Keypoints of the left-right mirrored image.

    :math:`x \mapsto W - x` (pixel ``i`` spans ``[i, i + 1)``, so the mirror
    of pixel ``i`` is pixel ``W - 1 - i``), and the rows permuted so that
    ``left_*`` and ``right_*`` keypoints swap names, as a mirrored image's pose
    estimate would give. ``y`` and scores are kept.

    Args:
        keypoints (Tensor): ``(..., K, 3)`` rows ``(x, y, score)`` in pixels.
        width (float): image width :math:`W` in pixels.
        flip_index (sequence of int, optional): the mirror of each keypoint,
            e.g. :meth:`Skeleton.flip_index() <stgraph.graph.Skeleton.flip_index>`.
            (default: that of :data:`~stgraph.graph.COCO17`)

    Returns:
        Tensor of the input's shape.

    Raises:
        ValueError: keypoints not ``(..., K, 3)`` or ``flip_index`` not of length ``K``.
    """
    if flip_index is None:
        from stgraph.graph.skeleton import COCO17

        flip_index = COCO17.flip_index()
    if keypoints.dim() < 2 or keypoints.size(-1) != 3:
        raise ValueError(f"expected keypoints of shape (..., K, 3), got {tuple(keypoints.shape)}")
    if len(flip_index) != keypoints.size(-2):
        raise ValueError(f"flip_index has {len(flip_index)} entries for "
                         f"{keypoints.size(-2)} keypoints")
    out = keypoints[..., list(flip_index), :].clone()
    out[..., 0] = width - out[..., 0]
    return out


def heatmap_softmax(heatmaps: Tensor, temperature: float = 1.0) -> Tensor:
    r"""Softmax of heatmaps over their ``H * W`` cells (CTL sec. 3.1).

    :math:`m_k(h, w) = \exp(z_k(h, w) / \tau) / \sum_{h', w'} \exp(z_k(h', w') / \tau)`.
    Use it on the raw heatmaps of a pose model before
    :class:`~stgraph.graph.KeypointGraphBuilder`.

    Args:
        heatmaps (Tensor): ``(..., H, W)``.
        temperature (float, optional): :math:`\tau`; 1 is the paper's plain
            softmax, smaller values sharpen. (default: :obj:`1.0`)

    Returns:
        Tensor of the input's shape; each ``(H, W)`` map sums to 1.
    """
    if heatmaps.dim() < 2:
        raise ValueError(f"expected heatmaps of shape (..., H, W), got {tuple(heatmaps.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    flat = heatmaps.flatten(-2) / temperature
    return torch.softmax(flat, dim=-1).view_as(heatmaps)


def keypoint_heatmaps(keypoints: Tensor | np.ndarray, image_size: Sequence[float] | Tensor,
                      feature_size: Sequence[int], sigma: float = 1.0,
                      temperature: float = 1.0) -> Tensor:
    r"""Softmax-normalised Gaussian heatmaps of keypoints on the feature grid (CTL eq. 1).

    A pose estimator's heatmap of keypoint ``k`` peaks at the keypoint with
    its confidence as height; we draw that map on the ``H x W`` feature grid
    and normalise it with a softmax over the ``H * W`` cells, as sec. 3.1
    says:

    .. math::
        z_k(h, w) = s_k \exp\!\Big(-\frac{(w - u_k)^2 + (h - v_k)^2}{2\sigma^2}\Big),
        \qquad
        m_k(h, w) = \frac{\exp(z_k(h, w) / \tau)}{\sum_{h', w'} \exp(z_k(h', w') / \tau)},

    with :math:`u_k = x_k W / W_{img} - 1/2`, :math:`v_k = y_k H / H_{img} - 1/2`
    the keypoint in cell units, cell ``(h, w)`` having its centre at
    :math:`(h, w)` (the pixel ``((w + 1/2) W_{img} / W, (h + 1/2) H_{img} / H)``),
    :math:`s_k` the keypoint score and :math:`\sigma` in cells.

    Consequences, by construction: a keypoint with score 0 gives the uniform map
    :math:`1 / (H W)`, so its pooled feature (eq. 1) is the global average
    :math:`V_g`; as :math:`z \in [0, s_k]`, with :math:`\tau = 1` the peak cell
    weighs at most :math:`e^{s_k}` times a far cell (the paper's soft map);
    lower ``temperature`` concentrates it. Scores are used as given (they are
    expected in ``[0, 1]``).

    Args:
        keypoints (Tensor or ndarray): ``(..., K, 3)`` rows ``(x, y, score)``
            in image pixels.
        image_size ((H_img, W_img) or Tensor): the image size in pixels, or a
            tensor ``(..., 2)`` broadcastable to the leading dims of
            ``keypoints`` for images of different sizes.
        feature_size ((H, W)): the feature grid.
        sigma (float, optional): Gaussian standard deviation in feature cells.
            (default: :obj:`1.0`)
        temperature (float, optional): softmax temperature :math:`\tau`, 1 is
            the paper's. (default: :obj:`1.0`)

    Returns:
        Tensor ``(..., K, H, W)`` of the keypoints' floating dtype (float32 for
        integer input); each map sums to 1.

    Raises:
        ValueError: keypoints not ``(..., K, 3)``, a non-positive size or
            ``sigma``, or non-finite keypoints.

    Examples:
        >>> kp = torch.tensor([[[72.0, 56.0, 1.0]]])     # centre of cell (row 3, column 4)
        >>> m = keypoint_heatmaps(kp, (256, 128), (16, 8))
        >>> m.shape, int(m[0, 0].argmax())               # row 3, column 4 -> 3 * 8 + 4
        (torch.Size([1, 1, 16, 8]), 28)
    """
    kp = torch.as_tensor(keypoints)
    if not kp.is_floating_point():
        kp = kp.to(torch.float32)
    if kp.dim() < 2 or kp.size(-1) != 3:
        raise ValueError(f"expected keypoints of shape (..., K, 3), got {tuple(kp.shape)}")
    if not torch.isfinite(kp).all():
        raise ValueError("keypoints contain NaN or infinity; use score 0 for missing keypoints")
    if len(feature_size) != 2 or not all(int(s) >= 1 for s in feature_size):
        raise ValueError(f"feature_size must be (H, W) with H, W >= 1, got {tuple(feature_size)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 (in feature cells), got {sigma}")
    H, W = int(feature_size[0]), int(feature_size[1])
    size = torch.as_tensor(image_size, dtype=kp.dtype, device=kp.device)
    if size.size(-1) != 2 or not bool((size > 0).all()):
        raise ValueError(
            f"image_size must be (H_img, W_img) > 0 or a (..., 2) tensor, got {tuple(size.shape)}"
        )
    size = size.unsqueeze(-2)  # (..., 1, 2): broadcast over keypoints
    u = kp[..., 0] * (W / size[..., 1]) - 0.5  # (..., K) column in cells
    v = kp[..., 1] * (H / size[..., 0]) - 0.5  # (..., K) row in cells
    rows = torch.arange(H, dtype=kp.dtype, device=kp.device)
    cols = torch.arange(W, dtype=kp.dtype, device=kp.device)
    d2 = (rows.view(H, 1) - v[..., None, None]).square() + (
        cols.view(1, W) - u[..., None, None]).square()  # (..., K, H, W)
    z = kp[..., 2, None, None] * torch.exp(-d2 / (2.0 * sigma * sigma))
    return heatmap_softmax(z, temperature=temperature)
