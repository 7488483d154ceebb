"""``loftr-match`` and ``loftr-convert``: outputs, pairs files, and one-line errors (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from loftr_core.api.checkpoint import read_checkpoint, save_native
from loftr_core.api.matcher import Matcher
from loftr_core.cli import convert
from loftr_core.cli import match as cli
from loftr_core.model import LoFTR
from loftr_core.model.config import LoFTRConfig

K0 = "500,500,80,60"
K1 = "500 0 80 0 500 60 0 0 1"


def _tiny() -> LoFTR:
    torch.manual_seed(0)
    return LoFTR(
        LoFTRConfig.outdoor_ds().replace(
            resnetfpn={"initial_dim": 16, "block_dims": (16, 24, 32)},
            coarse={"d_model": 32, "nhead": 4, "layer_names": ("self", "cross")},
            fine={"d_model": 16, "nhead": 2},
        )
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 256, (15, 20), dtype=np.uint8), (160, 120))
    colour = cv2.cvtColor(base, cv2.COLOR_GRAY2BGR)
    paths = {"a": root / "a.png", "b": root / "b.jpg", "w": root / "tiny.safetensors"}
    cv2.imwrite(str(paths["a"]), colour)
    cv2.imwrite(str(paths["b"]), np.roll(colour, 8, axis=1))
    save_native(_tiny(), paths["w"])
    # official Lightning layout of a full outdoor_ds model (random weights)
    torch.manual_seed(1)
    sd = {f"matcher.{k}": v for k, v in LoFTR(LoFTRConfig.outdoor_ds()).state_dict().items()}
    paths["official"] = root / "outdoor_ds.ckpt"
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 7}, paths["official"])
    return paths


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loftr-match: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for action in cli.build_parser()._actions:
        for flag in action.option_strings:
            assert flag in text, flag
    assert "examples:" in text and "loftr-match --pairs pairs.txt" in text
    assert "zju3dv/LoFTR" in text


def test_single_pair_writes_plot_and_matches(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, npz = tmp_path / "m.png", tmp_path / "m.npz"
    code, out, err = _run(
        capsys, files["a"], files["b"], "--weights", files["w"], "--thr", "0", "--out", png,
        "--save", npz, "--K0", K0, "--K1", K1, "--max-matches", "50",
    )  # fmt: skip
    # (50, not 40: OpenCV 5.1.0's RANSAC asserts on this tiny model's 40 best matches, which
    # 4.13 and 5.0 accept; estimate_pose then says so and gives no pose, test_geometry)
    assert code == 0, err
    data = np.load(npz)
    n = len(data["confidence"])
    assert out.splitlines()[0] == f"matches: {n}" and 0 < n <= 50
    assert f"inliers: {int(data['inliers'].sum())}" in out and data["R"].shape == (3, 3)
    # the CLI's matches are the API's matches
    ref = Matcher.from_checkpoint(files["w"], threshold=0.0, max_matches=50).match(
        files["a"], files["b"]
    )
    np.testing.assert_array_equal(data["keypoints0"], ref.keypoints0)
    np.testing.assert_array_equal(data["image0_size"], [120, 160])
    plot = cv2.imread(str(png))
    assert plot.shape == (120, 160 + 10 + 160, 3)


def test_official_checkpoint_directly(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        capsys, files["a"], files["a"], "--weights", files["official"], "--resize", "64"
    )
    assert code == 0, err
    assert out.startswith("matches: ")


def test_pairs_file_with_progress(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs = tmp_path / "pairs.txt"
    k9 = "500 0 80 0 500 60 0 0 1"
    pairs.write_text(
        f"# comment line\n{files['a']} {files['b']} {k9} {k9}\n\n{files['b'].name} {files['a']}\n"
    )
    out_dir = tmp_path / "res"
    code, out, err = _run(
        capsys, "--pairs", pairs, "--image-root", files["a"].parent, "--weights", files["w"],
        "--thr", "0", "--out-dir", out_dir,
    )  # fmt: skip
    assert code == 0, err
    assert "pairs: 2" in out and "poses estimated: " in out
    assert (out_dir / "a_b.npz").is_file() and (out_dir / "b_a.png").is_file()
    assert "pose from" in err or "pose from" in out  # per-pair lines go through tqdm.write
    assert "2/2" in err  # the progress bar


@pytest.mark.parametrize(
    ("kind", "needles"),
    [
        ("missing", ("does not exist",)),
        ("directory", ("is not a file",)),
        ("text", ("not an image",)),
        ("empty", ("empty",)),
        ("truncated", ("truncated JPEG",)),
    ],
)
def test_bad_images(
    kind: str,
    needles: tuple[str, ...],
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = tmp_path / "bad.jpg"
    if kind == "directory":
        bad.mkdir()
    elif kind == "text":
        bad.write_text("hello\n" * 50)
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "truncated":
        data = files["b"].read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    code, _, err = _run(capsys, files["a"], bad, "--weights", files["w"])
    _assert_one_line_error(code, err, str(bad), *needles)


def test_sixteen_bit_and_alpha_pngs_just_work(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = cv2.imread(str(files["a"]))
    deep, alpha = tmp_path / "deep.png", tmp_path / "alpha.png"
    cv2.imwrite(str(deep), img.astype(np.uint16) * 257)
    cv2.imwrite(str(alpha), np.dstack([img, np.full(img.shape[:2], 128, np.uint8)]))
    code, out_png, err = _run(capsys, deep, alpha, "--weights", files["w"], "--thr", "0")
    assert code == 0, err
    code, out_ref, _ = _run(capsys, files["a"], files["a"], "--weights", files["w"], "--thr", "0")
    assert out_png == out_ref  # same pixels -> same matches


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (("--preset", "outdoor_ot"), ("dual-softmax (DS)", "outdoor_ds")),
        (("--K0", "1,2,3", "--K1", K1), ("K0", "4 numbers")),
        (("--K0", K0), ("--K1",)),
        (("--attention", "nonsense"), ("unknown attention backend",)),
        (("--out", "plot.jpg"), (".png",)),
        (("--out-dir", "res"), ("--pairs",)),
        (("--device", "banana"), ("not a valid torch device",)),
        (("--dtype", "fp16"), ("fp16 is not supported on the CPU",)),
    ],
)
def test_bad_options(
    extra: tuple[str, ...],
    needles: tuple[str, ...],
    files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = _run(capsys, files["a"], files["b"], "--weights", files["official"], *extra)
    _assert_one_line_error(code, err, *needles)


def test_bad_weights(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, files["a"], files["b"], "--weights", "outdoors")
    _assert_one_line_error(code, err, "'outdoors'", "no such file", "outdoor, indoor, indoor_new")
    code, _, err = _run(capsys, files["a"], files["b"], "--weights", files["a"])
    _assert_one_line_error(code, err, "not a PyTorch checkpoint")
    code, _, err = _run(capsys, files["a"], files["b"], "--weights", tmp_path / "nope.ckpt")
    _assert_one_line_error(code, err, "does not exist")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_requested_without_cuda(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, files["a"], files["b"], "--weights", files["w"], "--device", "cuda")
    _assert_one_line_error(code, err, "CUDA is not available")


def test_too_small_image(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((20, 30), np.uint8))
    code, _, err = _run(capsys, small, files["a"], "--weights", files["w"])
    _assert_one_line_error(code, err, "30x20 px", "at least 33 px")


def test_converter(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "outdoor_ds.safetensors"
    assert convert.main([str(files["official"]), str(out), "--preset", "outdoor_ds"]) == 0
    assert "lightning layout -> native" in capsys.readouterr().out
    ckpt = read_checkpoint(out)
    assert ckpt.layout == "native" and ckpt.config == LoFTRConfig.outdoor_ds()
    official = torch.load(files["official"], weights_only=True)["state_dict"]
    for key, value in ckpt.state_dict.items():
        assert torch.equal(value, official[f"matcher.{key}"]), key
    assert (
        convert.main([str(files["official"]), str(tmp_path / "x.pt"), "--preset", "outdoor_ds"])
        == 2
    )
    assert (
        convert.main(
            [str(files["official"]), str(tmp_path / "y.safetensors"), "--preset", "indoor_ot"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        "must end in .safetensors" in err and "dual-softmax (DS)" in err and "Traceback" not in err
    )


def test_console_script_exit_code_and_no_traceback(files: dict[str, Path]) -> None:
    script = Path(sys.executable).parent / "loftr-match"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "loftr_core.cli.match"]
    proc = subprocess.run(
        [
            *cmd,
            str(files["a"]),
            str(files["a"].parent / "missing.jpg"),
            "--weights",
            str(files["w"]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"loftr-match: error: image file {str(files['a'].parent / 'missing.jpg')!r} does not exist; check the path"
    ]


def test_shard_pairs_keeps_shared_first_images_together() -> None:
    paths = [Path(f"{c}.png") for c in "abcde"]
    pairs = [cli._Pair(paths[i], paths[j], None, None) for i, j in
             [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3), (3, 4), (4, 0)]]  # fmt: skip
    shards = cli.shard_pairs(pairs, 2)
    assert sorted(id(p) for s in shards for p in s) == sorted(id(p) for p in pairs)  # each once
    for shard in shards:
        assert shard == [p for p in pairs if p in shard]  # input order kept
    owner = {p.image0: r for r, s in enumerate(shards) for p in s}
    assert all(owner[p.image0] == r for r, s in enumerate(shards) for p in s)  # groups intact
    assert sorted(len(s) for s in shards) == [4, 4]  # balanced: a(3)+d/e vs b(2)+c(1)+...
    assert cli.shard_pairs(pairs, 2) == shards  # the same split on every rank
    assert [len(s) for s in cli.shard_pairs(pairs[:1], 3)] == [1, 0, 0]


@pytest.mark.slow
def test_pairs_sharded_over_torchrun_equal_one_process(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """``torchrun --nproc_per_node 2 -m loftr_core.cli.match --pairs ...``: each rank matches its
    share and writes its pairs' files; together they are exactly the single-process output."""
    rng = np.random.default_rng(5)
    names = []
    for k in range(4):
        img = cv2.resize(rng.integers(0, 256, (15, 20), dtype=np.uint8), (160, 120))
        names.append(f"img{k}.png")
        cv2.imwrite(str(tmp_path / names[-1]), img)
    listing = tmp_path / "pairs.txt"
    listing.write_text(
        "".join(f"{names[i]} {names[j]}\n" for i in range(4) for j in range(i + 1, 4))
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    common = ["--pairs", str(listing), "--weights", str(files["w"]), "--thr", "0", "--no-progress"]
    one = subprocess.run(
        [sys.executable, "-m", "loftr_core.cli.match", *common, "--out-dir", str(tmp_path / "one")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "loftr_core.cli.match", *common, "--out-dir", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]
    assert "[rank 0/2] pairs: 3" in two.stdout and "[rank 1/2] pairs: 3" in two.stdout
    single = sorted(p.name for p in (tmp_path / "one").glob("*.npz"))
    merged = sorted(p.name for p in (tmp_path / "two").glob("*.npz"))
    assert len(single) == 6 and merged == single
    for name in single:
        a, b = np.load(tmp_path / "one" / name), np.load(tmp_path / "two" / name)
        assert a.files == b.files
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}:{key}")


def test_a_pair_that_cannot_be_matched_is_reported_and_the_list_goes_on(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_image = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny_image), np.zeros((16, 16), np.uint8))  # below the model's minimum size
    listing = tmp_path / "pairs.txt"
    listing.write_text(
        f"{files['a']} {files['b']}\n{files['a']} {tiny_image}\n{files['b']} {files['a']}\n"
    )
    out_dir = tmp_path / "res"
    code, out, err = _run(
        capsys, "--pairs", listing, "--weights", files["w"], "--thr", "0", "--out-dir", out_dir,
        "--no-progress",
    )  # fmt: skip
    assert code == 2
    assert "pairs: 3, matches per pair: mean" in out and "failures: 1" in out
    assert "a.png tiny.png: failed: image1 of pair 1 is 16x16 px" in out  # with the results
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("loftr-match: error: 1 of 3 pairs could not be matched (a.png tiny.png;")
    )
    assert sorted(p.name for p in out_dir.glob("*.npz")) == ["a_b.npz", "b_a.npz"]


