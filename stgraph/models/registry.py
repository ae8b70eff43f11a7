"""Model registry: ``@register_model`` + ``create_model(name, num_classes, **kwargs)``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["create_model", "get_model_class", "list_models", "register_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Class decorator registering a model under ``name``; its constructor takes
    ``num_classes`` first, then keyword arguments.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = fn
        return fn

    return decorator


def get_model_class(name: str) -> Callable[..., nn.Module]:
    """The class registered as ``name``.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names).
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _MODELS[name]


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered model.

    Args:
        name (str): registry name, e.g. ``"tp"`` or ``"stgcn"`` (see :func:`list_models`).
        num_classes (int): number of training identities (classifier width).
        **kwargs: passed to the model's constructor.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names) or
            ``num_classes < 1``.

    Examples:
        >>> model = create_model("tp", num_classes=10, backbone="resnet18")
        >>> type(model).__name__
        'TemporalPooling'
    """
    model_cls = get_model_class(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return model_cls(num_classes=num_classes, **kwargs)
