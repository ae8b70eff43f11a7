from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stgraph.data import PKSampler


def batches(sampler, pids):
    """-> list of batches, each a list of (pid, [indices]) groups; checks the group structure."""
    order = list(sampler)
    p, k = sampler.batch_ids, sampler.batch_instances
    assert len(order) == len(sampler) and len(order) % (p * k) == 0
    out = []
    for b in range(0, len(order), p * k):
        groups = []
        for g in range(b, b + p * k, k):
            group = order[g : g + k]
            group_pids = {pids[i] for i in group}
            assert len(group_pids) == 1, f"a group mixes pids {group_pids}"
            groups.append((group_pids.pop(), group))
        out.append(groups)
    return out


@settings(max_examples=150, deadline=None)
@given(
    counts=st.lists(st.integers(1, 12), min_size=1, max_size=30),
    p=st.integers(1, 8),
    k=st.integers(1, 5),
    seed=st.integers(0, 1000),
)
def test_every_batch_has_p_distinct_pids_times_k(counts, p, k, seed):
    pids = [pid for pid, n in enumerate(counts) for _ in range(n)]
    pids = pids[::2] + pids[1::2]  # interleave: a pid's items need not be contiguous
    if len(counts) < p:
        with pytest.raises(ValueError, match=f"batch_ids={p}.*only {len(counts)} distinct"):
            PKSampler(pids, p, k, seed=seed)
        return
    sampler = PKSampler(pids, p, k, seed=seed)
    used = Counter()
    for batch in batches(sampler, pids):
        batch_pids = [pid for pid, _ in batch]
        assert len(set(batch_pids)) == p, "P distinct pids per batch"
        for pid, group in batch:
            n = counts[pid]
            if n >= k:
                assert len(set(group)) == k, "no repeats when the pid has >= K items"
            used[pid] += 1
    # torchreid semantics: a pid appears at most max(1, n // K) times per epoch
    for pid, times in used.items():
        assert times <= max(1, counts[pid] // k)
    assert sampler.num_batches >= 1


def test_one_epoch_covers_every_item_once_when_balanced():
    pids = [i // 4 for i in range(4 * 12)]  # 12 pids x 4 items
    sampler = PKSampler(pids, batch_ids=3, batch_instances=4, seed=5)
    order = list(sampler)
    assert len(sampler) == 48
    assert sorted(order) == list(range(48))


def test_pid_with_many_items_appears_n_over_k_times():
    pids = [0] * 9 + [1, 2, 3, 4, 5, 6, 7, 8]  # pid 0: 9 items -> 2 groups of K=4
    sampler = PKSampler(pids, batch_ids=2, batch_instances=4, seed=0)
    times = Counter(pid for batch in batches(sampler, pids) for pid, _ in batch)
    assert times[0] == 2
    assert all(times[p] == 1 for p in range(1, 9))
    assert sampler.num_batches == 5


def test_small_pids_are_sampled_with_replacement_from_their_own_items():
    pids = [0, 1, 1, 2, 2, 2]
    sampler = PKSampler(pids, batch_ids=3, batch_instances=4, seed=3)
    (batch,) = batches(sampler, pids)
    groups = dict(batch)
    assert groups[0] == [0, 0, 0, 0]
    assert set(groups[1]) <= {1, 2} and set(groups[2]) <= {3, 4, 5}


def test_same_seed_same_order_epoch_and_seed_change_it():
    pids = [i % 20 for i in range(80)]
    a, b = PKSampler(pids, 4, 4, seed=1), PKSampler(pids, 4, 4, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(PKSampler(pids, 4, 4, seed=2)) != first


def test_len_is_exact_when_rounds_are_limited():
    # One pid with 8 groups, two with 1: at most 2 batches of 2 distinct pids.
    pids = [0] * 32 + [1] * 4 + [2] * 4
    sampler = PKSampler(pids, batch_ids=2, batch_instances=4)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        assert len(list(sampler)) == len(sampler) == 2 * 2 * 4


@pytest.mark.parametrize("p, k", [(0, 4), (4, 0)])
def test_bad_sizes_raise(p, k):
    with pytest.raises(ValueError, match="must be >= 1"):
        PKSampler([0, 1, 2, 3, 4], p, k)


def test_too_few_ids_error_names_both_numbers():
    with pytest.raises(ValueError, match="batch_ids=8 .*only 3 distinct"):
        PKSampler([0, 0, 1, 1, 2, 2], batch_ids=8, batch_instances=2)


def test_repr():
    assert repr(PKSampler([0, 1, 2, 3], 2, 1)) == (
        "PKSampler(batch_ids=2, batch_instances=1, num_batches=2, seed=0)"
    )
