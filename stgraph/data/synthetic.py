"""SyntheticReID: procedurally drawn walking pedestrians seen by several cameras."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw

from stgraph.data.base import Tracklet, VideoReIDDataset
from stgraph.data.registry import register_dataset
from stgraph.data.seeding import make_generator

__all__ = ["COCO_KEYPOINT_NAMES", "SyntheticReID"]

#: The 17 COCO keypoints, in COCO order (the rows of ``frame_keypoints``).
COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip

# Clothing colours (RGB in [0, 1]); each identity jitters a pick from these.
_CLOTHES = np.array([
    (0.10, 0.10, 0.12), (0.90, 0.90, 0.88), (0.50, 0.50, 0.52), (0.12, 0.16, 0.40),
    (0.22, 0.38, 0.75), (0.75, 0.13, 0.13), (0.20, 0.50, 0.25), (0.90, 0.80, 0.22),
    (0.45, 0.30, 0.18), (0.80, 0.70, 0.55), (0.90, 0.55, 0.65), (0.45, 0.25, 0.58),
    (0.95, 0.50, 0.15), (0.10, 0.50, 0.52),
])  # fmt: skip
_SKIN = np.array([(0.95, 0.80, 0.68), (0.87, 0.68, 0.52), (0.70, 0.50, 0.36), (0.45, 0.30, 0.20)])
_HAIR = np.array([(0.06, 0.05, 0.05), (0.25, 0.15, 0.08), (0.50, 0.33, 0.17), (0.85, 0.72, 0.45),
                  (0.60, 0.60, 0.60)])  # fmt: skip
_BACKGROUND = np.array([(0.55, 0.55, 0.55), (0.35, 0.35, 0.38), (0.70, 0.68, 0.62),
                        (0.40, 0.45, 0.35), (0.60, 0.52, 0.45), (0.30, 0.33, 0.42),
                        (0.78, 0.78, 0.80), (0.22, 0.22, 0.20)])  # fmt: skip

_SS = 2  # supersampling factor of the drawing (anti-aliasing by box downsampling)

# Body proportions in units of the body height (heads ~1/7.5 of the height).
_Y_EYE, _Y_NOSE, _Y_EAR, _HEAD_Y, _HEAD_RY, _HEAD_RX = 0.060, 0.078, 0.066, 0.068, 0.068, 0.052
_Y_SHOULDER, _THIGH, _SHIN, _UPPER_ARM, _FOREARM = 0.185, 0.215, 0.225, 0.165, 0.150


class _Identity(NamedTuple):
    upper: tuple  # RGB uint8 triples
    lower: tuple
    shoes: tuple
    hair: tuple
    skin: tuple
    accent: tuple  # pattern / logo colour
    bag_colour: tuple
    pattern: int  # 0 plain, 1 horizontal stripes, 2 vertical stripes, 3 logo, 4 open jacket
    stripe_period: float  # in body heights
    long_sleeves: bool
    shorts: bool
    long_hair: bool
    bag: bool
    height: float  # body height as a fraction of the image height
    build: float  # width multiplier


class _Camera(NamedTuple):
    gain: np.ndarray  # (3,) per-channel colour cast
    brightness: float
    contrast: float
    blur: float  # weight a of the separable [a, 1 - 2a, a] blur kernel
    noise: float  # per-pixel Gaussian noise std in [0, 1] units
    yaw: float  # mean viewing angle (radians)
    p_front: float  # probability that a person faces this camera
    background: Image.Image  # (2 W SS, H SS), the background twice side by side


class _TrackletParams(NamedTuple):
    num_frames: int
    front: bool
    yaw: float
    scale: float
    dx: float  # in image widths
    phase: float
    step: float  # gait phase advance per frame (radians)
    illum: float
    bg_shift: int
    clutter: tuple  # ((x0, y0, x1, y1) in [0, 1] image fractions, rgb uint8 tuple), ...


def _rand(gen: torch.Generator, lo: float = 0.0, hi: float = 1.0, size: tuple = ()) -> np.ndarray:
    return lo + (hi - lo) * torch.rand(size, generator=gen, dtype=torch.float64).numpy()


def _pick(gen: torch.Generator, palette: np.ndarray, jitter: float) -> np.ndarray:
    i = int(torch.randint(len(palette), (), generator=gen))
    return np.clip(palette[i] + _rand(gen, -jitter, jitter, (3,)), 0.0, 1.0)


def _rgb(c: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(round(255 * v)) for v in np.clip(c, 0.0, 1.0))


@register_dataset("synthetic")
class SyntheticReID(VideoReIDDataset):
    r"""Procedurally drawn pedestrians: a video re-ID dataset with no files.

    Every frame is rendered on demand (about 1 ms for 128 x 64 on one CPU core)
    and fully determined by ``seed`` and its key; nothing but a few hundred
    numbers per identity / camera / tracklet and one background per camera is
    kept in memory.

    * **Identity:** clothing colours (upper body, lower body, shoes) drawn from
      a 14-colour palette with jitter, hair and skin colour, a torso pattern
      (plain, horizontal stripes, vertical stripes, a logo block, or an open
      jacket showing an inner colour from the front only), short or long
      sleeves, trousers or shorts, long or short hair, an optional side bag,
      and body height and build. Palette collisions make some identities look
      alike, so retrieval is not trivial.
    * **Camera:** a per-channel colour cast, brightness, contrast, background
      (wall + floor, gradient, or a smooth noise texture), blur, noise level,
      mean viewing angle and the chance that people face it (front vs back
      views differ in face / hair and the open jacket).
    * **Tracklet:** walking direction (front / back), yaw, scale, horizontal
      offset, gait phase and speed, lighting, background clutter.
    * **Frame:** walking pose (legs and arms swing, knees bend), translation /
      scale jitter of the detection box, per-pixel Gaussian noise.

    The body is drawn from the 17 COCO keypoints (see
    :data:`COCO_KEYPOINT_NAMES`), so :meth:`frame_keypoints` returns the exact
    ground truth.

    Protocol: identities ``0 .. num_train_ids - 1`` form ``train`` (all
    cameras; pid = identity, already contiguous); identities
    ``num_train_ids ..`` are test identities (pid = identity index):
    ``query`` holds their tracklets in camera 0, ``gallery`` their tracklets in
    cameras ``1 .. num_cameras - 1``.

    Frame keys are ``(identity, camid, tracklet, frame)`` tuples of ints.

    Args:
        num_train_ids (int, optional): training identities. (default: ``64``)
        num_test_ids (int, optional): test identities. (default: ``32``)
        num_cameras (int, optional): cameras, >= 2. (default: ``2``)
        tracklets_per_camera (int, optional): tracklets of each identity in
            each camera. (default: ``1``)
        min_frames (int, optional): shortest tracklet. (default: ``8``)
        max_frames (int, optional): longest tracklet; lengths are uniform in
            ``[min_frames, max_frames]``. (default: ``16``)
        image_size (tuple[int, int], optional): ``(height, width)`` of the
            rendered frames, at least ``(32, 16)``. (default: ``(128, 64)``)
        seed (int, optional): determines every pixel. (default: ``0``)

    Raises:
        ValueError: on a count < 1 (``num_cameras`` < 2), ``min_frames >
            max_frames`` or a too small ``image_size``; from :meth:`read_frame`,
            on a key that is not in the dataset.
    """

    name = "synthetic"

    def __init__(
        self,
        num_train_ids: int = 64,
        num_test_ids: int = 32,
        num_cameras: int = 2,
        tracklets_per_camera: int = 1,
        min_frames: int = 8,
        max_frames: int = 16,
        image_size: tuple[int, int] = (128, 64),
        seed: int = 0,
    ) -> None:
        for arg, value, low in (
            ("num_train_ids", num_train_ids, 1),
            ("num_test_ids", num_test_ids, 1),
            ("num_cameras", num_cameras, 2),
            ("tracklets_per_camera", tracklets_per_camera, 1),
            ("min_frames", min_frames, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"SyntheticReID: {arg} must be an int >= {low}, got {value!r}")
        if not isinstance(max_frames, int) or max_frames < min_frames:
            raise ValueError(
                f"SyntheticReID: min_frames={min_frames} > max_frames={max_frames!r}; "
                "max_frames must be an int >= min_frames"
            )
        if (
            len(image_size) != 2
            or not all(isinstance(v, int) for v in image_size)
            or image_size[0] < 32
            or image_size[1] < 16
        ):
            raise ValueError(
                f"SyntheticReID: image_size must be (height, width) ints of at least (32, 16), "
                f"got {image_size!r}"
            )
        self.num_train_ids = num_train_ids
        self.num_test_ids = num_test_ids
        self.num_cameras = num_cameras
        self.tracklets_per_camera = tracklets_per_camera
        self.min_frames = min_frames
        self.max_frames = max_frames
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.seed = int(seed)

        num_ids = num_train_ids + num_test_ids
        self._identities = [self._draw_identity(i) for i in range(num_ids)]
        bg_order = torch.randperm(3, generator=make_generator(self.seed, "bg-order")).tolist()
        self._cameras = [self._draw_camera(c, bg_order[c % 3]) for c in range(num_cameras)]
        self._tracklets: dict[tuple[int, int, int], _TrackletParams] = {}
        train, query, gallery = [], [], []
        for identity in range(num_ids):
            for cam in range(num_cameras):
                for t in range(tracklets_per_camera):
                    params = self._draw_tracklet(identity, cam, t)
                    self._tracklets[(identity, cam, t)] = params
                    frames = tuple((identity, cam, t, f) for f in range(params.num_frames))
                    tracklet = Tracklet(frames, identity, cam)
                    if identity < num_train_ids:
                        train.append(tracklet)
                    elif cam == 0:
                        query.append(tracklet)
                    else:
                        gallery.append(tracklet)
        super().__init__(train, query, gallery)

    # ------------------------------------------------------------------ parameters

    def _draw_identity(self, identity: int) -> _Identity:
        g = make_generator(self.seed, "identity", identity)
        upper = _pick(g, _CLOTHES, 0.07)
        lower = _pick(g, _CLOTHES, 0.07)
        shoes = _pick(g, _CLOTHES[[0, 1, 2, 8, 3]], 0.05)
        hair = _pick(g, _HAIR, 0.04)
        skin = _pick(g, _SKIN, 0.03)
        accent = _pick(g, _CLOTHES, 0.07)
        if np.abs(accent - upper).sum() < 0.4:  # keep the pattern visible
            accent = 1.0 - upper
        bag_colour = _pick(g, _CLOTHES, 0.05)
        pattern = int(torch.multinomial(torch.tensor([3.0, 2, 2, 2, 1.5]), 1, generator=g))
        u = _rand(g, size=(8,))
        return _Identity(
            *map(_rgb, (upper, lower, shoes, hair, skin, accent, bag_colour)), pattern,
            stripe_period=float(0.035 + 0.035 * u[0]),
            long_sleeves=bool(u[1] < 0.6),
            shorts=bool(u[2] < 0.2),
            long_hair=bool(u[3] < 0.3),
            bag=bool(u[4] < 0.3),
            height=float(0.80 + 0.12 * u[5]),
            build=float(0.85 + 0.35 * u[6]),
        )  # fmt: skip

    def _draw_camera(self, cam: int, bg_type: int) -> _Camera:
        g = make_generator(self.seed, "camera", cam)
        gain = _rand(g, 0.75, 1.25, (3,)).astype(np.float32)
        brightness = float(_rand(g, -0.10, 0.10))
        contrast = float(_rand(g, 0.80, 1.15))
        blur = float(_rand(g, 0.0, 0.3))
        noise = float(_rand(g, 0.02, 0.05))
        yaw = float(_rand(g, -0.5, 0.5))
        p_front = float(_rand(g, 0.2, 0.8))
        return _Camera(gain, brightness, contrast, blur, noise, yaw, p_front,
                       self._draw_background(g, bg_type))  # fmt: skip

    def _draw_background(self, g: torch.Generator, bg_type: int) -> Image.Image:
        h, w = self.image_size[0] * _SS, self.image_size[1] * _SS
        c1, c2 = _pick(g, _BACKGROUND, 0.08), _pick(g, _BACKGROUND, 0.08)
        y = np.linspace(0.0, 1.0, h)[:, None, None]  # (h, 1, 1)
        if bg_type == 0:  # wall above a floor line, slightly shaded
            horizon = float(_rand(g, 0.5, 0.75))
            img = np.where(y < horizon, c1 * (0.9 + 0.1 * y), c2 * (1.1 - 0.2 * y))
            img = np.broadcast_to(img, (h, w, 3))
        elif bg_type == 1:  # vertical gradient
            img = np.broadcast_to(c1 * (1 - y) + c2 * y, (h, w, 3))
        else:  # smooth noise texture: a coarse random grid, bilinearly upsampled
            coarse = torch.rand(6, 4, generator=g).numpy()
            up = (
                np.asarray(
                    Image.fromarray((coarse * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR),
                    dtype=np.float64,
                )[..., None]
                / 255.0
            )  # (h, w, 1)
            fine = torch.rand(h, w, 1, generator=g, dtype=torch.float64).numpy()
            img = c1 * (1 - up) + c2 * up + 0.06 * (fine - 0.5)
        img = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
        return Image.fromarray(np.concatenate([img, img], axis=1))

    def _draw_tracklet(self, identity: int, cam: int, t: int) -> _TrackletParams:
        g = make_generator(self.seed, "tracklet", identity, cam, t)
        num_frames = int(torch.randint(self.min_frames, self.max_frames + 1, (), generator=g))
        u = _rand(g, size=(8,))
        camera = self._cameras[cam]
        clutter = []
        for _ in range(int(torch.randint(0, 3, (), generator=g))):
            x0, y0, wid, hei = _rand(g, size=(4,))
            colour = _rgb(_pick(g, _BACKGROUND, 0.1))
            x0 = x0 * 0.9
            y0 = y0 * 0.5
            clutter.append(((x0, y0, x0 + 0.05 + 0.2 * wid, y0 + 0.2 + 0.5 * hei), colour))
        return _TrackletParams(
            num_frames=num_frames,
            front=bool(u[0] < camera.p_front),
            yaw=float(camera.yaw + 0.3 * (u[1] - 0.5)),
            scale=float(0.93 + 0.07 * u[2]),
            dx=float(0.08 * (u[3] - 0.5)),
            phase=float(2 * math.pi * u[4]),
            step=float(2 * math.pi / (7 + 6 * u[5])),
            illum=float(0.08 * (u[6] - 0.5)),
            bg_shift=int(u[7] * self.image_size[1] * _SS),
            clutter=tuple(clutter),
        )

    # ------------------------------------------------------------------ geometry

    def _params(self, key: object) -> tuple[_Identity, _Camera, _TrackletParams, tuple]:
        try:
            identity, cam, t, f = key  # type: ignore[misc]
            params = self._tracklets[(identity, cam, t)]
            ok = isinstance(f, (int, np.integer)) and 0 <= f < params.num_frames
        except (TypeError, ValueError, KeyError):
            ok = False
        if not ok:
            raise ValueError(
                f"SyntheticReID: frame key {key!r} is not in this dataset; keys are the "
                "(identity, camid, tracklet, frame) tuples listed in Tracklet.frames"
            )
        return self._identities[identity], self._cameras[cam], params, (identity, cam, t, int(f))

    def _pose(self, key: object) -> tuple[np.ndarray, dict, torch.Generator]:
        ident, camera, tr, (identity, cam, t, f) = self._params(key)
        height, width = self.image_size
        g = make_generator(self.seed, "frame", identity, cam, t, f)
        jitter = torch.randn(3, generator=g, dtype=torch.float64).numpy()
        body = height * ident.height * tr.scale * (1.0 + 0.015 * jitter[2])  # body height, px
        cx = width * (0.5 + tr.dx) + 0.5 * jitter[0]
        ground = height * 0.975 + 0.5 * jitter[1]
        psi = tr.yaw + (0.0 if tr.front else math.pi)  # rotation of the body about its axis
        cos_p, sin_p = math.cos(psi), math.sin(psi)
        b = ident.build

        phase = tr.phase + tr.step * f
        swing = math.sin(phase)
        # Per side (left, right): thigh angle, knee bend, arm angle, elbow bend.
        legs, arms = [], []
        for side in (1.0, -1.0):
            thigh = 0.38 * side * swing
            bend = 0.15 + 0.45 * max(0.0, -side * math.cos(phase))
            knee = (_THIGH * math.sin(thigh), _THIGH * math.cos(thigh))
            ankle = (knee[0] + _SHIN * math.sin(thigh - bend),
                     knee[1] + _SHIN * math.cos(thigh - bend))  # fmt: skip
            legs.append((knee, ankle))
            arm = -0.35 * side * swing
            elbow = (_UPPER_ARM * math.sin(arm), _UPPER_ARM * math.cos(arm))
            fore = arm + 0.25 + 0.2 * max(0.0, -side * swing)
            wrist = (elbow[0] + _FOREARM * math.sin(fore), elbow[1] + _FOREARM * math.cos(fore))
            arms.append((elbow, wrist))
        leg_len = max(legs[0][1][1], legs[1][1][1])
        y_hip = 1.0 - 0.02 - leg_len  # body units from the head top; feet on the ground

        # 3D points (lateral: person's left > 0, forward, down) in body units.
        pts = np.empty((17, 3))
        pts[0] = (0.0, _HEAD_RX, _Y_NOSE)
        pts[1], pts[2] = (0.022, 0.85 * _HEAD_RX, _Y_EYE), (-0.022, 0.85 * _HEAD_RX, _Y_EYE)
        pts[3], pts[4] = (0.050, 0.0, _Y_EAR), (-0.050, 0.0, _Y_EAR)
        sh, hip = 0.105 * b, 0.068 * b
        pts[5], pts[6] = (sh, 0.0, _Y_SHOULDER), (-sh, 0.0, _Y_SHOULDER)
        for k, (side, (elbow, wrist)) in enumerate(zip((1.0, -1.0), arms, strict=True)):
            pts[7 + k] = (side * (sh + 0.012), elbow[0], _Y_SHOULDER + elbow[1])
            pts[9 + k] = (side * (sh + 0.008), wrist[0], _Y_SHOULDER + wrist[1])
        pts[11], pts[12] = (hip, 0.0, y_hip), (-hip, 0.0, y_hip)
        for k, (side, (knee, ankle)) in enumerate(zip((1.0, -1.0), legs, strict=True)):
            pts[13 + k] = (side * (hip - 0.004), knee[0], y_hip + knee[1])
            pts[15 + k] = (side * (hip - 0.008), ankle[0], y_hip + ankle[1])

        top = ground - body
        kp = np.empty((17, 3), dtype=np.float32)
        kp[:, 0] = cx + body * (pts[:, 0] * cos_p + pts[:, 1] * sin_p)
        kp[:, 1] = top + body * pts[:, 2]
        kp[:, 2] = 1.0
        depth = -pts[:, 0] * sin_p + pts[:, 1] * cos_p  # towards the camera > 0
        torso_half = (
            body * (sh * abs(cos_p) + 0.055 * abs(sin_p)),
            body * (hip * 1.15 * abs(cos_p) + 0.05 * abs(sin_p)),
        )
        geom = {
            "body": body, "cx": cx, "top": top, "psi": psi, "depth": depth,
            "torso_half": torso_half, "y_hip": top + body * y_hip,
        }  # fmt: skip
        return kp, geom, g

    # ------------------------------------------------------------------ public API

    def frame_keypoints(self, key: object) -> np.ndarray:
        """Ground-truth COCO keypoints of a frame.

        Args:
            key (tuple): a frame key ``(identity, camid, tracklet, frame)``.

        Returns:
            numpy.ndarray: ``(17, 3)`` float32 rows ``(x, y, 1.0)`` in the
            rendered image's pixel coordinates (pixel ``i`` spans
            ``[i, i + 1)``), in :data:`COCO_KEYPOINT_NAMES` order. Points
            hidden by the body (e.g. the face in a back view) are included.

        Raises:
            ValueError: if ``key`` is not a frame of this dataset.
        """
        return self._pose(key)[0]

    def read_frame(self, key: object) -> Image.Image:
        """Render one frame.

        Args:
            key (tuple): a frame key ``(identity, camid, tracklet, frame)``.

        Returns:
            PIL.Image.Image: RGB, of size ``image_size`` (PIL reports ``(W, H)``).

        Raises:
            ValueError: if ``key`` is not a frame of this dataset (the message
                names it).
        """
        ident, camera, tr, _ = self._params(key)
        kp, geom, g = self._pose(key)
        height, width = self.image_size
        s = float(_SS)

        # The camera's background (stored twice as wide), shifted per tracklet.
        img = camera.background.crop((tr.bg_shift, 0, tr.bg_shift + width * _SS, height * _SS))
        draw = ImageDraw.Draw(img)
        for (x0, y0, x1, y1), colour in tr.clutter:
            draw.rectangle((x0 * width * s, y0 * height * s, x1 * width * s, y1 * height * s),
                           fill=colour)  # fmt: skip
        _draw_person(draw, kp[:, :2] * s, geom, ident, tr, s)

        x = np.asarray(img.reduce(_SS), dtype=np.float32) * (1.0 / 255.0)  # (H, W, 3)
        if camera.blur > 0.0:  # separable [a, 1 - 2a, a] kernel, edges replicated
            a = camera.blur
            for axis in (0, 1):
                lo = np.concatenate([x.take([0], axis), x.take(range(x.shape[axis] - 1), axis)],
                                    axis)  # fmt: skip
                hi = np.concatenate([x.take(range(1, x.shape[axis]), axis), x.take([-1], axis)],
                                    axis)  # fmt: skip
                x = (1.0 - 2.0 * a) * x + a * (lo + hi)
        x = x * camera.gain
        x = (x - 0.5) * camera.contrast + (0.5 + camera.brightness + tr.illum)
        x += camera.noise * torch.randn(height, width, 3, generator=g).numpy()
        return Image.fromarray(np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8))

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(num_train_ids={self.num_train_ids}, "
            f"num_test_ids={self.num_test_ids}, num_cameras={self.num_cameras}, "
            f"image_size={self.image_size}, seed={self.seed})"
        )


# ---------------------------------------------------------------------- drawing


def _clip_convex(poly: list, axis: int, lo: float, hi: float) -> list:
    """Clip a convex polygon to ``lo <= coordinate[axis] <= hi`` (Sutherland-Hodgman)."""
    for bound, keep_above in ((lo, True), (hi, False)):
        out = []
        n = len(poly)
        for i in range(n):
            p, q = poly[i], poly[(i + 1) % n]
            p_in = (p[axis] >= bound) if keep_above else (p[axis] <= bound)
            q_in = (q[axis] >= bound) if keep_above else (q[axis] <= bound)
            if p_in:
                out.append(p)
            if p_in != q_in:
                t = (bound - p[axis]) / (q[axis] - p[axis])
                out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
        poly = out
        if len(poly) < 3:
            return []
    return poly


def _draw_person(draw: ImageDraw.ImageDraw, kp: np.ndarray, geom: dict, ident: _Identity,
                 tr: _TrackletParams, s: float) -> None:  # fmt: skip
    # kp: (17, 2) keypoints in supersampled pixels; s: the supersampling factor.
    body = geom["body"] * s
    depth = geom["depth"]

    def capsule(p, q, w, colour):
        r = w / 2
        draw.line((p[0], p[1], q[0], q[1]), fill=colour, width=max(1, int(w + 0.5)))
        draw.ellipse((p[0] - r, p[1] - r, p[0] + r, p[1] + r), fill=colour)
        draw.ellipse((q[0] - r, q[1] - r, q[0] + r, q[1] + r), fill=colour)

    def leg(k):  # k = 0 left, 1 right
        hip, knee, ankle = kp[11 + k], kp[13 + k], kp[15 + k]
        capsule(knee, ankle, 0.062 * body, ident.skin if ident.shorts else ident.lower)
        capsule(hip, knee if not ident.shorts else hip + 0.65 * (knee - hip), 0.085 * body,
                ident.lower)  # fmt: skip
        if ident.shorts:
            capsule(hip + 0.6 * (knee - hip), knee, 0.07 * body, ident.skin)
        # shoe: a small ellipse pointing along the walking direction
        fwd = 0.035 * body * math.sin(geom["psi"])
        r = 0.03 * body
        x0, x1 = ankle[0] - r + min(fwd, 0.0), ankle[0] + r + max(fwd, 0.0)
        draw.ellipse((x0, ankle[1] - 0.6 * r, x1, ankle[1] + 1.1 * r), fill=ident.shoes)

    def arm(k):
        sh, elbow, wrist = kp[5 + k], kp[7 + k], kp[9 + k]
        capsule(elbow, wrist, 0.05 * body, ident.upper if ident.long_sleeves else ident.skin)
        capsule(sh, elbow, 0.06 * body, ident.upper)
        r = 0.024 * body
        draw.ellipse((wrist[0] - r, wrist[1] - r, wrist[0] + r, wrist[1] + r), fill=ident.skin)

    hx = (kp[3, 0] + kp[4, 0]) / 2
    y_head = geom["top"] * s + _HEAD_Y * body
    rx, ry = _HEAD_RX * body, _HEAD_RY * body
    long_hair = (hx - 1.05 * rx, y_head, hx + 1.05 * rx, y_head + 1.9 * ry)
    if ident.long_hair and tr.front:  # seen from the front, long hair is behind the body
        draw.rectangle(long_hair, fill=ident.hair)

    # Far side first (smaller depth = farther from the camera).
    far, near = (0, 1) if depth[5] < depth[6] else (1, 0)
    arm(far)
    leg(far)
    leg(near)

    # Torso: a trapezoid from the shoulders to slightly below the hips.
    cx_sh = (kp[5, 0] + kp[6, 0]) / 2
    cx_hip = (kp[11, 0] + kp[12, 0]) / 2
    half_sh, half_hip = geom["torso_half"][0] * s, geom["torso_half"][1] * s
    y_sh = (kp[5, 1] + kp[6, 1]) / 2 - 0.01 * body
    y_bottom = (kp[11, 1] + kp[12, 1]) / 2 + 0.04 * body
    torso = [(cx_sh - half_sh, y_sh), (cx_sh + half_sh, y_sh),
             (cx_hip + half_hip, y_bottom), (cx_hip - half_hip, y_bottom)]  # fmt: skip
    draw.polygon(torso, fill=ident.upper)
    _draw_pattern(draw, torso, ident, tr, body, y_sh, y_bottom, cx_sh, half_sh)
    neck_w = 0.035 * body
    draw.rectangle((cx_sh - neck_w, y_head, cx_sh + neck_w, y_sh + 0.01 * body), fill=ident.skin)

    if ident.bag:  # a bag on the person's left hip, its strap over the right shoulder
        bx = kp[11, 0] + 0.5 * (kp[11, 0] - kp[12, 0])
        by = kp[11, 1]
        bw, bh = 0.06 * body, 0.07 * body
        draw.line((bx, by - bh, kp[6, 0], kp[6, 1]), fill=ident.bag_colour,
                  width=max(1, int(0.012 * body)))  # fmt: skip
        draw.rectangle((bx - bw, by - bh, bx + bw, by + bh), fill=ident.bag_colour)
    arm(near)

    # Head: hair, then the face in front views; long hair over the back in back views.
    if ident.long_hair and not tr.front:
        draw.rectangle(long_hair, fill=ident.hair)
    draw.ellipse((hx - rx, y_head - ry, hx + rx, y_head + ry), fill=ident.hair)
    if tr.front:
        fx = kp[0, 0]
        draw.ellipse((fx - 0.85 * rx, y_head - 0.55 * ry, fx + 0.85 * rx, y_head + ry),
                     fill=ident.skin)  # fmt: skip


def _draw_pattern(draw: ImageDraw.ImageDraw, torso: list, ident: _Identity, tr: _TrackletParams,
                  body: float, y_sh: float, y_bottom: float, cx: float,
                  half_sh: float) -> None:  # fmt: skip
    if ident.pattern == 0 or (ident.pattern == 4 and not tr.front):
        return
    if ident.pattern in (1, 2):  # stripes: bands clipped to the torso
        period = ident.stripe_period * body
        axis = 1 if ident.pattern == 1 else 0
        lo, hi = (y_sh, y_bottom) if axis == 1 else (min(p[0] for p in torso),
                                                     max(p[0] for p in torso))  # fmt: skip
        start = y_sh + period / 2 if axis == 1 else cx - period * math.ceil((cx - lo) / period)
        v = start
        while v < hi:
            band = _clip_convex(torso, axis, v, v + period / 2)
            if band:
                draw.polygon(band, fill=ident.accent)
            v += period
    elif ident.pattern == 3:  # logo block on the chest / back
        w, h = 0.45 * half_sh, 0.07 * body
        yc = y_sh + 0.12 * body
        draw.rectangle((cx - w, yc - h, cx + w, yc + h), fill=ident.accent)
    else:  # open jacket: the inner shirt shows in a central band, front only
        w = 0.3 * half_sh
        draw.polygon([(cx - w, y_sh), (cx + w, y_sh), (cx + 0.6 * w, y_bottom),
                      (cx - 0.6 * w, y_bottom)], fill=ident.accent)  # fmt: skip
