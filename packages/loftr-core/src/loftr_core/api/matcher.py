"""The high-level matching API: images in, keypoints in original pixels out.

:class:`Matcher` wraps a :class:`~loftr_core.model.LoFTR` model and does everything around it:

1. read / convert each image to grayscale (:mod:`loftr_core.api.image_io`: files exactly like the
   original's ``cv2.imread(IMREAD_GRAYSCALE)``, arrays with ``cv2.cvtColor`` weights);
2. optionally resize as the original's test-time pipeline: longer side to ``resize`` px, each side
   floored to a multiple of 8, one bilinear step (so no padding is needed);
3. zero-pad bottom/right to a multiple of 8 (and to the largest image of the batch), with coarse
   masks marking every 8x8 cell that holds image content as valid;
4. run the model (optionally under autocast in bf16/fp16) and map the keypoints back to the
   ORIGINAL image's pixel coordinates (``x * W / W'``, ``y * H / H'``, like the original's
   ``scale0/scale1``).

Smallest image: the coarse matcher drops ``border_rm`` cells at every border of the valid region,
so an image needs at least ``2 * border_rm + 1`` coarse cells with content per side, i.e. at
least ``16 * border_rm + 1`` px (33 px for the official ``border_rm=2``; a 33-px side has 5 cells,
the last one partly padded, and only the middle one can match), and never less than 8 px.
Smaller inputs raise :class:`~loftr_core.errors.InputError` naming the size. There is no upper
limit from the model (our positional encoding is not a fixed 256x256-cell table); memory grows
with ``(H*W/64)^2`` for the coarse confidence matrix.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import os
from collections import OrderedDict, deque
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from loftr_core.api.checkpoint import load_model
from loftr_core.api.devices import resolve_device, resolve_dtype
from loftr_core.api.image_io import ImageLike, resize_long_side, to_gray
from loftr_core.api.memory import MemoryLimit
from loftr_core.api.pretrained import fetch_pretrained, pretrained_entry
from loftr_core.api.schedule import Prefetcher, locality_order
from loftr_core.errors import CheckpointError, ConfigError, InputError, LoftrError
from loftr_core.execution import ExecutionOptions
from loftr_core.model import LoFTR
from loftr_core.model.config import check_thr
from loftr_core.model.loftr import EncodedImage

__all__ = ["MatchResult", "Matcher", "min_image_size"]

logger = logging.getLogger(__name__)

DIVISOR = 8  # the coarse stride: model inputs must be multiples of it
LOOKAHEAD_PAIRS = 2
"""Pairs ahead of the current one whose uncached images the background loader decodes."""


@dataclass(frozen=True)
class MatchResult:
    """Matches of one image pair, in ORIGINAL image pixels.

    Attributes:
        keypoints0: ``(M, 2)`` float32 ``(x, y)`` in image 0.
        keypoints1: ``(M, 2)`` float32 ``(x, y)`` in image 1.
        confidence: ``(M,)`` float32 coarse matching confidence in (thr, 1].
        image0_size: ``(H, W)`` of the original image 0.
        image1_size: ``(H, W)`` of the original image 1.
    """

    keypoints0: np.ndarray
    keypoints1: np.ndarray
    confidence: np.ndarray
    image0_size: tuple[int, int]
    image1_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.confidence.shape[0])


def min_image_size(border_rm: int) -> int:
    """Smallest image side (px) from which a model with this ``border_rm`` can return a match."""
    return max(DIVISOR, 2 * border_rm * DIVISOR + 1)


def _with_attention(model: LoFTR, attention: str) -> LoFTR:
    """A copy of ``model`` (same weights) whose transformers use another attention backend."""
    config = model.config.replace(coarse={"attention": attention}, fine={"attention": attention})
    swapped = LoFTR(config, model.options)
    swapped.load_state_dict(model.state_dict())
    return swapped.to(next(model.parameters()).device)


@dataclass
class _Prepared:
    image: np.ndarray  # (h, w) float32 in [0, 1], after the optional resize
    scale: tuple[float, float]  # (sx, sy) resized -> original
    original_size: tuple[int, int]  # (H, W)


@dataclass
class _CachedImage:
    prepared: _Prepared
    tensor: torch.Tensor  # (1, 1, H, W) padded to a multiple of 8 (or a square)
    mask: torch.Tensor | None  # (1, H/8, W/8) or None
    encoded: EncodedImage


def _image_key(image: ImageLike, channel_order: str) -> tuple[Any, ...]:
    """Which images are the same: a path (resolved), else the very same object."""
    if isinstance(image, str | os.PathLike):
        return ("path", os.path.abspath(os.fspath(image)), channel_order)
    return ("object", id(image), channel_order)


class _FeatureCache:
    """Least-recently-used cache of encoded images, bounded by the bytes of their features."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.used = 0
        self.entries: OrderedDict[tuple[Any, ...], _CachedImage] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> _CachedImage | None:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, key: tuple[Any, ...], entry: _CachedImage) -> None:
        size = entry.encoded.nbytes
        if size > self.budget:
            return
        while self.entries and self.used + size > self.budget:
            _, old = self.entries.popitem(last=False)
            self.used -= old.encoded.nbytes
        self.entries[key] = entry
        self.used += size


