"""How much memory a matching call will take, checked before the model runs.

:func:`estimate_peak_bytes` predicts the peak memory a forward pass adds to the process (on CPU:
resident memory; on CUDA the same model is used for device memory) from the input sizes, the
model's widths and its execution options. It is an empirical model of measured peaks (fp32,
``outdoor_ds``, repeated calls in one process); ``benchmarks/bench.py`` prints it next to the
measured peak RSS at every size it runs:

* the retained maps and the transformer/matching work grow with the pixels of both images:
  ``BASE + PER_PIXEL * (pixels of all images)``;
* the backbone's own peak grows with the pixels it sees at once (both images when batched):
  ``BACKBONE_PER_PIXEL * pixels``; the peak is the larger of the two;
* a dual-softmax score budget above the CPU default (``coarse_chunk_elements``) adds its float32
  bytes twice (scores and their exponentials).

:class:`MemoryLimit` turns an estimate into a decision. The default limit (``"auto"``) on CPU is
the smaller of :data:`DEFAULT_LIMIT_GIB` and 90% of the memory available now (``MemAvailable`` and
the cgroup headroom on Linux); on CUDA it is 90% of the free device memory (PyTorch's cached
blocks count as free); on other devices there is no check. So a pair far too large for the
machine is refused before the model runs instead of swapping for a long time.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from loftr_core.errors import ConfigError, MemoryLimitError
from loftr_core.execution.policy import CPU_COARSE_CHUNK
from loftr_core.model import LoFTR

__all__ = [
    "DEFAULT_LIMIT_GIB",
    "MemoryLimit",
    "MemoryLimitError",
    "available_memory_bytes",
    "estimate_peak_bytes",
]

GIB = float(1 << 30)
#: Limit of the ``"auto"`` setting when more memory is available (GiB).
DEFAULT_LIMIT_GIB = 8.0
#: Share of the available memory the ``"auto"`` setting allows.
AVAILABLE_SHARE = 0.9

# Coefficients of the empirical model (bytes), fitted to the peaks of repeated calls of
# outdoor_ds on CPU at 320x240 ... 1600x1200 (equal and unequal pairs); the widths scale them for
# other models. The measurements are in the loftr-core CHANGELOG and the bench's memory table.
BASE = 380e6
PER_PIXEL = 333.0
BACKBONE_PER_PIXEL = 600.0
_REFERENCE_WIDTH = 128  # resnetfpn.initial_dim of the official models


def _scale(model: LoFTR) -> float:
    return max(model.config.resnetfpn.initial_dim, model.config.resnetfpn.block_dims[0]) / float(
        _REFERENCE_WIDTH
    )


def estimate_peak_bytes(
    model: LoFTR,
    shape0: tuple[int, ...],
    shape1: tuple[int, ...],
    device: torch.device | str = "cpu",
) -> int:
    """The estimated peak memory (bytes) that ``model`` adds while matching inputs of these shapes.

    Args:
        model: the model (its config gives the widths, its execution the batching and budgets).
        shape0, shape1: ``(N, 1, H, W)`` (or ``(H, W)``) of ``image0`` / ``image1``.
        device: where it will run (the budgets differ by device).

    Returns:
        Bytes (``benchmarks/bench.py`` compares them with measured peaks).
    """
    dev = torch.device(device)
    n0 = shape0[0] if len(shape0) == 4 else 1
    n1 = shape1[0] if len(shape1) == 4 else 1
    h0, w0 = int(shape0[-2]), int(shape0[-1])
    h1, w1 = int(shape1[-2]), int(shape1[-1])
    pixels0, pixels1 = n0 * h0 * w0, n1 * h1 * w1
    scale = _scale(model)
    limit = model.execution.backbone_batch_limit(dev)
    batched = (h0, w0) == (h1, w1) and (limit is None or pixels0 + pixels1 <= limit)
    backbone = (pixels0 + pixels1) if batched else max(pixels0, pixels1)
    cells = max(n0, n1) * (h0 // 8) * (w0 // 8) * (h1 // 8) * (w1 // 8)
    scores = min(cells, model.execution.coarse_chunk_elements(dev))
    extra_scores = 8.0 * max(0, scores - min(cells, CPU_COARSE_CHUNK))
    working = BASE + scale * PER_PIXEL * (pixels0 + pixels1) + extra_scores
    return int(max(working, scale * BACKBONE_PER_PIXEL * backbone))


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_stat(key: str) -> int:
    try:
        for line in Path("/sys/fs/cgroup/memory.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def available_memory_bytes(device: torch.device | str = "cpu") -> int | None:
    """Memory available to this process now: free device memory (CUDA), else the smaller of
    ``MemAvailable`` and the cgroup (v2) headroom on Linux; None where it cannot be read."""
    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            free = int(torch.cuda.mem_get_info(dev)[0])
            # blocks PyTorch keeps cached for reuse are free for the next call too
            return free + int(torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
        except (RuntimeError, AssertionError):
            return None
    if dev.type != "cpu":
        return None
    candidates: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    cap, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if cap is not None and used is not None:
        # page cache the kernel can drop is not in use (kubelet's working set does the same)
        candidates.append(max(0, cap - used + _cgroup_stat("inactive_file")))
    if not candidates and hasattr(os, "sysconf"):
        with contextlib.suppress(ValueError, OSError):
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return min(candidates) if candidates else None


@dataclass(frozen=True)
class MemoryLimit:
    """A memory limit for matching calls.

    Attributes:
        setting: ``"auto"`` (CPU: the smaller of :data:`DEFAULT_LIMIT_GIB` and 90% of the
            available memory; CUDA: 90% of the free device memory), a number of GiB, or ``None``
            (no check).
    """

    setting: float | str | None = "auto"

    @classmethod
    def parse(cls, value: float | str | None) -> MemoryLimit:
        """``"auto"``, ``"none"``/``None``, or a positive number of GiB (``8``, ``"12.5"``)."""
        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            return cls(None)
        if isinstance(value, str) and value.strip().lower() == "auto":
            return cls("auto")
        try:
            gib = (
                float(value.strip().lower().removesuffix("gib"))
                if isinstance(value, str)
                else float(value)
            )
        except (TypeError, ValueError):
            gib = float("nan")
        if isinstance(value, bool) or not math.isfinite(gib) or gib <= 0:
            raise ConfigError(
                f"memory limit {value!r}: give a positive number of GiB, 'auto' (the default: on "
                f"CPU {DEFAULT_LIMIT_GIB:g} GiB or 90% of the available memory, if less; on CUDA "
                "90% of the free device memory) or 'none'"
            )
        return cls(gib)

    def bytes_for(self, device: torch.device | str) -> tuple[float | None, str]:
        """The limit in bytes (None: no check) and how it was chosen, for the message."""
        if self.setting is None:
            return None, "no limit"
        if self.setting != "auto":
            return float(self.setting) * GIB, "the limit you set"
        available = available_memory_bytes(device)
        default = DEFAULT_LIMIT_GIB * GIB if torch.device(device).type == "cpu" else math.inf
        if available is None:
            return (default if math.isfinite(default) else None), "the default limit"
        allowed = AVAILABLE_SHARE * available
        if allowed < default:
            return allowed, f"90% of the {available / GIB:.1f} GiB available"
        return default, f"the default limit; {available / GIB:.1f} GiB are available"

    def check(
        self,
        model: LoFTR,
        shape0: tuple[int, ...],
        shape1: tuple[int, ...],
        device: torch.device | str,
        *,
        resize: int | None = None,
    ) -> int:
        """The estimate for these shapes; :class:`MemoryLimitError` if it is above the limit.

        Args:
            model, shape0, shape1, device: as for :func:`estimate_peak_bytes`.
            resize: the ``resize`` in use (named in the message).
        """
        estimate = estimate_peak_bytes(model, shape0, shape1, device)
        limit, why = self.bytes_for(device)
        if limit is None or estimate <= limit:
            return estimate
        sizes = f"{shape0[-1]}x{shape0[-2]} and {shape1[-1]}x{shape1[-2]} px"
        suggestion = _suggest_resize(model, shape0, shape1, device, limit)
        hint = (
            f"resize the images (Matcher(resize={suggestion}), loftr-match --resize {suggestion}: "
            f"about {estimate_peak_bytes(model, *_resized(shape0, shape1, suggestion), device) / GIB:.1f} GiB)"
            if suggestion is not None
            else "use smaller images"
        )
        raise MemoryLimitError(
            f"matching images of {sizes}{f' (after resize={resize})' if resize else ''} needs "
            f"about {estimate / GIB:.1f} GiB (estimated peak), above {limit / GIB:.1f} GiB "
            f"({why}); {hint}, or lift the limit (Matcher(memory_limit=GIB or None), "
            "loftr-match --memory-limit GIB|none)"
        )


def _resized(
    shape0: tuple[int, ...], shape1: tuple[int, ...], long_side: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    def one(shape: tuple[int, ...]) -> tuple[int, ...]:
        h, w = int(shape[-2]), int(shape[-1])
        s = long_side / max(h, w)
        if s >= 1:
            return shape
        return (*shape[:-2], max(8, int(h * s) // 8 * 8), max(8, int(w * s) // 8 * 8))

    return one(shape0), one(shape1)


def _suggest_resize(
    model: LoFTR,
    shape0: tuple[int, ...],
    shape1: tuple[int, ...],
    device: torch.device | str,
    limit: float,
) -> int | None:
    """The largest of the usual long sides (1600, 1200, 840, 640) whose estimate fits."""
    longest = max(shape0[-2], shape0[-1], shape1[-2], shape1[-1])
    for side in (1600, 1200, 840, 640):
        if (
            side < longest
            and estimate_peak_bytes(model, *_resized(shape0, shape1, side), device) <= limit
        ):
            return side
    return None
