"""Video re-ID data: datasets of tracklets, frame sampling, clip datasets and PK batches.

Data flow: a :class:`VideoReIDDataset` (e.g. :class:`PRID2011`, :class:`ILIDSVID`,
:class:`MARS`, :class:`DukeMTMCVidReID`, :class:`SyntheticReID`, or
:func:`create_dataset` by name) lists
:class:`Tracklet` s; :class:`TrainClipDataset` turns each training tracklet
into one random clip :math:`(T, 3, H, W)` per epoch, batched by
:class:`PKSampler`; :class:`TestClipDataset` cuts query / gallery tracklets
into all their consecutive clips.
"""

from stgraph.data.base import FrameNotFoundError, FrameReadError, Tracklet, VideoReIDDataset
from stgraph.data.clips import TestClipDataset, TrainClipDataset
from stgraph.data.dukemtmcvidreid import DukeMTMCVidReID
from stgraph.data.ilidsvid import ILIDSVID
from stgraph.data.mars import MARS
from stgraph.data.prid2011 import PRID2011
from stgraph.data.registry import (
    UnknownDatasetError,
    create_dataset,
    get_dataset_class,
    list_datasets,
    register_dataset,
)
from stgraph.data.samplers import PKSampler
from stgraph.data.sampling import sample_restricted_random, test_clip_indices
from stgraph.data.seeding import derive_seed, make_generator
from stgraph.data.synthetic import COCO_KEYPOINT_NAMES, SyntheticReID
from stgraph.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipAugment,
    load_clip,
    load_clip_with_keypoints,
)

__all__ = [
    "COCO_KEYPOINT_NAMES",
    "ClipAugment",
    "DukeMTMCVidReID",
    "FrameNotFoundError",
    "FrameReadError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ILIDSVID",
    "MARS",
    "PKSampler",
    "PRID2011",
    "SyntheticReID",
    "TestClipDataset",
    "TrainClipDataset",
    "Tracklet",
    "UnknownDatasetError",
    "VideoReIDDataset",
    "create_dataset",
    "derive_seed",
    "get_dataset_class",
    "list_datasets",
    "load_clip",
    "load_clip_with_keypoints",
    "make_generator",
    "register_dataset",
    "sample_restricted_random",
    "test_clip_indices",
]
