r"""Named cut points inside a backbone: the part before a cut runs once into a feature
cache, the part after it (the *tail*) trains with the head (the partial protocol).

A backbone lists its forward pass as ordered parts (:meth:`CutBackbone.parts`) and names
the places it may be cut (:attr:`CutBackbone.CUTS`, the default first, ``"end"`` last):
a cut is the input of the part it names, ``"end"`` the output of the last part (the
frozen protocol: nothing after the cut). For every cut,
``forward_from(forward_to(x, cut), cut) == forward(x)``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

__all__ = ["CutBackbone", "END"]

#: The cut after the whole backbone: its output maps, as the frozen protocol caches.
END = "end"


class CutBackbone(nn.Module):
    """Mixin of the backbones that can be cut (:mod:`stgraph.models.backbones.cut`).

    Subclasses set :attr:`CUTS` and implement :meth:`parts` and :meth:`cut_index`.
    """

    #: Names of the cut points, the default (the partial protocol's) first, ``"end"`` last.
    CUTS: tuple[str, ...] = (END,)

    def parts(self) -> list[tuple[Callable[[Tensor], Tensor], list[nn.Module]]]:
        """The forward pass as ordered ``(function, modules)`` pairs: applied in turn they
        map the input images to the output maps; ``modules`` hold each part's parameters."""
        raise NotImplementedError

    def cut_index(self, cut: str) -> int:
        """Index in :meth:`parts` of the first part after ``cut`` (``len(parts)`` for
        ``"end"``)."""
        raise NotImplementedError

    @property
    def default_cut(self) -> str:
        """The partial protocol's cut: the first of :attr:`CUTS`."""
        return self.CUTS[0]

    def check_cut(self, cut: str) -> str:
        """``cut``, if it is one of :attr:`CUTS`.

        Raises:
            ValueError: another name (the message lists this backbone's cuts).
        """
        if cut not in self.CUTS:
            raise ValueError(f"{getattr(self, 'label', type(self).__name__)} has no cut "
                             f"{cut!r}; choose one of: {', '.join(self.CUTS)}")
        return cut

    def forward_to(self, x: Tensor, cut: str) -> Tensor:
        """The maps at ``cut``: the parts before it applied to images ``(N, 3, H, W)``."""
        i = self.cut_index(self.check_cut(cut))
        for fn, _ in self.parts()[:i]:
            x = fn(x)
        return x

    def forward_from(self, x: Tensor, cut: str) -> Tensor:
        """The output maps from the maps at ``cut`` (the tail; the identity at ``"end"``)."""
        i = self.cut_index(self.check_cut(cut))
        for fn, _ in self.parts()[i:]:
            x = fn(x)
        return x

    def tail_modules(self, cut: str) -> list[nn.Module]:
        """The modules after ``cut``: what trains in the partial protocol (none at ``"end"``)."""
        i = self.cut_index(self.check_cut(cut))
        return [m for _, modules in self.parts()[i:] for m in modules]

    def tail_parameters(self, cut: str) -> list[nn.Parameter]:
        """The parameters of :meth:`tail_modules`."""
        return [p for m in self.tail_modules(cut) for p in m.parameters()]
