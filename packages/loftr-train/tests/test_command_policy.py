"""One command-line policy for all four commands: a battery of bad inputs a user can cause.

Each must end with exit status 2 and exactly one line ``<command>: error: ...`` on stderr, no
traceback (the five cases of issue 13 among them); ``--version`` works everywhere; internal
errors are one line asking for a report, with the traceback only under ``-v``.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from loftr_core import LoFTR, LoFTRConfig, save_native
from loftr_core.cli import convert as cli_convert
from loftr_core.cli import export as cli_export
from loftr_core.cli import match as cli_match
from loftr_core.cli.runner import report
from loftr_train import cli_eval, cli_train


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("policy")
    torch.manual_seed(0)
    config = LoFTRConfig.outdoor_ds().replace(
        resnetfpn={"initial_dim": 16, "block_dims": (16, 24, 32)},
        coarse={"d_model": 32, "nhead": 4, "layer_names": ("self", "cross")},
        fine={"d_model": 16, "nhead": 2},
    )
    ckpt = save_native(LoFTR(config), root / "tiny.safetensors")
    image = root / "a.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(image), rng.integers(0, 255, (64, 80), dtype=np.uint8))
    (root / "a_folder").mkdir()
    return {"root": root, "ckpt": ckpt, "image": image, "folder": root / "a_folder"}


def _one_error_line(err: str, prog: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err


def _eval_args(sample_root: Path, ckpt: Path, *extra: str) -> list[str]:
    scene = sample_root / "sample.npz"
    return [str(ckpt), "--data-root", str(sample_root), "--scene-info", str(scene), *extra]


def _match_args(work: dict[str, Path], *extra: str) -> list[str]:
    return [str(work["image"]), str(work["image"]), "--weights", str(work["ckpt"]), *extra]


CASES: list[tuple[str, Callable[[dict[str, Path], Path], list[str]], str]] = [
    # the cases named in issue 13
    ("loftr-eval", lambda w, s: _eval_args(s, w["ckpt"], "--attention", "nope"), "'nope'"),
    (
        "loftr-eval",
        lambda w, s: _eval_args(s, w["ckpt"], "--pair-ids", "0", "--output", "/proc/nope/o.jsonl"),
        "/proc/nope/o.jsonl",
    ),
    ("loftr-convert", lambda w, s: [str(w["ckpt"]), str(w["folder"])], "a_folder"),
    # the shared options, validated alike everywhere
    ("loftr-match", lambda w, s: _match_args(w, "--thr", "1.5"), "1.5"),
    ("loftr-eval", lambda w, s: _eval_args(s, w["ckpt"], "--thr", "1.5"), "1.5"),
    ("loftr-match", lambda w, s: _match_args(w, "--attention", "nope"), "'nope'"),
    ("loftr-match", lambda w, s: _match_args(w, "--device", "cuda:7"), "cuda:7"),
    ("loftr-eval", lambda w, s: _eval_args(s, w["ckpt"], "--device", "tpu"), "tpu"),
    ("loftr-match", lambda w, s: [*_match_args(w)[:3], str(w["root"] / "none.ckpt")], "none.ckpt"),
    (
        "loftr-convert",
        lambda w, s: [str(w["ckpt"]), str(w["root"] / "o.safetensors"), "--preset", "nope"],
        "'nope'",
    ),
    ("loftr-match", lambda w, s: _match_args(w, "--exec-option", "nope=1"), "nope=1"),
    (
        "loftr-match",
        lambda w, s: _match_args(w, "--exec-option", "fine_chunk_matches=0"),
        "fine_chunk_matches=0",
    ),
    # unwritable or misplaced outputs, found before any work
    ("loftr-match", lambda w, s: _match_args(w, "--save", str(w["folder"] / "x.txt")), ".npz"),
    ("loftr-match", lambda w, s: _match_args(w, "--out", "/proc/nope/m.png"), "/proc/nope"),
    (
        "loftr-convert",
        lambda w, s: [str(w["root"] / "missing.ckpt"), str(w["root"] / "o.safetensors")],
        "missing.ckpt",
    ),
    ("loftr-eval", lambda w, s: _eval_args(s, w["root"] / "missing.ckpt"), "missing.ckpt"),
]
"""(command, its arguments, what its one error line must name)"""


MAINS: dict[str, Callable[[Sequence[str]], int]] = {
    "loftr-match": cli_match.main,
    "loftr-convert": cli_convert.main,
    "loftr-export": cli_export.main,
    "loftr-eval": cli_eval.main,
    "loftr-train": cli_train.main,
}


@pytest.mark.parametrize(
    ("prog", "argv", "needle"), CASES, ids=[f"{p}-{i}" for i, (p, _, _) in enumerate(CASES)]
)
def test_bad_input_is_one_line_and_exit_2(
    prog: str,
    argv: Callable[[dict[str, Path], Path], list[str]],
    needle: str,
    work: dict[str, Path],
    shared_data: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = MAINS[prog](argv(work, shared_data / "megadepth_sample"))
    captured = capsys.readouterr()
    assert code == 2, captured.err
    _one_error_line(captured.err, prog)
    assert needle in captured.err  # the line names what was wrong


def test_output_failure_after_evaluation_keeps_the_results(
    work: dict[str, Path],
    shared_data: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write that fails after the evaluation (checked writable before, full disk after)."""

    real = cli_eval.write_pair_results
    target = work["root"] / "o.jsonl"

    def full_disk(result: object, path: Path) -> Path:
        if Path(path) == target:
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        return real(result, path)  # type: ignore[arg-type]

    monkeypatch.setattr(cli_eval, "write_pair_results", full_disk)
    argv = _eval_args(shared_data / "megadepth_sample", work["ckpt"], "--pair-ids", "0")
    code = cli_eval.main(
        [*argv, "--img-resize", "320", "--no-progress", "--output", str(work["root"] / "o.jsonl")]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert "auc@5" in captured.out  # the table was printed first
    _one_error_line(captured.err, "loftr-eval")
    assert "No space left on device" in captured.err and "kept in" in captured.err
    kept = Path(captured.err.split("kept in ")[1].split()[0])
    assert len(kept.read_text().splitlines()) == 1  # the evaluated pair
    kept.unlink()


@pytest.mark.slow
@pytest.mark.parametrize(
    "override",
    ["model.options.coarse.attention=nope", "logging.run_dir=/proc/nope/run"],
)
def test_train_bad_input_is_one_line_and_exit_2(override: str, tmp_path: Path) -> None:
    """As a user runs it: the console script in a fresh process (torch, process group...)."""
    args = ["synthetic_homography", override, "trainer.device=cpu", "trainer.max_epochs=1"]
    if not override.startswith("logging.run_dir"):
        args.append(f"logging.run_dir={tmp_path / 'run'}")
    proc = subprocess.run(
        [sys.executable, "-m", "loftr_train.cli_train", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "RANK": "0"},
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith("loftr-train: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert "nope" in errors[0]
    assert "available" in errors[0].lower() or "cannot be written" in errors[0]


@pytest.mark.parametrize("prog", sorted(MAINS))
def test_every_command_has_version_verbose_and_quiet(
    prog: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import loftr_core
    import loftr_train

    assert MAINS[prog](["--version"]) == 0
    out = capsys.readouterr().out
    package = loftr_train if prog in ("loftr-train", "loftr-eval") else loftr_core
    assert out.split() == [prog, package.__version__]
    assert MAINS[prog](["--help"]) == 0
    text = capsys.readouterr().out
    assert "-v, --verbose" in text and "-q, --quiet" in text and "--version" in text


def test_internal_errors_ask_for_a_report_with_the_traceback_under_v(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def boom() -> None:
        raise ValueError("an unexpected state")

    for verbose in (False, True):
        try:
            boom()
        except ValueError as exc:
            assert report("loftr-match", exc, verbose=verbose) == 1
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]
        assert last.startswith("loftr-match: internal error: ValueError: an unexpected state")
        assert "report" in last
        assert ("Traceback" in err) is verbose


def test_a_full_disk_inside_torch_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    """torch.save reports ENOSPC as a RuntimeError whose context is the OSError."""
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/last.ckpt")
        except OSError:
            raise RuntimeError(
                "[enforce fail at inline_container.cc:672] . unexpected pos"
            ) from None
    except RuntimeError as exc:
        exc.__context__ = OSError(errno.ENOSPC, "No space left on device", "/runs/x/last.ckpt")
        assert report("loftr-train", exc) == 2
    _one_error_line(capsys.readouterr().err, "loftr-train")


def test_a_broken_plugin_is_one_line_naming_it(work: dict[str, Path], tmp_path: Path) -> None:
    """An installed attention plugin that fails to import: the command says which, in one line."""
    info = tmp_path / "fake_broken-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-broken\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(
        "[loftr_attention.backends]\nfake_broken_ep = fake_broken_plugin\n"
    )
    (tmp_path / "fake_broken_plugin.py").write_text("import no_such_module_xyz\n")
    env = {k: v for k, v in os.environ.items() if k != "LOFTR_ATTENTION_DISABLE_PLUGIN_AUTOLOAD"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    for extra in ([], ["--attention", "full"]):
        proc = subprocess.run(
            [sys.executable, "-m", "loftr_core.cli.match", *_match_args(work, *extra)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert proc.returncode == 2, proc.stderr
        _one_error_line(proc.stderr, "loftr-match")
        assert "fake-broken" in proc.stderr and "no_such_module_xyz" in proc.stderr
