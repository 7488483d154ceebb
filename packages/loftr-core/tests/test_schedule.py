"""The pair order for the feature cache and the background image loader."""

from __future__ import annotations

import itertools
import random
import threading
import time

import pytest

from loftr_core.api.schedule import Prefetcher, count_encodings, locality_order


@pytest.mark.parametrize(("n", "capacity"), [(30, 8), (60, 10), (120, 23)])
def test_exhaustive_list_larger_than_the_cache_encodes_far_fewer_images(
    n: int, capacity: int
) -> None:
    pairs = list(itertools.combinations(range(n), 2))
    order = locality_order(pairs, capacity)
    assert sorted(order) == list(range(len(pairs)))  # every pair exactly once
    as_given = count_encodings(pairs, range(len(pairs)), capacity)
    ordered = count_encodings(pairs, order, capacity)
    # row by row, nearly every pair misses; image by image against the cache, about
    # pairs / (capacity - 1) images come in (30/8: 436 -> 99 measured)
    assert as_given >= 0.9 * len(pairs)
    assert ordered <= 1.5 * (n + len(pairs) / (capacity - 1)), (ordered, as_given)
    assert locality_order(pairs, capacity) == order  # deterministic


def test_retrieval_style_list_and_a_list_that_fits() -> None:
    rng = random.Random(0)
    n = 300
    pairs = sorted({tuple(sorted((i, rng.randrange(n)))) for i in range(n) for _ in range(8)})
    pairs = [p for p in pairs if p[0] != p[1]]
    rng.shuffle(pairs)
    order = locality_order(pairs, 20)
    assert sorted(order) == list(range(len(pairs)))
    as_given = count_encodings(pairs, range(len(pairs)), 20)
    assert count_encodings(pairs, order, 20) <= 0.5 * as_given
    # everything fits: each image once, whatever the order
    assert count_encodings(pairs, order, n) == len({k for p in pairs for k in p})


def test_cached_images_go_first_and_repeated_pairs_are_kept() -> None:
    pairs = [("a", "b"), ("c", "d"), ("a", "b"), ("c", "d"), ("d", "d")]
    # with room for two images, pairs sharing images run together: 4 encodings, not 8
    order = locality_order(pairs, 2)
    assert sorted(order) == list(range(5))
    assert count_encodings(pairs, order, 2) == 4 < count_encodings(pairs, range(5), 2)
    # what is cached already runs first
    assert locality_order(pairs, 2, cached=["c", "d"])[:3] == [1, 3, 4]
    assert locality_order([], 4) == []


def test_prefetcher_loads_in_the_background_and_raises_the_callers_error() -> None:
    threads: dict[int, str] = {}

    def load(value: int) -> int:
        threads[value] = threading.current_thread().name
        time.sleep(0.01)
        return value * 10

    with Prefetcher[str, int](ahead=2) as pre:
        assert pre.want("x", lambda: load(1)) and pre.want("y", lambda: load(2))
        assert not pre.want("z", lambda: load(3))  # two are out already
        assert pre.get("x", lambda: load(-1)) == 10  # the background value
        assert pre.get("z", lambda: load(3)) == 30  # not wanted: loaded here and now
        pre.keep_only(set())  # "y" no longer needed
        assert pre.get("y", lambda: load(4)) == 40
    assert threads[1].startswith("loftr-loader") and threads[2].startswith("loftr-loader")
    assert threads[3] == threads[4] == threading.current_thread().name  # not wanted, dropped

    def broken() -> int:
        raise ValueError("background")

    with Prefetcher[str, int]() as pre:
        pre.want("x", broken)

        def again() -> int:
            raise KeyError("the caller's own load, with its own message")

        with pytest.raises(KeyError, match="own load"):
            pre.get("x", again)
