"""IID and Dirichlet partitions: disjoint, covering, deterministic, skew grows as alpha shrinks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipjax.data import label_skew, partition_dirichlet, partition_iid

LABELS = np.repeat(np.arange(10), 500)  # 5,000 examples, 10 balanced classes


def _assert_disjoint_cover(parts, n):
    joined = np.concatenate(parts)
    assert len(joined) == n and len(np.unique(joined)) == n
    assert all(np.all(np.diff(p) > 0) for p in parts if len(p) > 1)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 400), c=st.integers(1, 50), seed=st.integers(0, 2**31))
def test_iid(n, c, seed):
    c = min(c, n)
    parts = partition_iid(np.zeros(n, np.int32), c, seed)
    assert len(parts) == c
    _assert_disjoint_cover(parts, n)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    same = partition_iid(np.zeros(n, np.int32), c, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, same))


def test_dirichlet_disjoint_cover_deterministic():
    parts = partition_dirichlet(LABELS, 20, 0.5, seed=3, min_size=10)
    _assert_disjoint_cover(parts, len(LABELS))
    assert min(len(p) for p in parts) >= 10
    again = partition_dirichlet(LABELS, 20, 0.5, seed=3, min_size=10)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = partition_dirichlet(LABELS, 20, 0.5, seed=4, min_size=10)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


def test_dirichlet_skew_grows_as_alpha_shrinks():
    skews = [np.mean([label_skew(LABELS, partition_dirichlet(LABELS, 20, a, seed=s, min_size=5))
                      for s in range(3)]) for a in (100.0, 1.0, 0.1)]
    assert skews[0] < skews[1] < skews[2]
    assert skews[0] < 0.1 and skews[2] > 0.5  # near-IID at alpha=100, near one class at 0.1


@pytest.mark.parametrize("kwargs,match", [
    (dict(alpha=0.0), "alpha"),
    (dict(alpha=0.5, min_size=1000), "min_size"),
])
def test_dirichlet_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        partition_dirichlet(LABELS, 20, seed=0, **kwargs)


def test_iid_bad_input():
    with pytest.raises(ValueError, match="num_clients"):
        partition_iid(LABELS, 0, seed=0)
    with pytest.raises(ValueError, match="exceeds"):
        partition_iid(LABELS[:5], 6, seed=0)
