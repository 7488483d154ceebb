"""The official LoFTR weights by name: fetched once into a cache folder, checked, then reused offline.

Names (kornia's, same files): ``"outdoor"`` (MegaDepth, dual-softmax), ``"indoor"`` (ScanNet,
dual-softmax) and ``"indoor_new"`` (ScanNet, dual-softmax, positional-encoding fix). Each name
carries the preset its checkpoint was trained with (:data:`PRETRAINED`).

Where files go and come from (environment variables, read when a file is fetched):

``LOFTR_HOME``
    Cache folder; weights live in ``$LOFTR_HOME/checkpoints/<file>``. Default: the user's cache
    folder (``~/.cache/loftr`` on Linux, ``~/Library/Caches/loftr`` on macOS,
    ``%LOCALAPPDATA%\\loftr\\loftr\\Cache`` on Windows).
``LOFTR_WEIGHTS_MIRROR``
    One or more base URLs (separated by spaces) tried before the public mirrors; each file is
    fetched as ``BASE_URL/<file name>`` over plain HTTP(S) (company mirrors, air-gapped sites).
``LOFTR_OFFLINE``
    ``1`` (or ``true``/``yes``/``on``): use the cache only, never the network.

A download goes through pooch's HTTP downloader (timeouts, HTTP errors, truncation detected) into
a temporary ``.<file>.<host>.<pid>.<id>.partial`` file next to the final one; the file is checked
(sha256 where a published one is known; always that it is a LoFTR checkpoint of the expected
kind, keys, shapes and finite values) and only then renamed to its final name, so the cache never
holds a half or wrong file. A file that fails is deleted, reported and the next mirror tried;
partial files that stopped growing (killed downloads) are removed before the next download.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from loftr_core.api.checkpoint import (
    check_finite,
    check_state_dict,
    read_checkpoint,
    resolve_config,
)
from loftr_core.errors import CheckpointError, WeightsUnavailableError
from loftr_core.model import LoFTR

__all__ = [
    "DEFAULT_MIRRORS",
    "PRETRAINED",
    "PretrainedWeights",
    "cache_dir",
    "check_preset_for",
    "fetch_pretrained",
    "mirror_urls",
    "pretrained_entry",
    "pretrained_name",
    "resolve_weights",
    "verify_weights",
]

logger = logging.getLogger(__name__)

ENV_HOME = "LOFTR_HOME"
ENV_MIRROR = "LOFTR_WEIGHTS_MIRROR"
ENV_OFFLINE = "LOFTR_OFFLINE"

#: Public mirrors, tried in this order after ``$LOFTR_WEIGHTS_MIRROR`` (kornia's hosting).
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://huggingface.co/kornia/loftr/resolve/main",
    "https://cmp.felk.cvut.cz/~mishkdmy/models",
)

#: Seconds without data before a mirror counts as failed (connect and each read).
DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class PretrainedWeights:
    """One official checkpoint that can be fetched by name.

    Attributes:
        name: the name users pass (``"outdoor"``).
        file: the file name on the mirrors and in the cache.
        preset: the :data:`~loftr_core.model.config.PRESETS` entry it was trained with.
        sha256: the published sha256 of the file, or ``None`` where none is published (the
            content check still runs).
        description: what it was trained on and how it was evaluated.
    """

    name: str
    file: str
    preset: str
    sha256: str | None
    description: str


PRETRAINED: Mapping[str, PretrainedWeights] = MappingProxyType(
    {
        "outdoor": PretrainedWeights(
            "outdoor",
            "loftr_outdoor.ckpt",
            "outdoor_ds",
            None,
            "MegaDepth, dual-softmax (the official outdoor_ds.ckpt); evaluated with the long "
            "side resized to 840 px",
        ),
        "indoor": PretrainedWeights(
            "indoor",
            "loftr_indoor.ckpt",
            "indoor_ds",
            None,
            "ScanNet, dual-softmax (the official indoor_ds.ckpt, temp_bug_fix=False); "
            "evaluated at 640x480",
        ),
        "indoor_new": PretrainedWeights(
            "indoor_new",
            "loftr_indoor_ds_new.ckpt",
            "indoor_ds_new",
            None,
            "ScanNet, dual-softmax, positional encoding fixed (the official indoor_ds_new.ckpt, "
            "temp_bug_fix=True); evaluated at 640x480",
        ),
    }
)
"""The official checkpoints by name (kornia's names and files). No sha256 is published for them."""


def pretrained_entry(name: str) -> PretrainedWeights:
    """The :class:`PretrainedWeights` called ``name``; CheckpointError listing the names if unknown."""
    entry = PRETRAINED.get(name) if isinstance(name, str) else None
    if entry is None:
        raise CheckpointError(
            f"no pretrained weights called {name!r}; available: {', '.join(PRETRAINED)} "
            "(or pass the path of a checkpoint file)"
        )
    return entry


def cache_dir() -> Path:
    """The cache folder: ``$LOFTR_HOME``, else the user's cache folder for ``loftr``."""
    home = os.environ.get(ENV_HOME, "").strip()
    if home:
        return Path(home).expanduser()
    import pooch

    return Path(pooch.os_cache("loftr"))


def _offline_from_env() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


def mirror_urls(entry: PretrainedWeights, mirrors: Sequence[str] | None = None) -> list[str]:
    """The URLs tried for ``entry``, in order: ``$LOFTR_WEIGHTS_MIRROR``, then ``mirrors``.

    Args:
        entry: the weights.
        mirrors: base URLs; ``None`` means :data:`DEFAULT_MIRRORS`.
    """
    bases = os.environ.get(ENV_MIRROR, "").split()
    bases += list(DEFAULT_MIRRORS if mirrors is None else mirrors)
    return [f"{base.rstrip('/')}/{entry.file}" for base in bases]


def _manual_hint(entry: PretrainedWeights, urls: Sequence[str], target: Path) -> str:
    where = " or ".join(urls) if urls else "the LoFTR authors' release"
    return f"download {entry.file} from {where} and put it at {target}"


def _host() -> str:
    return socket.gethostname().replace(".", "_") or "host"


def _remove_stale_partials(target: Path, timeout: float) -> None:
    """Delete ``.<file>.*.partial`` files that have not grown for ``2 * timeout + 60`` s.

    A live download writes at least once per ``timeout`` (or fails and removes its file), so an
    older partial belongs to a killed process, whatever host or pid namespace it ran in.
    """
    for partial in target.parent.glob(f".{target.name}.*.partial"):
        try:
            age = time.time() - partial.stat().st_mtime
            if age > 2 * timeout + 60:
                logger.info("removing %s, left by an interrupted download", partial)
                partial.unlink()
        except OSError:  # gone meanwhile, or another user's file: not ours to remove
            continue


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(path: Path, entry: PretrainedWeights) -> None:
    """Check that ``path`` holds ``entry``'s checkpoint before it is used.

    Checks the sha256 (where published), that the file is a checkpoint of ``entry.preset``'s
    kind (dual-softmax / optimal transport) with exactly its keys and shapes, and that every
    tensor is finite.

    Raises:
        CheckpointError: saying which check failed.
    """
    if entry.sha256 is not None:
        digest = _sha256(path)
        if digest != entry.sha256:
            raise CheckpointError(f"its sha256 is {digest}, expected {entry.sha256}")
    ckpt = read_checkpoint(path)
    config, _ = resolve_config(ckpt, entry.preset)
    expected = LoFTR(config).state_dict()
    check_state_dict(expected, ckpt.state_dict, source=f"the file for {entry.name!r}")
    check_finite(ckpt.state_dict, source="it")


def _progress_bar(entry: PretrainedWeights, enabled: bool) -> object:
    if not enabled:
        return False
    from tqdm import tqdm

    # total=1 until pooch sets the real size: pooch tests the bar's truth value, which is False
    # for a tqdm whose total is 0
    return tqdm(total=1, unit="B", unit_scale=True, unit_divisor=1024, desc=entry.file, leave=True)


def _download(
    url: str, target: Path, entry: PretrainedWeights, progress: bool, timeout: float
) -> None:
    """Download ``url`` to a partial file, verify it, rename it to ``target``.

    Raises:
        CheckpointError: the file arrived but is not ``entry``'s checkpoint (deleted).
        OSError: the cache cannot be written (not the mirror's fault).
        requests.RequestException: the mirror failed (connection, HTTP status, timeout,
            truncated transfer).
    """
    import pooch

    partial = target.with_name(
        f".{target.name}.{_host()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
    )
    logger.info("downloading %s from %s to %s", entry.file, url, target)
    bar = _progress_bar(entry, progress)
    downloader = pooch.HTTPDownloader(progressbar=bar, timeout=timeout)
    try:
        downloader(url, str(partial), None)
        verify_weights(partial, entry)
        os.replace(partial, target)
    finally:
        close = getattr(bar, "close", None)
        if close is not None:
            close()
        partial.unlink(missing_ok=True)


def fetch_pretrained(
    name: str,
    *,
    cache: str | os.PathLike[str] | None = None,
    mirrors: Sequence[str] | None = None,
    offline: bool | None = None,
    progress: bool | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """The local path of the named official weights, downloading them on first use.

    A file already in the cache is returned without any network access.

    Args:
        name: ``"outdoor"``, ``"indoor"`` or ``"indoor_new"`` (:data:`PRETRAINED`).
        cache: cache folder; ``None``: :func:`cache_dir` (``$LOFTR_HOME``...).
        mirrors: base URLs tried after ``$LOFTR_WEIGHTS_MIRROR``; ``None``:
            :data:`DEFAULT_MIRRORS`.
        offline: never download; ``None``: ``$LOFTR_OFFLINE``.
        progress: show a progress bar; ``None``: when stderr is a terminal.
        timeout: seconds without data before a mirror counts as failed.

    Returns:
        ``<cache>/checkpoints/<file>``, verified when it was downloaded.

    Raises:
        CheckpointError: ``name`` is unknown.
        WeightsUnavailableError: offline with an empty cache, every mirror failed, or the cache
            folder cannot be written; the one-line message names the file, the URLs and the
            path where a manually downloaded copy is picked up.
    """
    entry = pretrained_entry(name)
    target = (Path(cache).expanduser() if cache is not None else cache_dir()) / "checkpoints"
    target = target / entry.file
    if target.is_file():
        logger.debug("%r: using the cached %s", name, target)
        return target
    urls = mirror_urls(entry, mirrors)
    if offline if offline is not None else _offline_from_env():
        raise WeightsUnavailableError(
            f"pretrained weights {name!r} ({entry.file}) are not in the cache and "
            f"{ENV_OFFLINE}=1 forbids downloading; {_manual_hint(entry, urls, target)}"
        )
    if not urls:
        raise WeightsUnavailableError(
            f"no mirror to download {entry.file} from (set {ENV_MIRROR}=BASE_URL); "
            + _manual_hint(entry, urls, target)
        )
    show = progress if progress is not None else bool(sys.stderr and sys.stderr.isatty())
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(target, timeout)
    except OSError as exc:
        raise _cache_error(target, exc) from None
    import requests

    failures: list[str] = []
    for url in urls:
        try:
            _download(url, target, entry, show, timeout)
            return target
        except CheckpointError as exc:
            reason = f"served a file that is not {entry.file} ({_one_line(exc)}); it was deleted"
        except requests.RequestException as exc:
            reason = _request_reason(exc)
        except OSError as exc:  # local: the download layer's errors are RequestExceptions
            if target.is_file():  # another process finished the same download first
                return target
            raise _cache_error(target, exc) from None
        logger.warning("%s: %s", url, reason)
        failures.append(f"{url}: {reason}")
    raise WeightsUnavailableError(
        f"could not download pretrained weights {name!r}: {'; '.join(failures)}. Check the "
        f"network or set {ENV_MIRROR}=BASE_URL, or {_manual_hint(entry, urls, target)}"
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _request_reason(exc: BaseException) -> str:
    """A short reason for a failed request: the HTTP status, else the OS error behind it."""
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "status_code", None) is not None:
        return f"HTTP {response.status_code} {getattr(response, 'reason', '') or ''}".strip()
    text = _one_line(exc)
    # e.g. "[Errno 111] Connection refused" inside urllib3's long retry message
    os_error = re.search(r"\[Errno [^\]]+\] [^'\")\]]+", text)
    return f"{type(exc).__name__}: {os_error.group(0).strip() if os_error else text}"


def _cache_error(target: Path, exc: OSError) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"cannot write the weights cache {target.parent} ({exc.strerror or exc}); set "
        f"{ENV_HOME} to a folder you can write to"
    )


def pretrained_name(value: str | os.PathLike[str] | None) -> str | None:
    """``value`` if it is a name of :data:`PRETRAINED` (a ``str``, exactly), else None.

    A bare name always means the official weights, even if a file of that name exists in the
    current folder; write ``./outdoor`` (or pass a ``Path``) for the file.
    """
    return value if isinstance(value, str) and value in PRETRAINED else None


def check_preset_for(name: str, preset: str | None) -> str:
    """The preset of pretrained ``name``; CheckpointError if ``preset`` asks for another one."""
    entry = pretrained_entry(name)
    if preset is not None and preset != entry.preset:
        raise CheckpointError(
            f"pretrained weights {name!r} use preset {entry.preset!r}, not {preset!r}; drop "
            "--preset (it is for checkpoint files)"
        )
    return entry.preset


def resolve_weights(
    value: str | os.PathLike[str], preset: str | None = None
) -> tuple[Path, str | None]:
    """A checkpoint path and preset for a ``--weights`` value: a pretrained name or a file.

    A name from :data:`PRETRAINED` is fetched (:func:`fetch_pretrained`) and comes with its
    preset; anything else is a file path.

    Args:
        value: ``"outdoor"``... or a checkpoint path.
        preset: the preset the user asked for, if any.

    Returns:
        ``(path, preset)``; the preset is the entry's for a name, else ``preset`` unchanged.

    Raises:
        CheckpointError: a name with a ``preset`` other than its own.
        WeightsUnavailableError: see :func:`fetch_pretrained`.
    """
    name = pretrained_name(value)
    if name is None:
        return Path(value), preset
    preset = check_preset_for(name, preset)  # before a download
    return fetch_pretrained(name), preset
