"""Helpers shared by the datasets laid out as ``camera/person/frames`` folders
(PRID-2011, iLIDS-VID): listing persons and checking a train/test split against them."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "IMAGE_SUFFIXES",
    "check_split",
    "list_persons",
    "person_number",
    "read_split",
]

#: Frame file suffixes the folder datasets read (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def list_persons(cam_dir: Path) -> tuple[dict[str, tuple[str, ...]], set[str]]:
    """The person folders of one camera folder, each with its frames.

    Returns:
        ``({person folder name: sorted frame paths}, names of person folders without frames)``.
    """
    persons, empty = {}, set()
    with os.scandir(cam_dir) as entries:
        dirs = sorted(e.path for e in entries if e.is_dir())
    for person_dir in dirs:
        with os.scandir(person_dir) as entries:
            frames = sorted(
                e.path for e in entries if e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file()
            )
        name = os.path.basename(person_dir)
        if frames:
            persons[name] = tuple(frames)
        else:
            empty.add(name)
    return persons, empty


def person_number(name: str, dataset: str, expected: str) -> int:
    """The person id in a folder name (its digits), e.g. ``person_0042`` -> 42.

    Raises:
        ValueError: the name has no digits (the message names the dataset and the
            ``expected`` pattern).
    """
    digits = "".join(ch for ch in name if ch.isdigit())
    if not digits:
        raise ValueError(
            f"{dataset}: cannot read a person id from directory name {name!r}; expected {expected}"
        )
    return int(digits)


def check_split(dataset: str, train: Sequence[str], test: Sequence[str], split_id: int,
                path: Path | None, cam_dirs: Sequence[Path], persons: Sequence[dict],
                empty: Sequence[set], root: Path) -> None:
    """Check that a split's train and test persons are disjoint, non-empty (test) and have
    frames in every camera.

    Raises:
        ValueError: an empty test list, a person in both lists, or a listed person whose
            folder has no frames.
        FileNotFoundError: a listed person with no folder in a camera.
    """
    where = f"split {split_id} of {path}"
    if not test:
        raise ValueError(f"{dataset}: {where} has an empty 'test' list; there would be no queries")
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise ValueError(
            f"{dataset}: {where} lists {len(overlap)} person(s) in both train and test "
            f"(e.g. {overlap[0]}); a split must be disjoint"
        )
    for name in [*train, *test]:
        for cam, cam_persons, cam_empty in zip(cam_dirs, persons, empty, strict=True):
            if name in cam_empty:
                raise ValueError(
                    f"{dataset}: {cam / name}, listed in {where}, has no .png/.jpg frames; "
                    "restore its frames or drop it from the split"
                )
            if name not in cam_persons:
                raise FileNotFoundError(
                    f"{dataset}: {name}, listed in {where}, has no directory {cam / name}; the "
                    f"split does not match the data under {root}"
                )


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_split(dataset: str, path: Path, split_id: int) -> tuple[list[dict], dict]:
    """Read a torchreid split file (a JSON list of ``{"train": [...], "test": [...]}``).

    Returns:
        ``(splits, splits[split_id])``.

    Raises:
        ValueError: an empty or non-JSON file, not a non-empty list of such dicts (the
            message shows the first bad entry), or ``split_id`` out of range.
    """
    text = path.read_text()
    if not text.strip():
        raise ValueError(f"{dataset}: split file {path} is empty")
    try:
        splits = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{dataset}: split file {path} is not valid JSON: {err}") from err

    def ok(s: object) -> bool:
        return isinstance(s, dict) and "train" in s and "test" in s

    if not isinstance(splits, list) or not all(ok(s) for s in splits):
        if isinstance(splits, list):
            got = f"an entry {_short_repr(next(s for s in splits if not ok(s)))}"
        else:
            got = f"a {type(splits).__name__}"
        raise ValueError(
            f"{dataset}: split file {path} must hold a list of "
            f'{{"train": [...], "test": [...]}} dicts (torchreid format), got {got}'
        )
    if not splits:
        raise ValueError(f"{dataset}: split file {path} holds an empty list of splits")
    if not 0 <= split_id < len(splits):
        raise ValueError(
            f"{dataset}: split_id={split_id} out of range: split file {path} holds "
            f"{len(splits)} split(s), choose split_id in 0..{len(splits) - 1}"
        )
    return splits, splits[split_id]
