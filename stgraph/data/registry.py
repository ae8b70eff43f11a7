"""Datasets by name: ``create_dataset("prid2011", root=...)``."""

from __future__ import annotations

from collections.abc import Callable

from stgraph.data.base import VideoReIDDataset

__all__ = [
    "UnknownDatasetError",
    "create_dataset",
    "get_dataset_class",
    "list_datasets",
    "register_dataset",
]

_DATASETS: dict[str, type[VideoReIDDataset]] = {}


class UnknownDatasetError(KeyError, ValueError):
    """Raised by :func:`create_dataset` for a name that is not registered.

    Both a ``KeyError`` and a ``ValueError``, so either ``except`` catches it.
    """

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


def register_dataset(name: str) -> Callable[[type[VideoReIDDataset]], type[VideoReIDDataset]]:
    """Class decorator: make a :class:`VideoReIDDataset` subclass creatable by ``name``.

    Args:
        name (str): the registry name (lower case), e.g. ``"prid2011"``.

    Returns:
        Callable: the decorator; it returns the class unchanged.

    Raises:
        ValueError: if ``name`` is already registered to another class.

    Examples:
        >>> @register_dataset("my_dataset")  # doctest: +SKIP
        ... class MyDataset(VideoReIDDataset): ...
    """
    key = name.lower()

    def decorator(cls: type[VideoReIDDataset]) -> type[VideoReIDDataset]:
        other = _DATASETS.get(key)
        if other is not None and other.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"register_dataset: name '{key}' is already taken by {other.__qualname__}; "
                f"pick another name for {cls.__qualname__}"
            )
        _DATASETS[key] = cls
        return cls

    return decorator


def list_datasets() -> list[str]:
    """Names accepted by :func:`create_dataset`.

    Returns:
        list[str]: the registered names, sorted.

    Examples:
        >>> import stgraph.data
        >>> list_datasets()
        ['dukemtmcvidreid', 'ilidsvid', 'mars', 'prid2011', 'synthetic']
    """
    return sorted(_DATASETS)


def get_dataset_class(name: str) -> type[VideoReIDDataset]:
    """The class registered as ``name`` (case-insensitive).

    Args:
        name (str): one of :func:`list_datasets`.

    Returns:
        type[VideoReIDDataset]: the class, e.g. to inspect its constructor arguments.

    Raises:
        UnknownDatasetError: ``name`` is not registered (the message lists the valid names).
    """
    cls = _DATASETS.get(str(name).lower())
    if cls is None:
        raise UnknownDatasetError(
            f"unknown dataset '{name}'; choose one of: {', '.join(list_datasets())}"
        )
    return cls


def create_dataset(name: str, **kwargs) -> VideoReIDDataset:
    """Build a registered dataset by name.

    Args:
        name (str): one of :func:`list_datasets` (case-insensitive).
        **kwargs: the dataset's constructor arguments, e.g. ``root=...`` for
            ``"prid2011"`` or ``seed=...`` for ``"synthetic"``.

    Returns:
        VideoReIDDataset: the dataset.

    Raises:
        UnknownDatasetError: (a ``KeyError`` and a ``ValueError``) for an
            unknown name; the message lists the valid ones.

    Examples:
        >>> ds = create_dataset("synthetic", num_train_ids=4, num_test_ids=2)
        >>> ds.num_train_pids
        4
    """
    return get_dataset_class(name)(**kwargs)
