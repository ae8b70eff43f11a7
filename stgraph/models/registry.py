"""Model registry: ``@register_model`` + ``create_model(name, num_classes, **kwargs)``."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Sequence

from torch import nn

__all__ = ["check_model_kwargs", "create_model", "get_model_class", "list_models",
           "register_model"]

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


_TYPE_WORDS = {bool: "True or False", int: "an integer", float: "a number", str: "a string"}


def _plain_types(hint) -> tuple[set, bool] | None:
    """The plain types (bool, int, float, str, list) a hint allows and whether it allows
    None; :obj:`None` for a hint this check does not judge (a class such as ``Skeleton``)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds, none = set(), False
        for arg in args:
            if arg is type(None):
                none = True
                continue
            sub = _plain_types(arg)
            if sub is None:
                return None
            kinds |= sub[0]
        return kinds, none
    if hint in _TYPE_WORDS:
        return {hint}, False
    origin = typing.get_origin(hint) or hint
    if origin in (list, tuple) or (isinstance(origin, type) and issubclass(origin, Sequence)
                                   and origin is not str):
        return {list}, False
    return None


def _convert(value, kinds: set):
    """``value`` as one of ``kinds`` (an int where a float is expected becomes a float, a
    tuple a list), or raise :class:`TypeError`."""
    if isinstance(value, bool):
        if bool in kinds:
            return value
    elif isinstance(value, int) and int in kinds:
        return value
    elif isinstance(value, (int, float)) and float in kinds:
        return float(value)
    elif isinstance(value, str) and str in kinds:
        return value
    elif isinstance(value, (list, tuple)) and list in kinds:
        return value
    raise TypeError


def check_model_kwargs(name: str, kwargs: dict) -> dict:
    """``kwargs`` checked against the constructor of the model registered as ``name``:
    every key is one of its arguments and every value of the type its annotation (or,
    without one, its default) names; an integer given for a float argument becomes a float.
    Values of other types (e.g. a :class:`~stgraph.graph.Skeleton`) are passed as given;
    ranges are the constructor's to check (it raises :class:`ValueError` naming the
    argument).

    Returns:
        dict: the checked keyword arguments (a new dict).

    Raises:
        ValueError: unknown ``name``; a key the constructor does not take (the message lists
            those it takes); a value of the wrong type (the message names the argument, the
            value and the type expected).

    Examples:
        >>> check_model_kwargs("stgcn", {"num_patches": 2, "alpha": 1})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: model stgcn takes no argument 'alpha'; its arguments: backbone, ...
        >>> check_model_kwargs("tp_mlp", {"dropout": 0})
        {'dropout': 0.0}
    """
    cls = get_model_class(name)
    init = cls.__init__ if isinstance(cls, type) else cls
    params = {k: p for k, p in inspect.signature(init).parameters.items()
              if k not in ("self", "num_classes")
              and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # an annotation that does not evaluate: judge by the defaults
        hints = {}
    out = {}
    for key, value in kwargs.items():
        if key not in params:
            raise ValueError(f"model {name} takes no argument {key!r}; its arguments: "
                             f"{', '.join(params)}")
        default = params[key].default
        hint = hints.get(key, type(default) if default is not inspect.Parameter.empty
                         and default is not None else None)
        allowed = _plain_types(hint) if hint is not None else None
        if allowed is None:
            out[key] = value
            continue
        kinds, none = allowed
        if value is None:
            if not none:
                raise ValueError(f"model {name}: {key}=None is not allowed; give "
                                 + " or ".join(_TYPE_WORDS.get(k, "a list") for k in kinds))
            out[key] = value
            continue
        try:
            out[key] = _convert(value, kinds)
        except TypeError:
            words = [_TYPE_WORDS.get(k, "a list") for k in sorted(kinds, key=str)]
            raise ValueError(f"model {name}: {key} must be {' or '.join(words)}"
                             + (" (or None)" if none else "") + f", got {value!r}") from None
    return out


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered model.

    Args:
        name (str): registry name, e.g. ``"tp"`` or ``"stgcn"`` (see :func:`list_models`).
        num_classes (int): number of training identities (classifier width).
        **kwargs: passed to the model's constructor.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names),
            ``num_classes < 1``, an argument the model does not take or of the wrong type
            (:func:`check_model_kwargs`), or one out of its range (the constructor's
            message names it).

    Examples:
        >>> model = create_model("tp", num_classes=10, backbone="resnet18")
        >>> type(model).__name__
        'TemporalPooling'
    """
    model_cls = get_model_class(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return model_cls(num_classes=num_classes, **check_model_kwargs(name, kwargs))
