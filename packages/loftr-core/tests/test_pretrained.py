"""Official weights by name: download, reuse offline, mirrors in order, refusal of bad files.

Nothing here reaches the internet: checkpoints written in the official layouts from seeded models
are served by a loopback HTTP server, and the conftest empties the default mirrors and points
``LOFTR_HOME`` at a fresh folder for every test.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from loftr_core.api import pretrained
from loftr_core.api.matcher import Matcher
from loftr_core.cli import convert
from loftr_core.cli import match as cli
from loftr_core.errors import CheckpointError, WeightsUnavailableError
from loftr_core.model import LoFTR
from loftr_core.model.config import PRESETS, LoFTRConfig

OUTDOOR = pretrained.PRETRAINED["outdoor"]


def _seeded(preset: str, seed: int = 0) -> LoFTR:
    torch.manual_seed(seed)
    return LoFTR(PRESETS[preset]()).eval()


def _official_bytes(model: LoFTR, *, lightning: bool) -> bytes:
    """A checkpoint file as published: the authors' Lightning layout or kornia's hosted one."""
    if lightning:
        state = {f"matcher.{k}": v for k, v in model.state_dict().items()}
        obj: dict[str, object] = {"state_dict": state, "epoch": 29, "global_step": 13000}
    else:
        obj = {"state_dict": model.state_dict()}
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def outdoor() -> tuple[LoFTR, bytes]:
    model = _seeded("outdoor_ds")
    return model, _official_bytes(model, lightning=False)


class WeightsServer:
    """A loopback HTTP server: ``files`` by name; ``mode`` ``ok``, ``truncate`` or ``stall``."""

    def __init__(self, files: dict[str, bytes] | None = None, mode: str = "ok") -> None:
        self.files = dict(files or {})
        self.mode = mode
        self.requests: Counter[str] = Counter()
        self.release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                server.requests[name] += 1
                body = server.files.get(name)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.mode == "ok":
                    self.wfile.write(body)
                    return
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                if server.mode == "stall":
                    server.release.wait(60)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/models"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[WeightsServer]]:
    """Start loopback servers (stopped after the test); downloading is allowed while it runs."""
    monkeypatch.delenv(pretrained.ENV_OFFLINE)
    started: list[WeightsServer] = []

    class Tracked(WeightsServer):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            started.append(self)

    yield Tracked
    for server in started:
        server.stop()


def _dead_url() -> str:
    """A loopback URL on which nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/models"


def _cache() -> Path:
    return Path(os.environ[pretrained.ENV_HOME]) / "checkpoints"


def _images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    base = cv2.resize(rng.integers(0, 256, (24, 32), dtype=np.uint8), (256, 192))
    return base, np.roll(base, 16, axis=1)


def test_every_name_has_an_official_preset() -> None:
    assert set(pretrained.PRETRAINED) == {"outdoor", "indoor", "indoor_new"}
    for name, entry in pretrained.PRETRAINED.items():
        assert entry.name == name and entry.preset in PRESETS
        assert PRESETS[entry.preset]().match_coarse.match_type == "dual_softmax"  # kornia's files
    assert pretrained.PRETRAINED["indoor_new"].file == "loftr_indoor_ds_new.ckpt"
    assert PRESETS[pretrained.PRETRAINED["indoor_new"].preset]().coarse.temp_bug_fix is True
    assert PRESETS[pretrained.PRETRAINED["indoor"].preset]().coarse.temp_bug_fix is False


