"""The order in which a pair list is matched, and the images decoded ahead of the model.

A pair list names each image in many pairs, and the matcher keeps the features of recently used
images in a least-recently-used cache. :func:`locality_order` picks an order in which as few
images as possible are encoded twice: greedily, a pair whose images are both in the cache, else one
that brings in the image with the most pairs left into the cache, else the first pair left (on a
simulated LRU of ``capacity`` images). On an exhaustive list too large for the cache each image
brought in is matched against all cached ones, instead of re-encoding most images for every row.

:class:`Prefetcher` decodes and resizes the images of the next pairs in a background thread
(OpenCV and NumPy release the GIL) while the model works on the current pair.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

__all__ = ["Prefetcher", "count_encodings", "locality_order"]

K = TypeVar("K", bound=Hashable)
SCAN = 64
"""Pairs left of each cached image that :func:`locality_order` looks at to choose the next image
(bounds its work per cache miss)."""
V = TypeVar("V")


def locality_order(
    pairs: Sequence[tuple[K, K]], capacity: int, cached: Sequence[K] = ()
) -> list[int]:
    """A permutation of ``range(len(pairs))`` that keeps an LRU cache of ``capacity`` images warm.

    Args:
        pairs: the two image keys of each pair.
        capacity: images the cache holds (at least 2).
        cached: images already in the cache, least recently used first.

    Returns:
        Pair indices in matching order. Deterministic; with everything fitting the cache it
        still groups pairs by shared images.
    """
    capacity = max(2, capacity)
    adjacency: dict[K, list[int]] = {}
    for k, (a, b) in enumerate(pairs):
        adjacency.setdefault(a, []).append(k)
        if b != a:
            adjacency.setdefault(b, []).append(k)
    cursor = dict.fromkeys(adjacency, 0)  # next possibly-undone pair in each adjacency list
    done = [False] * len(pairs)
    cache: OrderedDict[K, None] = OrderedDict((key, None) for key in cached)
    ready: list[int] = []  # heap of pairs whose images were both cached when pushed

    def next_of(key: K) -> int | None:
        members = adjacency.get(key, [])
        at = cursor.get(key, 0)
        while at < len(members) and done[members[at]]:
            at += 1
        if key in cursor:
            cursor[key] = at
        return members[at] if at < len(members) else None

    def best_link() -> int | None:
        """The first pair linking the cache to the uncached image with the most pairs left into
        the cache (looking at up to :data:`SCAN` pairs left of each cached image)."""
        links: dict[K, list[int]] = {}
        for key in cache:
            members = adjacency.get(key, [])
            at = cursor.get(key, 0)
            seen = 0
            while at < len(members) and seen < SCAN:
                k = members[at]
                at += 1
                if done[k]:
                    continue
                seen += 1
                a, b = pairs[k]
                other = b if a == key else a
                if other not in cache:
                    links.setdefault(other, []).append(k)
            next_of(key)  # advance the cursor past done pairs
        if not links:
            return None
        best = max(links.values(), key=lambda ks: (len(ks), -min(ks)))
        return min(best)

    def touch(key: K) -> None:
        if key in cache:
            cache.move_to_end(key)
            return
        cache[key] = None
        while len(cache) > capacity:
            cache.popitem(last=False)
        for k in adjacency.get(key, []):
            a, b = pairs[k]
            if not done[k] and a in cache and b in cache:
                heapq.heappush(ready, k)

    for key in list(cache):
        cache.move_to_end(key)
        for k in adjacency.get(key, []):
            if pairs[k][0] in cache and pairs[k][1] in cache:
                heapq.heappush(ready, k)
    order: list[int] = []
    first_left = 0
    while len(order) < len(pairs):
        pick: int | None = None
        while ready:
            k = heapq.heappop(ready)
            if not done[k] and pairs[k][0] in cache and pairs[k][1] in cache:
                pick = k
                break
        if pick is None:
            pick = best_link()
        if pick is None:
            while done[first_left]:
                first_left += 1
            pick = first_left
        done[pick] = True
        order.append(pick)
        a, b = pairs[pick]
        touch(a)
        touch(b)
    return order


def count_encodings(pairs: Sequence[tuple[K, K]], order: Sequence[int], capacity: int) -> int:
    """How many times images are encoded matching ``pairs`` in ``order`` with an LRU cache of
    ``capacity`` images (the figure :func:`locality_order` keeps low)."""
    cache: OrderedDict[K, None] = OrderedDict()
    misses = 0
    for k in order:
        for key in pairs[k]:
            if key in cache:
                cache.move_to_end(key)
                continue
            misses += 1
            cache[key] = None
            while len(cache) > max(2, capacity):
                cache.popitem(last=False)
    return misses


class Prefetcher(Generic[K, V]):
    """Runs loads (image decoding) for keys ahead of their use, in one background thread.

    Args:
        ahead: at most this many loads pending or done but not yet taken.

    :meth:`want` starts the load of a key needed soon, :meth:`get` takes its value (loading it
    here and now when it was not wanted, or when the background load failed: the error then
    comes from the caller's own load), :meth:`keep_only` drops loads no longer needed, and
    :meth:`close` (or ``with``) ends the thread.
    """

    def __init__(self, ahead: int = 4) -> None:
        self._ahead = max(0, ahead)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loftr-loader")
        self._pending: OrderedDict[K, Future[V]] = OrderedDict()

    def want(self, key: K, load: Callable[[], V]) -> bool:
        """Start ``load()`` for ``key`` in the background unless pending or ``ahead`` are out;
        whether it is pending now."""
        if key in self._pending:
            return True
        if len(self._pending) >= self._ahead:
            return False
        self._pending[key] = self._pool.submit(load)
        return True

    def put(self, key: K, value: V) -> None:
        """Hold an already loaded ``value`` for :meth:`get` (it counts towards ``ahead``)."""
        done: Future[V] = Future()
        done.set_result(value)
        self._pending[key] = done

    def get(self, key: K, load: Callable[[], V]) -> V:
        """The value for ``key``: the background load's (waiting for it), else ``load()``."""
        future = self._pending.pop(key, None)
        if future is not None:
            try:
                return future.result()
            except Exception:  # the caller's own load below raises it, with its context
                pass
        return load()

    def keep_only(self, keys: Collection[K]) -> None:
        """Drop the pending loads of keys not in ``keys`` (their values are no longer needed)."""
        for key in [k for k in self._pending if k not in keys]:
            self._pending.pop(key).cancel()

    def close(self) -> None:
        """Drop what is not taken and stop the thread (waits for a load in progress)."""
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Prefetcher[K, V]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