def _for_pair(exc: LoftrError, k: int) -> LoftrError:
    """``exc`` naming pair ``k`` (pairs may run out of order): the same error type."""
    if f"pair {k}" in str(exc):
        return exc
    try:
        named = type(exc)(f"pair {k}: {exc}")
    except TypeError:  # an error type with other arguments: keep it as it is
        return exc
    named.__cause__ = exc.__cause__
    return named


def _ceil_to(value: int, divisor: int) -> int:
    return int(math.ceil(value / divisor) * divisor)


class Matcher:
    """Match image pairs with a LoFTR model; results in original image pixels.

    Args:
        model: a ``loftr_core.model.LoFTR`` (moved to ``device`` and put in eval mode).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        dtype: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` (CUDA only); lower precision runs
            under ``torch.autocast``.
        resize: if given, resize every image as the original's test-time pipeline does: the
            longer side to this many px, then each side floored to a multiple of 8
            (:func:`~loftr_core.api.image_io.resize_long_side`; the official outdoor models were
            evaluated at 840).
        threshold: coarse matching threshold (strict ``>``, in [0, 1)); None keeps the model's
            ``match_coarse.thr``. Passed to the model, which applies it where it selects matches
            (it may be lower than the model's own: no weight depends on it).
        max_matches: keep only the most confident matches (top-k), in the model's order.
        batch_size: pairs per forward pass; pairs are grouped by size so equal-size pairs are
            never padded; different sizes are zero-padded with coarse masks.
        attention: run both transformers with this ``loftr_attention`` backend (``"linear"``,
            ``"full"``, ``"sdpa"``...); the model is copied with the same weights if it uses
            another one.
        options: how the model runs: an :class:`~loftr_core.execution.ExecutionOptions`, or a
            preset name (``"default"``, ``"reference"``); None keeps the model's. Like the
            device and eval mode, they are applied to ``model`` itself (``model.set_options``).
        channel_order: channel order of 3/4-channel numpy arrays: ``"rgb"`` (default: PIL,
            imageio, torchvision) or ``"bgr"`` (``cv2.imread`` without a grayscale flag); files
            are always decoded correctly, tensors are RGB.
        memory_limit: before each forward pass the peak memory is estimated
            (:func:`~loftr_core.api.memory.estimate_peak_bytes`); above the limit the call stops
            with a :class:`~loftr_core.api.memory.MemoryLimitError` that gives the sizes, the
            estimate and a ``resize`` that fits. ``"auto"`` (default): the smaller of 8 GiB and
            90% of the available memory (CUDA: 90% of the free device memory); a number of GiB;
            ``None``: no check.
        pad_to_square: zero-pad each image bottom/right to a square of its long side, with
            coarse masks, as the original MegaDepth evaluation does; with ``resize=840`` the model
            sees exactly what ``loftr-eval`` feeds it (the default pads only to a multiple of 8,
            which changes the features near the right/bottom border a little).
        feature_cache_mb: in :meth:`match_pairs`, the backbone features of distinct images are
            kept (least recently used evicted first) up to this many MiB, so an image in many
            pairs is encoded once (a 640x480 image takes about 44 MiB).

    Example:
        >>> matcher = Matcher.from_checkpoint("outdoor_ds.ckpt", resize=840)  # doctest: +SKIP
        >>> result = matcher.match("a.jpg", "b.jpg")  # doctest: +SKIP
        >>> result.keypoints0.shape, result.confidence.shape  # doctest: +SKIP
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "fp32",
        resize: int | None = None,
        threshold: float | None = None,
        max_matches: int | None = None,
        batch_size: int = 1,
        attention: str | None = None,
        options: ExecutionOptions | str | None = None,
        channel_order: str = "rgb",
        memory_limit: float | str | None = "auto",
        pad_to_square: bool = False,
        feature_cache_mb: float = 1024.0,
    ) -> None:
        if channel_order not in ("rgb", "bgr"):
            raise ConfigError(
                f"channel_order={channel_order!r}; allowed are 'rgb' (PIL, imageio, torchvision) "
                "and 'bgr' (cv2.imread)"
            )
        self.channel_order = channel_order
        self.memory_limit = MemoryLimit.parse(memory_limit)
        if not isinstance(pad_to_square, bool):
            raise ConfigError(f"pad_to_square={pad_to_square!r}; it must be True or False")
        self.pad_to_square = pad_to_square
        if (
            isinstance(feature_cache_mb, bool)
            or not isinstance(feature_cache_mb, int | float)
            or not feature_cache_mb >= 0
        ):
            raise ConfigError(
                f"feature_cache_mb={feature_cache_mb!r}; it must be a number of MiB >= 0 (0: no "
                "cache, every pair encodes its images)"
            )
        self.feature_cache_bytes = int(feature_cache_mb * 2**20)
        if not isinstance(model, LoFTR):
            raise ConfigError(f"model must be a loftr_core LoFTR model, got {type(model).__name__}")
        config = model.config
        if attention is not None and {attention} != {
            config.coarse.attention,
            config.fine.attention,
        }:
            model = _with_attention(model, attention)
        if isinstance(options, str):
            options = ExecutionOptions.from_preset(options)
        if options is not None:
            model.set_options(options)
        config = model.config
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if resize is not None and (
            isinstance(resize, bool) or not isinstance(resize, int) or resize < 1
        ):
            raise ConfigError(f"resize={resize!r}; it must be a positive int (pixels) or None")
        if max_matches is not None and (
            isinstance(max_matches, bool) or not isinstance(max_matches, int) or max_matches < 1
        ):
            raise ConfigError(f"max_matches={max_matches!r}; it must be a positive int or None")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r}; it must be a positive int")
        self.model = model.to(self.device).eval()
        self.resize = resize
        self.threshold = None if threshold is None else check_thr(threshold, "threshold")
        self.max_matches = max_matches
        self.batch_size = batch_size
        self.border_rm = int(config.match_coarse.border_rm)
        self.min_size = min_image_size(self.border_rm)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        preset: str | Any | None = None,
        *,
        attention: str | None = None,
        device: str | torch.device = "cpu",
        options: ExecutionOptions | str | None = None,
        **kwargs: Any,
    ) -> Matcher:
        """Load a checkpoint (official, kornia or native) and wrap it.

        Args:
            path: checkpoint file.
            preset: preset name or config (see :func:`loftr_core.api.checkpoint.load_model`).
            attention: attention backend override.
            device: torch device.
            options: execution options or a preset name (see :class:`Matcher`).
            **kwargs: the other :class:`Matcher` options (``threshold``, ``dtype``, ``resize``...).
        """
        resolved = resolve_device(device)  # clear errors before the (slow) model load
        resolve_dtype(kwargs.get("dtype", "fp32"), resolved)
        if isinstance(options, str):
            options = ExecutionOptions.from_preset(options)
        model = load_model(path, preset, device=device, attention=attention, options=options)
        return cls(model, device=device, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        name: str = "outdoor",
        *,
        attention: str | None = None,
        device: str | torch.device = "cpu",
        options: ExecutionOptions | str | None = None,
        **kwargs: Any,
    ) -> Matcher:
        """The official weights by name, downloaded into the cache on first use.

        Args:
            name: ``"outdoor"`` (MegaDepth; evaluated at ``resize=840``), ``"indoor"`` or
                ``"indoor_new"`` (ScanNet; evaluated at 640x480), each with the preset it was
                trained with (:data:`loftr_core.api.pretrained.PRETRAINED`). The file is fetched
                into ``$LOFTR_HOME`` (see :mod:`loftr_core.api.pretrained`: mirrors,
                ``LOFTR_WEIGHTS_MIRROR``, ``LOFTR_OFFLINE``) and reused without network access.
            attention, device, options, **kwargs: as for :meth:`from_checkpoint`.

        Raises:
            WeightsUnavailableError: offline with an empty cache or every mirror failed (the
                message says where to put a manually downloaded copy).
            CheckpointError: unknown name, or a damaged cached file (delete it to re-download).

        Example:
            >>> matcher = Matcher.from_pretrained("outdoor", resize=840)  # doctest: +SKIP
        """
        entry = pretrained_entry(name)
        resolved = resolve_device(device)  # clear errors before a download
        resolve_dtype(kwargs.get("dtype", "fp32"), resolved)
        path = fetch_pretrained(name)
        try:
            return cls.from_checkpoint(
                path, entry.preset, attention=attention, device=device, options=options, **kwargs
            )
        except CheckpointError as exc:
            raise CheckpointError(
                f"the cached weights {path} are damaged ({exc}); delete the file to download it "
                "again"
            ) from None

    # ------------------------------------------------------------------------------ preparing
    def _prepare(self, image: ImageLike, name: str, channel_order: str | None = None) -> _Prepared:
        order = self.channel_order if channel_order is None else channel_order
        gray = to_gray(image, name=name, channel_order=order)  # type: ignore[arg-type]
        original = (int(gray.shape[0]), int(gray.shape[1]))
        scale = (1.0, 1.0)
        if self.resize is not None:
            gray, scale = resize_long_side(gray, self.resize)
        h, w = gray.shape
        if min(h, w) < self.min_size:
            after = f" after resizing to long side {self.resize}" if self.resize else ""
            raise InputError(
                f"{name} is {w}x{h} px{after}; the model needs at least {self.min_size} px per "
                f"side (border_rm={self.border_rm} removes that many "
                f"8-px coarse cells at each border, leaving nothing to match); use a larger image"
                + (" or a larger resize" if self.resize else "")
            )
        as_float = gray.astype(np.float32) / 255.0 if gray.dtype == np.uint8 else gray
        return _Prepared(np.ascontiguousarray(as_float, dtype=np.float32), scale, original)

    def _stack(self, items: Sequence[_Prepared]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pad to a common multiple of 8 (a square with ``pad_to_square``): images
        ``(N, 1, H, W)``, coarse masks or None."""
        hp = _ceil_to(max(p.image.shape[0] for p in items), DIVISOR)
        wp = _ceil_to(max(p.image.shape[1] for p in items), DIVISOR)
        if self.pad_to_square:
            hp = wp = max(hp, wp)
        batch = np.zeros((len(items), 1, hp, wp), np.float32)
        mask = np.zeros((len(items), hp // DIVISOR, wp // DIVISOR), bool)
        for k, p in enumerate(items):
            h, w = p.image.shape
            batch[k, 0, :h, :w] = p.image
            mask[k, : math.ceil(h / DIVISOR), : math.ceil(w / DIVISOR)] = True
        masks = None if mask.all() else torch.from_numpy(mask)
        return torch.from_numpy(batch), masks

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    # ------------------------------------------------------------------------------- matching
    def _run(self, pairs: Sequence[tuple[_Prepared, _Prepared]]) -> list[MatchResult]:
        image0, mask0 = self._stack([p[0] for p in pairs])
        image1, mask1 = self._stack([p[1] for p in pairs])
        self.memory_limit.check(
            self.model, tuple(image0.shape), tuple(image1.shape), self.device, resize=self.resize
        )
        data = self._data(image0, mask0, image1, mask1)
        with torch.inference_mode(), self._autocast():
            out = self.model(data, thr=self.threshold)
        kpts0 = out["keypoints0"].float().cpu().numpy()
        kpts1 = out["keypoints1"].float().cpu().numpy()
        conf = out["confidence"].float().cpu().numpy()
        bids = out["batch_indexes"].cpu().numpy()
        return [
            self._finish(p0, p1, kpts0[bids == k], kpts1[bids == k], conf[bids == k])
            for k, (p0, p1) in enumerate(pairs)
        ]

    def _data(
        self,
        image0: torch.Tensor,
        mask0: torch.Tensor | None,
        image1: torch.Tensor,
        mask1: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """The model's input dict on the device (both masks when either image is padded)."""
        data: dict[str, torch.Tensor] = {
            "image0": image0.to(self.device),
            "image1": image1.to(self.device),
        }
        if mask0 is not None or mask1 is not None:
            full0 = torch.ones(
                image0.shape[0], image0.shape[2] // 8, image0.shape[3] // 8, dtype=torch.bool
            )
            full1 = torch.ones(
                image1.shape[0], image1.shape[2] // 8, image1.shape[3] // 8, dtype=torch.bool
            )
            data["mask0"] = (full0 if mask0 is None else mask0).to(self.device)
            data["mask1"] = (full1 if mask1 is None else mask1).to(self.device)
        return data

    def _encoded(
        self,
        image: ImageLike,
        name: str,
        channel_order: str | None,
        cache: _FeatureCache,
        loader: Prefetcher[tuple[Any, ...], _Prepared] | None = None,
    ) -> _CachedImage:
        """``image`` decoded, resized, padded and through the backbone: once per distinct image
        (decoded by ``loader``'s thread when it was asked ahead)."""
        key = _image_key(image, channel_order or self.channel_order)
        hit = cache.get(key)
        if hit is not None:
            return hit

        def load() -> _Prepared:
            return self._prepare(image, name, channel_order)

        prepared = load() if loader is None else loader.get(key, load)
        tensor, mask = self._stack([prepared])
        with torch.inference_mode(), self._autocast():
            encoded = self.model.encode(tensor.to(self.device))
        entry = _CachedImage(prepared, tensor, mask, encoded)
        cache.put(key, entry)
        return entry

    def _iter_cached(
        self, pairs: Iterable[tuple[ImageLike, ImageLike]], channel_order: str | None
    ) -> Iterator[MatchResult]:
        """One pair at a time, each distinct image encoded once (LRU cache of the features)."""
        for item in self._iter_cached_or_error(pairs, channel_order):
            if isinstance(item, LoftrError):
                raise item
            yield item

    def iter_match_or_error(
        self, pairs: Iterable[tuple[ImageLike, ImageLike]], *, channel_order: str | None = None
    ) -> Iterator[MatchResult | LoftrError]:
        """Like :meth:`iter_match` (``batch_size=1``, the feature cache), but a pair that cannot
        be matched (an unreadable or too small image, above the memory limit...) yields its
        :class:`~loftr_core.errors.LoftrError` in its place and the list goes on."""
        yield from self._iter_cached_or_error(pairs, channel_order)

    def _iter_cached_or_error(
        self, pairs: Iterable[tuple[ImageLike, ImageLike]], channel_order: str | None
    ) -> Iterator[MatchResult | LoftrError]:
        cache = _FeatureCache(self.feature_cache_bytes)
        indexed = ((k, a, b) for k, (a, b) in enumerate(pairs))
        for _, item in self._match_stream(indexed, channel_order, cache):
            yield item

    def iter_match_indexed(
        self,
        pairs: Sequence[tuple[ImageLike, ImageLike]],
        *,
        channel_order: str | None = None,
        reorder: bool = True,
    ) -> Generator[tuple[int, MatchResult | LoftrError], None, None]:
        """Match a pair list in a cache-friendly order: ``(index in pairs, result)`` per pair.

        Each distinct image is decoded and encoded once while it stays in the feature cache
        (``feature_cache_mb``); with ``reorder`` the pairs run in
        :func:`~loftr_core.api.schedule.locality_order` for a cache of as many images as the
        first one's features fit (``LoFTR.encoded_nbytes`` of its size), so images are encoded as few times as possible when they do
        not all fit. A pair that cannot be matched yields its
        :class:`~loftr_core.errors.LoftrError` as its result. Every pair's matches equal
        matching it alone; ``batch_size`` is not used.
        """
        cache = _FeatureCache(self.feature_cache_bytes)
        channels = channel_order or self.channel_order
        order: Sequence[int] = range(len(pairs))
        preloaded: dict[tuple[Any, ...], _Prepared] = {}
        if reorder and len(pairs) > 2:
            # the cache's capacity in images, from the size of the first image that decodes
            for k, (a, _) in enumerate(pairs[:8]):
                with contextlib.suppress(LoftrError):  # its pair reports the error in its turn
                    first = self._prepare(a, f"image0 of pair {k}", channel_order)
                    preloaded[_image_key(a, channels)] = first
                    break
            for first in preloaded.values():
                tensor, _ = self._stack([first])
                size = self.model.encoded_nbytes(int(tensor.shape[-2]), int(tensor.shape[-1]))
                keys = [(_image_key(a, channels), _image_key(b, channels)) for a, b in pairs]
                order = locality_order(keys, cache.budget // max(1, size))
        indexed = ((k, *pairs[k]) for k in order)
        yield from self._match_stream(indexed, channel_order, cache, preloaded)

    def _match_stream(
        self,
        indexed: Iterator[tuple[int, ImageLike, ImageLike]],
        channel_order: str | None,
        cache: _FeatureCache,
        preloaded: Mapping[tuple[Any, ...], _Prepared] | None = None,
    ) -> Iterator[tuple[int, MatchResult | LoftrError]]:
        """Match ``(index, image0, image1)`` in the given order while a background thread decodes
        the images of the next :data:`LOOKAHEAD_PAIRS` pairs that are not cached (``preloaded``:
        images decoded already, by key)."""
        order = channel_order or self.channel_order
        window = deque(itertools.islice(indexed, LOOKAHEAD_PAIRS + 1))
        with Prefetcher[tuple[Any, ...], _Prepared](ahead=2 * LOOKAHEAD_PAIRS) as loader:
            for key, value in (preloaded or {}).items():
                loader.put(key, value)
            while window:
                k, a, b = window.popleft()
                window.extend(itertools.islice(indexed, 1))
                wanted = {_image_key(a, order), _image_key(b, order)}
                for j, x, y in window:
                    for slot, image in ((0, x), (1, y)):
                        key = _image_key(image, order)
                        if key in cache.entries:
                            continue
                        load = functools.partial(
                            self._prepare, image, f"image{slot} of pair {j}", channel_order
                        )
                        if loader.want(key, load):
                            wanted.add(key)
                loader.keep_only(wanted)
                try:
                    yield k, self._match_cached(k, a, b, channel_order, cache, loader)
                except LoftrError as exc:
                    yield k, _for_pair(exc, k)

    def _match_cached(
        self,
        k: int,
        a: ImageLike,
        b: ImageLike,
        channel_order: str | None,
        cache: _FeatureCache,
        loader: Prefetcher[tuple[Any, ...], _Prepared] | None = None,
    ) -> MatchResult:
        first = self._encoded(a, f"image0 of pair {k}", channel_order, cache, loader)
        second = self._encoded(b, f"image1 of pair {k}", channel_order, cache, loader)
        self.memory_limit.check(
            self.model,
            tuple(first.tensor.shape),
            tuple(second.tensor.shape),
            self.device,
            resize=self.resize,
        )
        data = self._data(first.tensor, first.mask, second.tensor, second.mask)
        with torch.inference_mode(), self._autocast():
            out = self.model.forward_encoded(
                data, first.encoded, second.encoded, thr=self.threshold
            )
        return self._finish(
            first.prepared,
            second.prepared,
            out["keypoints0"].float().cpu().numpy(),
            out["keypoints1"].float().cpu().numpy(),
            out["confidence"].float().cpu().numpy(),
        )

    def _finish(
        self, p0: _Prepared, p1: _Prepared, k0: np.ndarray, k1: np.ndarray, conf: np.ndarray
    ) -> MatchResult:
        idx = np.arange(len(conf))
        if self.max_matches is not None and len(idx) > self.max_matches:
            top = np.argsort(-conf[idx], kind="stable")[: self.max_matches]
            idx = np.sort(idx[top])
        s0 = np.array(p0.scale, np.float32)
        s1 = np.array(p1.scale, np.float32)
        return MatchResult(
            keypoints0=np.ascontiguousarray(k0[idx] * s0, dtype=np.float32),
            keypoints1=np.ascontiguousarray(k1[idx] * s1, dtype=np.float32),
            confidence=np.ascontiguousarray(conf[idx], dtype=np.float32),
            image0_size=p0.original_size,
            image1_size=p1.original_size,
        )

    def match(
        self, image0: ImageLike, image1: ImageLike, *, channel_order: str | None = None
    ) -> MatchResult:
        """Match one pair (paths, numpy arrays or tensors; see :mod:`loftr_core.api.image_io`).

        Args:
            image0, image1: the images.
            channel_order: ``"rgb"`` or ``"bgr"`` for 3/4-channel numpy arrays (``cv2.imread``
                gives BGR); default: the matcher's ``channel_order`` (``"rgb"``).
        """
        return self.match_pairs([(image0, image1)], channel_order=channel_order)[0]

    def iter_match(self, pairs: Iterable[tuple[ImageLike, ImageLike]]) -> Iterator[MatchResult]:
        """Match pairs lazily, ``batch_size`` at a time, yielding one result per pair in order.

        Unlike :meth:`match_pairs` this does not sort by size across the whole list (it only
        batches neighbours), so it suits long streams. With ``batch_size=1`` (the default) each
        distinct image is encoded once while it stays in the feature cache, as in
        :meth:`match_pairs`.
        """
        if self.batch_size == 1:
            yield from self._iter_cached(pairs, None)
            return
        chunk: list[tuple[_Prepared, _Prepared]] = []
        for k, (a, b) in enumerate(pairs):
            chunk.append(
                (self._prepare(a, f"image0 of pair {k}"), self._prepare(b, f"image1 of pair {k}"))
            )
            if len(chunk) == self.batch_size:
                yield from self._run_grouped(chunk)
                chunk = []
        if chunk:
            yield from self._run_grouped(chunk)

    def _run_grouped(self, prepared: Sequence[tuple[_Prepared, _Prepared]]) -> list[MatchResult]:
        def size_key(k: int) -> tuple[int, ...]:
            a, b = prepared[k]
            return (*a.image.shape, *b.image.shape)

        order = sorted(range(len(prepared)), key=size_key)
        results: list[MatchResult | None] = [None] * len(prepared)
        for start in range(0, len(order), self.batch_size):
            ids = order[start : start + self.batch_size]
            for k, res in zip(ids, self._run([prepared[k] for k in ids]), strict=True):
                results[k] = res
        return [r for r in results if r is not None]

    def match_pairs(
        self, pairs: Sequence[tuple[ImageLike, ImageLike]], *, channel_order: str | None = None
    ) -> list[MatchResult]:
        """Match many pairs; pairs of equal sizes are batched together, others padded.

        Args:
            pairs: ``(image0, image1)`` tuples.
            channel_order: as for :meth:`match`.

        Returns:
            One :class:`MatchResult` per pair, in the input order.

        With ``batch_size=1`` (the default) each distinct image (the same path, or the same
        array object) is decoded and put through the backbone once and its features are reused
        by every pair it is in (an LRU cache of ``feature_cache_mb``); the pairs run in a
        cache-friendly order and images are decoded ahead in a background thread
        (:meth:`iter_match_indexed`); the matches equal matching each pair alone. The first pair
        in that order that cannot be matched raises its error, which names the pair (not
        necessarily the lowest-numbered bad one; :meth:`iter_match_indexed` goes on past it).
        """
        if self.batch_size == 1 and len(pairs) > 1:
            results: list[MatchResult | None] = [None] * len(pairs)
            stream = self.iter_match_indexed(pairs, channel_order=channel_order)
            with contextlib.closing(stream):  # an error ends the loader thread too
                for k, item in stream:
                    if isinstance(item, LoftrError):
                        raise item
                    results[k] = item
            return [r for r in results if r is not None]
        prepared = [
            (
                self._prepare(a, f"image0 of pair {k}", channel_order),
                self._prepare(b, f"image1 of pair {k}", channel_order),
            )
            for k, (a, b) in enumerate(pairs)
        ]
        return self._run_grouped(prepared)