def test_pairs_to_hloc_files_and_pose_estimator_options(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--hloc writes features.h5/matches.h5 named as in the pairs file, whose index pairs give
    back every pair's matches (within the merge grid); --estimator/--ransac-thr/--seed reach the
    pose; bad values are one line."""
    h5py = pytest.importorskip("h5py")
    root = files["a"].parent
    c = tmp_path / "c.png"
    cv2.imwrite(str(c), np.roll(cv2.imread(str(files["a"])), 16, axis=1))
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(f"a.png b.jpg\nb.jpg {c}\na.png {c}\n")
    hloc = tmp_path / "hloc"
    npz = tmp_path / "npz"
    code, out, err = _run(
        capsys, "--pairs", pairs, "--image-root", root, "--weights", files["w"], "--thr", "0",
        "--hloc", hloc, "--merge-grid", "0", "--out-dir", npz, "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert "hloc: " in out and "3 pairs" in out
    names = ["a.png", "b.jpg", str(c)]
    with h5py.File(hloc / "features.h5", "r") as feats, h5py.File(hloc / "matches.h5") as m:
        for line in pairs.read_text().splitlines():
            n0, n1 = line.split()
            saved = np.load(npz / f"{Path(n0).stem}_{Path(n1).stem}.npz")
            k0, k1 = feats[n0]["keypoints"][()], feats[n1]["keypoints"][()]
            np.testing.assert_array_equal(feats[n0]["image_size"][()], [160, 120])
            grp = m[n0.replace("/", "-")][n1.replace("/", "-")]
            m0 = grp["matches0"][()]
            idx = np.where(m0 >= 0)[0]
            # grid 0: every match is exactly one keypoint pair
            got = {(tuple(k0[i]), tuple(k1[m0[i]])) for i in idx}
            want = {
                (tuple(p), tuple(q))
                for p, q in zip(saved["keypoints0"], saved["keypoints1"], strict=True)
            }
            assert len(want) > 0 and got <= want
            assert len(idx) == len({tuple(p) for p in saved["keypoints0"]})
        assert all(n in feats for n in names)  # an absolute path nests from the root
    # the pose options reach the estimator: the threshold changes the inliers
    inliers = []
    for thr in ("0.1", "50"):
        code, out, err = _run(
            capsys, files["a"], files["b"], "--weights", files["w"], "--thr", "0", "--K0", K0,
            "--K1", K1, "--estimator", "opencv", "--ransac-thr", thr, "--seed", "5",
        )  # fmt: skip
        assert code == 0, err
        inliers.append(int(out.split("inliers: ")[1].split()[0]))
    assert inliers[0] < inliers[1], inliers
    code, _, err = _run(capsys, files["a"], files["b"], "--ransac-thr", "-1")
    assert code == 2 and "not a positive number" in err
    code, _, err = _run(capsys, files["a"], files["b"], "--hloc", tmp_path / "x")
    _assert_one_line_error(code, err, "--hloc and --colmap work with --pairs")


def test_pairs_to_a_colmap_database(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--colmap writes the database: the images with the pair lines' K where given (COLMAP's
    guess elsewhere), keypoints and matches, then runs the verification; bad uses are one line."""
    pycolmap = pytest.importorskip("pycolmap")
    root = files["a"].parent
    pairs = tmp_path / "pairs.txt"
    k9 = "500 0 80 0 500 60 0 0 1"
    pairs.write_text(f"a.png b.jpg {k9} {k9}\n")
    out = tmp_path / "sfm"
    code, printed, err = _run(
        capsys, "--pairs", pairs, "--image-root", root, "--weights", files["w"], "--thr", "0",
        "--colmap", out, "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert "colmap: " in printed and "cameras from the given K 2" in printed
    with pycolmap.Database.open(out / "database.db") as db:
        images = {im.name: im for im in db.read_all_images()}
        assert sorted(images) == ["a.png", "b.jpg"]
        camera = db.read_camera(images["a.png"].camera_id)
        assert list(camera.params) == [500.0, 500.0, 80.0, 60.0]
        assert db.num_matched_image_pairs() == 1 and db.num_keypoints() > 0
    assert (out / "pairs.txt").read_text() == "a.png b.jpg\n"
    code, _, err = _run(capsys, files["a"], files["b"], "--mapper")
    _assert_one_line_error(code, err, "--colmap")
    absolute = tmp_path / "abs.txt"
    absolute.write_text(f"{files['a']} {files['b']}\n")
    code, _, err = _run(
        capsys, "--pairs", absolute, "--weights", files["w"], "--colmap", out, "--no-progress"
    )
    _assert_one_line_error(code, err, "relative to the image folder")


@pytest.mark.parametrize(
    ("option", "module", "extra"), [("--hloc", "h5py", "hloc"), ("--colmap", "pycolmap", "colmap")]
)
def test_missing_optional_dependency_is_one_line_before_matching(
    option: str,
    module: str,
    extra: str,
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a.png b.jpg\n")
    code, _, err = _run(
        capsys, "--pairs", pairs, "--image-root", files["a"].parent, "--weights", files["w"],
        option, tmp_path / "out", "--no-progress",
    )  # fmt: skip
    _assert_one_line_error(code, err, f"pip install 'loftr-core[{extra}]'")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
