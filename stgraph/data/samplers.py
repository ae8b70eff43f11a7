"""PK sampling: P identities x K tracklets per batch, for batch-hard triplet training."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from stgraph.data.seeding import make_generator

__all__ = ["PKSampler"]


def _max_rounds(chunks: Sequence[int], p: int) -> int:
    # The largest r such that r batches of p distinct pids fit, pid i usable in
    # at most chunks[i] of them: sum_i min(chunks_i, r) >= p * r. The left side
    # minus p*r is concave in r and >= 0 at r = 0, so scan upwards.
    r = 0
    upper = sum(chunks) // p
    while r < upper and sum(min(c, r + 1) for c in chunks) >= p * (r + 1):
        r += 1
    return r


class PKSampler(Sampler[int]):
    r"""Batches of ``batch_ids`` distinct identities x ``batch_instances`` tracklets each.

    The "PK" sampling of Hermans et al., "In Defense of the Triplet Loss for
    Person Re-Identification", 2017 (https://arxiv.org/abs/1703.07737), with
    the epoch semantics of torchreid's ``RandomIdentitySampler``: each pid's
    tracklets are shuffled and cut into groups of :math:`K` (a pid with fewer
    than :math:`K` tracklets gives one group drawn with replacement; an
    incomplete last group is dropped), and an epoch uses every group about once,
    so a pid with :math:`n \ge K` tracklets appears about :math:`n // K` times
    and one with :math:`n \le K` about once.

    Unlike torchreid, the number of batches is fixed in advance, so
    ``len(sampler)`` is exact: it is the largest :math:`R` for which :math:`R`
    batches of :math:`P` distinct pids can be formed, and the groups are laid
    out round-robin (pids in random order, each pid's groups contiguous, the
    :math:`q`-th group going to batch :math:`q \bmod R`), which keeps the pids
    of a batch distinct. Batches are then shuffled. Randomness comes from a
    ``torch.Generator`` seeded from ``(seed, epoch)``.

    Use it as ``DataLoader(ds, batch_size=batch_ids * batch_instances,
    sampler=sampler, drop_last=True)``.

    Multi-process training (``num_replicas`` processes, this one ``rank``): every
    process draws the same global batches (same seed and epoch) and yields its share,
    the contiguous slice ``rank * S .. (rank + 1) * S - 1`` of each ``P * K`` batch, with
    :math:`S = PK / \text{num\_replicas}`; use ``batch_size=S``. The global batch
    is laid out identity by identity, so the :math:`K` tracklets of an identity stay
    on one process whenever :math:`K` divides :math:`S` (e.g. ``P=8, K=4`` on 2 or 4
    processes); the concatenation of the shares in rank order is the single-process
    batch.

    Args:
        pids (Sequence[int]): the pid of every dataset item (item ``i`` has
            ``pids[i]``), e.g. ``TrainClipDataset.pids``.
        batch_ids (int): :math:`P`, distinct identities per batch.
        batch_instances (int): :math:`K`, items per identity in a batch.
        seed (int, optional): base seed. (default: ``0``)
        num_replicas (int, optional): processes sharing each batch. (default: ``1``)
        rank (int, optional): this process, in ``[0, num_replicas)``. (default: ``0``)

    Shapes:
        - **output:** an iterator over ``len(self)`` dataset indices; every
          consecutive run of :math:`P \cdot K` is one batch, made of :math:`P`
          runs of :math:`K` indices sharing a pid.

    Raises:
        ValueError: if ``batch_ids`` or ``batch_instances`` < 1, ``pids``
            holds fewer than ``batch_ids`` distinct identities, ``P * K`` is not a
            multiple of ``num_replicas``, or ``rank`` is out of range.
    """

    def __init__(
        self, pids: Sequence[int], batch_ids: int, batch_instances: int, seed: int = 0,
        num_replicas: int = 1, rank: int = 0,
    ) -> None:
        if int(batch_ids) < 1 or int(batch_instances) < 1:
            raise ValueError(
                f"PKSampler: batch_ids and batch_instances must be >= 1, got "
                f"batch_ids={batch_ids}, batch_instances={batch_instances}"
            )
        self.batch_ids = int(batch_ids)
        self.batch_instances = int(batch_instances)
        self.seed = int(seed)
        self.epoch = 0
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        batch = self.batch_ids * self.batch_instances
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"PKSampler: rank {rank} of num_replicas {num_replicas}")
        if batch % self.num_replicas:
            raise ValueError(
                f"PKSampler: a batch of batch_ids x batch_instances = {batch} clips cannot be "
                f"shared by {self.num_replicas} processes; make it a multiple of "
                f"{self.num_replicas}"
            )
        #: clips per process and step
        self.share = batch // self.num_replicas
        by_pid: dict[int, list[int]] = {}
        for index, pid in enumerate(pids):
            by_pid.setdefault(int(pid), []).append(index)
        if len(by_pid) < self.batch_ids:
            raise ValueError(
                f"PKSampler: batch_ids={self.batch_ids} distinct identities per batch, but pids "
                f"holds only {len(by_pid)} distinct identities; lower batch_ids to at most "
                f"{len(by_pid)}"
            )
        self._pids = sorted(by_pid)
        self._indices = [torch.tensor(by_pid[p], dtype=torch.long) for p in self._pids]
        self._groups = [max(1, len(ix) // self.batch_instances) for ix in self._indices]
        self._num_batches = _max_rounds(self._groups, self.batch_ids)

    @property
    def num_batches(self) -> int:
        """int: batches per epoch, ``len(self) // (batch_ids * batch_instances)``."""
        return self._num_batches

    def set_epoch(self, epoch: int) -> None:
        """Select the random order of epoch ``epoch`` (call before each epoch).

        Args:
            epoch (int): the epoch number.
        """
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._num_batches * self.share

    def __iter__(self) -> Iterator[int]:
        gen = make_generator(self.seed, self.epoch)
        p, k, r = self.batch_ids, self.batch_instances, self._num_batches
        groups = []  # (K,) index groups; each pid's groups contiguous
        for n in torch.randperm(len(self._pids), generator=gen).tolist():
            ix = self._indices[n]
            if len(ix) < k:
                chosen = ix[torch.randint(len(ix), (k,), generator=gen)]
            else:
                chosen = ix[torch.randperm(len(ix), generator=gen)[: self._groups[n] * k]]
            # At most r groups per pid, so its groups land in distinct batches.
            groups.extend(chosen.view(-1, k)[:r])
        # Group q goes to batch q % r; the first r * p groups fill r batches of p.
        layout = torch.stack(groups[: r * p]).view(p, r, k).transpose(0, 1)  # (R, P, K)
        layout = layout[torch.randperm(r, generator=gen)].reshape(r, p * k)
        s = self.share
        return iter(layout[:, self.rank * s : (self.rank + 1) * s].reshape(-1).tolist())

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(batch_ids={self.batch_ids}, "
            f"batch_instances={self.batch_instances}, num_batches={self._num_batches}, "
            f"seed={self.seed}"
            + (f", num_replicas={self.num_replicas}, rank={self.rank})"
               if self.num_replicas > 1 else ")")
        )