def test_first_download_then_reuse_with_the_server_stopped(
    serve: type[WeightsServer],
    outdoor: tuple[LoFTR, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, body = outdoor
    server = serve({OUTDOOR.file: body})
    monkeypatch.setenv(pretrained.ENV_MIRROR, server.url)
    image0, image1 = _images()
    matcher = Matcher.from_pretrained("outdoor", threshold=0.0)
    cached = _cache() / OUTDOOR.file
    assert cached.read_bytes() == body and server.requests[OUTDOOR.file] == 1
    assert sorted(p.name for p in cached.parent.iterdir()) == [OUTDOOR.file]  # no partial left
    assert matcher.model.config == LoFTRConfig.outdoor_ds()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(matcher.model.state_dict()[key], value, rtol=0, atol=0)
    first = matcher.match(image0, image1)
    reference = Matcher(_seeded("outdoor_ds"), threshold=0.0).match(image0, image1)
    assert len(first) == len(reference) > 0
    np.testing.assert_array_equal(first.keypoints0, reference.keypoints0)

    server.stop()  # reuse: no network access at all, also with LOFTR_OFFLINE=1
    mtime = cached.stat().st_mtime_ns
    for offline in ("0", "1"):
        monkeypatch.setenv(pretrained.ENV_OFFLINE, offline)
        again = Matcher.from_pretrained("outdoor", threshold=0.0).match(image0, image1)
        np.testing.assert_array_equal(again.keypoints1, first.keypoints1)
    assert server.requests[OUTDOOR.file] == 1 and cached.stat().st_mtime_ns == mtime


def test_indoor_new_comes_with_its_preset(
    serve: type[WeightsServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _seeded("indoor_ds_new", seed=5)
    entry = pretrained.PRETRAINED["indoor_new"]
    server = serve({entry.file: _official_bytes(model, lightning=True)})  # the authors' layout
    monkeypatch.setenv(pretrained.ENV_MIRROR, server.url)
    matcher = Matcher.from_pretrained("indoor_new")
    assert matcher.model.config.coarse.temp_bug_fix is True
    assert matcher.model.config.match_coarse.border_rm == 0
    loaded = matcher.model.state_dict()
    assert loaded.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)


def test_a_failing_mirror_then_one_that_works(
    serve: type[WeightsServer],
    outdoor: tuple[LoFTR, bytes],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, body = outdoor
    empty = serve({})  # answers 404
    good = serve({OUTDOOR.file: body})
    dead = _dead_url()
    # LOFTR_WEIGHTS_MIRROR comes first (two bases here), then the default mirrors
    monkeypatch.setenv(pretrained.ENV_MIRROR, f"{dead} {empty.url}")
    monkeypatch.setattr(pretrained, "DEFAULT_MIRRORS", (good.url,))
    urls = pretrained.mirror_urls(OUTDOOR)
    assert urls == [f"{base}/{OUTDOOR.file}" for base in (dead, empty.url, good.url)]
    with caplog.at_level(logging.WARNING, logger="loftr_core.api.pretrained"):
        path = pretrained.fetch_pretrained("outdoor")
    assert path.read_bytes() == body
    assert empty.requests[OUTDOOR.file] == 1 and good.requests[OUTDOOR.file] == 1
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert warnings[0].startswith(urls[0]) and "ConnectionError" in warnings[0]
    assert warnings[1].startswith(urls[1]) and "HTTP 404" in warnings[1]


def _bad_files() -> dict[str, bytes]:
    torch.manual_seed(0)
    small = LoFTR(
        LoFTRConfig.outdoor_ds().replace(
            resnetfpn={"initial_dim": 16, "block_dims": (16, 24, 32)},
            coarse={"d_model": 32, "nhead": 4, "layer_names": ("self", "cross")},
            fine={"d_model": 16, "nhead": 2},
        )
    )
    nan_model = _seeded("outdoor_ds")
    with torch.no_grad():
        nan_model.backbone.conv1.weight[0, 0, 0, 0] = float("nan")
    return {
        "random bytes": np.random.default_rng(0).bytes(4096),
        "an HTML page": b"<!DOCTYPE html><html><body>Sign in to continue</body></html>",
        "an optimal-transport checkpoint": _official_bytes(_seeded("outdoor_ot"), lightning=True),
        "another model size": _official_bytes(small, lightning=False),
        "NaN weights": _official_bytes(nan_model, lightning=False),
    }


BAD_REASONS = {
    "random bytes": "not a PyTorch checkpoint",
    "an HTML page": "not a PyTorch checkpoint",
    "an optimal-transport checkpoint": "optimal-transport (OT) checkpoint",
    "another model size": "shape mismatch",
    "NaN weights": "non-finite (NaN or inf) weights in backbone.conv1.weight (1 of",
}


def test_corrupt_or_wrong_files_are_refused_and_removed(
    serve: type[WeightsServer], outdoor: tuple[LoFTR, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, body = outdoor
    for what, bad in _bad_files().items():
        server = serve({OUTDOOR.file: bad})
        monkeypatch.setenv(pretrained.ENV_MIRROR, server.url)
        with pytest.raises(WeightsUnavailableError) as caught:
            pretrained.fetch_pretrained("outdoor")
        message = str(caught.value)
        assert "\n" not in message, what
        assert "served a file that is not loftr_outdoor.ckpt" in message, (what, message)
        assert BAD_REASONS[what] in message and "it was deleted" in message, (what, message)
        assert str(_cache() / OUTDOOR.file) in message  # where a manual copy goes
        assert list(_cache().iterdir()) == [], what  # neither the file nor a partial one
    # a wrong file from the first mirror, the right one from the next
    good = serve({OUTDOOR.file: body})
    monkeypatch.setattr(pretrained, "DEFAULT_MIRRORS", (good.url,))
    assert pretrained.fetch_pretrained("outdoor").read_bytes() == body


def test_the_sha256_is_checked_where_one_is_published(
    serve: type[WeightsServer], outdoor: tuple[LoFTR, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, body = outdoor
    server = serve({OUTDOOR.file: body})
    monkeypatch.setenv(pretrained.ENV_MIRROR, server.url)
    digest = hashlib.sha256(body).hexdigest()
    wrong = replace(OUTDOOR, sha256="0" * 64)
    monkeypatch.setattr(pretrained, "PRETRAINED", {"outdoor": wrong})
    with pytest.raises(WeightsUnavailableError, match=f"its sha256 is {digest}, expected 0000"):
        pretrained.fetch_pretrained("outdoor")
    assert list(_cache().iterdir()) == []
    monkeypatch.setattr(pretrained, "PRETRAINED", {"outdoor": replace(OUTDOOR, sha256=digest)})
    assert pretrained.fetch_pretrained("outdoor").read_bytes() == body


def test_a_truncated_transfer_is_not_kept(
    serve: type[WeightsServer], outdoor: tuple[LoFTR, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, body = outdoor
    server = serve({OUTDOOR.file: body}, mode="truncate")  # closes after half the bytes
    monkeypatch.setenv(pretrained.ENV_MIRROR, server.url)
    with pytest.raises(WeightsUnavailableError, match="could not download pretrained weights"):
        pretrained.fetch_pretrained("outdoor")
    assert list(_cache().iterdir()) == []
    # the transfer itself was seen to be short (pooch/requests), before any content check
    with pytest.raises(WeightsUnavailableError, match=r"ChunkedEncodingError: .*IncompleteRead"):
        pretrained.fetch_pretrained("outdoor")


def test_an_interrupted_download_leaves_no_file_and_is_cleaned_up(
    serve: type[WeightsServer], outdoor: tuple[LoFTR, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, body = outdoor
    stalled = serve({OUTDOOR.file: body}, mode="stall")  # sends half, then waits
    home = os.environ[pretrained.ENV_HOME]
    code = textwrap.dedent(
        f"""
        from loftr_core.api import pretrained
        pretrained.fetch_pretrained("outdoor", mirrors=[{stalled.url!r}], progress=False)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "LOFTR_HOME": home})
    cache = _cache()
    deadline = time.monotonic() + 60
    partials: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        partials = (
            [p for p in cache.glob("*.partial") if p.stat().st_size > 0] if cache.is_dir() else []
        )
        if partials:
            break
        time.sleep(0.05)
    assert partials, "the download never started"
    proc.send_signal(signal.SIGKILL)  # killed mid-transfer
    proc.wait(30)
    stalled.release.set()
    assert not (cache / OUTDOOR.file).exists()  # nothing under the final name
    assert [p.name.startswith(f".{OUTDOOR.file}.") for p in cache.iterdir()] == [True]
    good = serve({OUTDOOR.file: body})
    monkeypatch.setenv(pretrained.ENV_MIRROR, good.url)
    # a partial that is still young may belong to a live download (another host, container or
    # pid namespace): it is kept; once it has stopped growing for long enough it is removed
    young = pretrained.fetch_pretrained("outdoor", cache=cache.parent)
    assert young.read_bytes() == body and len(list(cache.glob("*.partial"))) == 1
    young.unlink()
    old = time.time() - (2 * pretrained.DOWNLOAD_TIMEOUT_S + 61)
    for partial in cache.glob("*.partial"):
        os.utime(partial, (old, old))
    assert pretrained.fetch_pretrained("outdoor").read_bytes() == body
    assert sorted(p.name for p in cache.iterdir()) == [OUTDOOR.file]  # the stale partial is gone


def test_offline_with_an_empty_cache_says_where_a_copy_goes(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    shipped_mirrors: tuple[str, ...],
) -> None:
    assert shipped_mirrors == (
        "https://huggingface.co/kornia/loftr/resolve/main",
        "https://cmp.felk.cvut.cz/~mishkdmy/models",
    )
    monkeypatch.setattr(pretrained, "DEFAULT_MIRRORS", shipped_mirrors)
    monkeypatch.setenv(pretrained.ENV_OFFLINE, "1")
    target = _cache() / OUTDOOR.file
    with pytest.raises(WeightsUnavailableError) as caught:
        Matcher.from_pretrained("outdoor")
    message = str(caught.value)
    assert "\n" not in message and "LOFTR_OFFLINE=1" in message
    for needle in (
        "loftr_outdoor.ckpt",
        "https://huggingface.co/kornia/loftr/resolve/main/loftr_outdoor.ckpt",
        "https://cmp.felk.cvut.cz/~mishkdmy/models/loftr_outdoor.ckpt",
        f"put it at {target}",
    ):
        assert needle in message, needle
    assert not target.parent.exists()  # nothing was created
    # the command (default --weights outdoor) ends with the same one line, exit 2
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), _images()[0])
    assert cli.main([str(image), str(image)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == f"loftr-match: error: {message}"


def test_loftr_match_defaults_to_the_outdoor_weights(
    serve: type[WeightsServer],
    outdoor: tuple[LoFTR, bytes],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    _, body = outdoor
    server = serve({OUTDOOR.file: body})
    monkeypatch.setenv(pretrained.ENV_MIRROR, server.url)
    image0, image1 = _images()
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path, image in zip(paths, (image0, image1), strict=True):
        cv2.imwrite(str(path), image)
    npz = tmp_path / "m.npz"
    assert cli.main([*map(str, paths), "--thr", "0", "--save", str(npz)]) == 0, capsys.readouterr()
    reference = Matcher(_seeded("outdoor_ds"), threshold=0.0).match(image0, image1)
    np.testing.assert_array_equal(np.load(npz)["keypoints0"], reference.keypoints0)
    assert capsys.readouterr().out.splitlines()[0] == f"matches: {len(reference)}"
    # by name again (cached now); a name with another preset is refused in one line
    assert cli.main([*map(str, paths), "--weights", "outdoor", "--thr", "0"]) == 0
    capsys.readouterr()
    assert cli.main([*map(str, paths), "--weights", "outdoor", "--preset", "indoor_ds"]) == 2
    err = capsys.readouterr().err
    assert "weights 'outdoor' use preset 'outdoor_ds', not 'indoor_ds'" in err
    # loftr-convert takes a name too: the native file gives the same matches
    native = tmp_path / "outdoor.safetensors"
    assert convert.main(["outdoor", str(native)]) == 0
    again = Matcher.from_checkpoint(native, threshold=0.0).match(image0, image1)
    np.testing.assert_array_equal(again.keypoints1, reference.keypoints1)
    assert server.requests[OUTDOOR.file] == 1


def test_loftr_export_takes_a_name(
    serve: type[WeightsServer],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """``loftr-export --weights indoor_new``: downloaded once, exported with its own preset
    (fixed positional encoding, no border removal), checked in onnxruntime."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    import json

    from loftr_core.cli import export

    entry = pretrained.PRETRAINED["indoor_new"]
    server = serve({entry.file: _official_bytes(_seeded("indoor_ds_new", 5), lightning=True)})
    monkeypatch.setenv(pretrained.ENV_MIRROR, server.url)
    out = tmp_path / "indoor.onnx"
    argv = [str(out), "--weights", "indoor_new", "--size", "160x120", "--thr", "0"]
    assert export.main([*argv, "--max-matches", "64"]) == 0, capsys.readouterr().err
    assert "the same image-0 cells" in capsys.readouterr().out
    meta = ort.InferenceSession(str(out)).get_modelmeta().custom_metadata_map
    config = LoFTRConfig.from_dict(json.loads(meta["loftr.config"]))
    assert config == PRESETS["indoor_ds_new"]() and meta["loftr.weights"] == "indoor_new"
    assert server.requests[entry.file] == 1
    assert export.main([*argv, "--preset", "outdoor_ds"]) == 2  # a name keeps its preset
    assert "use preset 'indoor_ds_new'" in capsys.readouterr().err


def test_cache_folder_problems_are_one_line(
    outdoor: tuple[LoFTR, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(pretrained.ENV_OFFLINE)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(pretrained.ENV_HOME, str(blocker / "cache"))
    monkeypatch.setenv(pretrained.ENV_MIRROR, _dead_url())
    with pytest.raises(
        WeightsUnavailableError, match=r"cannot write the weights cache .*set LOFTR_HOME"
    ):
        pretrained.fetch_pretrained("outdoor")
    with pytest.raises(
        CheckpointError,
        match="no pretrained weights called 'outdoors'; available: outdoor, indoor, indoor_new",
    ):
        Matcher.from_pretrained("outdoors")
    # a damaged cached copy: the error says to delete it
    monkeypatch.setenv(pretrained.ENV_HOME, str(tmp_path / "home"))
    cached = _cache() / OUTDOOR.file
    cached.parent.mkdir(parents=True)
    cached.write_bytes(outdoor[1][:1000])
    with pytest.raises(CheckpointError, match=r"cached weights .* are damaged .*delete the file"):
        Matcher.from_pretrained("outdoor")


@pytest.mark.skipif(sys.platform != "linux", reason="the default cache folder on Linux")
def test_default_cache_folder_follows_the_platform(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(pretrained.ENV_HOME)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert pretrained.cache_dir() == tmp_path / "loftr"
    monkeypatch.setenv(pretrained.ENV_HOME, "~/somewhere")
    assert pretrained.cache_dir() == Path.home() / "somewhere"


def test_a_bare_name_is_the_name_even_next_to_a_file_of_that_name(
    serve: type[WeightsServer],
    outdoor: tuple[LoFTR, bytes],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _, body = outdoor
    server = serve({OUTDOOR.file: body})
    monkeypatch.setenv(pretrained.ENV_MIRROR, server.url)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outdoor").write_bytes(b"a file that happens to be called outdoor")
    path, preset = pretrained.resolve_weights("outdoor")
    assert path == _cache() / OUTDOOR.file and preset == "outdoor_ds"
    assert path.read_bytes() == body
    assert pretrained.resolve_weights("./outdoor") == (Path("outdoor"), None)
    assert pretrained.resolve_weights(Path("outdoor"), "indoor_ds") == (
        Path("outdoor"),
        "indoor_ds",
    )
    # a wrong preset for a name is refused before anything is downloaded
    (_cache() / OUTDOOR.file).unlink()
    with pytest.raises(CheckpointError, match="use preset 'outdoor_ds', not 'indoor_ds'"):
        pretrained.resolve_weights("outdoor", "indoor_ds")
    assert server.requests[OUTDOOR.file] == 1
