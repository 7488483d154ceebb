"""Two CPU processes under torchrun (gloo): disjoint samples, identical replicas, faults."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml


@pytest.mark.slow
def test_two_process_torchrun_training(
    tmp_path: Path, tiny_config: Callable[..., dict[str, Any]], fault_driver: Path
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(n_train=16, n_val=6, tensorboard=True)))
    run, dump = tmp_path / "run", tmp_path / "dump"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1")
    # the faults enter through the trainer's callbacks, installed by the driver script
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
        "--nproc_per_node", "2", str(fault_driver), str(config), f"logging.run_dir={run}",
        "--dump-dir", str(dump),
        "--nan-at", "2:1",  # rank 1 alone gets a NaN loss at iteration 2
        "--no-gt-at", "3:0",  # rank 0 alone has no ground truth at iteration 3
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=170, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    # 2 epochs x (16 pairs / 2 ranks / batch 2) = 8 iterations, one skipped on BOTH ranks
    summary = re.search(
        r"finished: 2 epochs, 8 iterations, 7 optimiser steps \(1 skipped\), last loss ([0-9.]+)",
        out,
    )
    assert summary is not None, out[-4000:]
    assert out.count("finished: 2 epochs") == 1  # the summary is printed once
    assert float(summary.group(1)) > 0
    assert "iteration 2 skipped on all ranks" in out
    assert "Grad strides do not match bucket view strides" not in out  # fixed at its cause

    # every epoch the two ranks saw disjoint halves of the 16 pairs
    per_rank = []
    for rank in (0, 1):
        lines = (run / f"samples_rank{rank}.txt").read_text().split("\n")
        per_rank.append([ln.split() for ln in lines if ln])
    for epoch in ("0", "1"):
        seen = [set(i for ln in rows if ln[1] == epoch for i in ln[2:]) for rows in per_rank]
        assert len(seen[0]) == len(seen[1]) == 8
        assert not seen[0] & seen[1]
        assert seen[0] | seen[1] == {f"procedural:{k}" for k in range(16)}

    # the replicas hold identical weights (and BatchNorm statistics), all finite
    s0 = torch.load(dump / "rank0.pt", weights_only=True)
    s1 = torch.load(dump / "rank1.pt", weights_only=True)
    assert s0.keys() == s1.keys()
    for key in s0:
        assert torch.equal(s0[key], s1[key]), key
        if s0[key].is_floating_point():
            assert torch.isfinite(s0[key]).all(), key
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert len(ckpt["rng"]) == 2 and [s["rank"] for s in ckpt["sampler"]] == [0, 1]
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())


STALL = """
import sys, time
from loftr_train.distributed import DistributedError, all_reduce_any, init_distributed
ctx = init_distributed("cpu", "gloo", timeout_s=3)
if ctx.rank == 1:
    time.sleep(60)  # a stuck rank
    sys.exit(0)
try:
    all_reduce_any(ctx, False)
except DistributedError as exc:
    print("CAUGHT", exc, flush=True)
    sys.exit(3)
"""


@pytest.mark.slow
def test_stalled_collective_times_out_with_a_clear_message(tmp_path: Path) -> None:
    script = tmp_path / "stall.py"
    script.write_text(STALL)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
        "--nproc_per_node", "2", str(script),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "CAUGHT rank 0/2: collective 'all_reduce(any)' failed or timed out" in out, out[-3000:]
    waited = re.search(r"timed out after (\d+) s \(trainer\.dist_timeout_s=3;", out)
    assert waited is not None and 2 <= int(waited.group(1)) <= 30, out[-3000:]  # the real wait
    assert "trainer.dist_timeout_s" in out


def _torchrun(
    args: list[str], timeout: float = 170, limit_file_bytes: int | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        *args,
    ]  # fmt: skip  (args may start with further torchrun flags, e.g. --max-restarts 2)

    def limit() -> None:  # a small "disk": writes past it fail with EFBIG (Python ignores SIGXFSZ)
        import resource

        if limit_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))

    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, preexec_fn=limit
    )


@pytest.mark.slow
def test_node_local_run_folders_stop_every_rank_at_start(
    tmp_path: Path, tiny_config: Callable[..., dict[str, Any]], fault_driver: Path
) -> None:
    """Run folders on per-node disks (simulated: one folder per rank) would resume the ranks from
    different checkpoints; every rank stops at start, naming the fix."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(n_train=8, n_val=2)))
    proc = _torchrun(
        [
            str(fault_driver),
            str(config),
            f"logging.run_dir={tmp_path / 'run'}",
            "--run-dir-per-rank",
        ]
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for rank in (0, 1):  # the ranks' lines can interleave on the shared stderr
        found = re.search(
            rf"fault_driver \[rank {rank}\]: error: rank\(s\) 1 do not see the run folder rank 0 "
            r"writes .*?shared filesystem",
            out,
        )
        assert found is not None, out[-3000:]
    assert not (tmp_path / "run" / "rank0" / "checkpoints" / "last.ckpt").exists()  # no training


@pytest.mark.slow
def test_a_full_disk_stops_every_rank_with_one_line(
    tmp_path: Path, tiny_config: Callable[..., dict[str, Any]]
) -> None:
    """The real ``loftr-train`` under torchrun: a write that fails (file size limit: EFBIG) on
    rank 0 stops both ranks with the same line, no traceback, no hang; the previous checkpoint
    stays loadable."""
    from loftr_train.checkpointing import load_checkpoint

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(n_train=8, n_val=2)))
    run = tmp_path / "run"
    base = ["-m", "loftr_train.cli_train", str(config), f"logging.run_dir={run}"]
    base += ["trainer.val_every_n_epochs=0", "logging.progress_bar=false"]
    first = _torchrun([*base, "trainer.max_steps=2"])
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    full = _torchrun([*base, "trainer.max_steps=4"], limit_file_bytes=len(before) // 4)
    out = full.stdout + full.stderr
    assert full.returncode != 0
    # no traceback from the workers (torchrun itself reports the failed children)
    frames = [ln for ln in out.splitlines() if ln.strip().startswith('File "')]
    assert not [ln for ln in frames if "loftr_" in ln or "/torch/serialization" in ln], out[-3000:]
    line = (
        f"loftr-train: error: cannot write checkpoint {last}: File too large (EFBIG); the previous "
        "checkpoints in"
    )
    assert out.count(line) == 2, out[-3000:]  # one per rank, the same line
    assert "exitcode  : 2" in out  # the usage status (torchrun may SIGTERM the other rank)
    assert last.read_bytes() == before and load_checkpoint(last)["progress"]["step"] == 2
    assert not list((run / "checkpoints").glob("*.tmp"))


@pytest.mark.slow
def test_an_elastic_restart_with_a_late_worker_recovers_bit_identically(
    tmp_path: Path, tiny_config: Callable[..., dict[str, Any]], fault_driver: Path
) -> None:
    """``torchrun --max-restarts 2``: rank 1 SIGKILLed mid-epoch, restarted 3 s late; every
    attempt has its own store keys, so the restart forms a fresh group, resumes from the last
    checkpoint and ends with the weights of an uninterrupted run, bit for bit."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(n_train=8, n_val=2)))
    common = [
        "checkpoint.every_n_steps=1", "trainer.val_every_n_epochs=0", "logging.progress_bar=false",
        "trainer.max_epochs=2",
    ]  # fmt: skip

    def launch(run: Path, dump: Path, *faults: str) -> subprocess.CompletedProcess[str]:
        args = ["--max-restarts", "2", str(fault_driver), str(config), f"logging.run_dir={run}"]
        return _torchrun([*args, *common, "--dump-dir", str(dump), *faults], timeout=240)

    straight = launch(tmp_path / "straight", tmp_path / "d_straight")
    assert straight.returncode == 0, (straight.stdout + straight.stderr)[-3000:]
    faulty = launch(tmp_path / "faulty", tmp_path / "d_faulty", "--kill-after", "3:1",
                    "--late-start", "3:1")  # fmt: skip
    out = faulty.stdout + faulty.stderr
    assert faulty.returncode == 0, out[-3000:]
    assert "resumed from" in out and "iteration 3" in out  # the killed attempt's checkpoint
    for rank in (0, 1):
        a = torch.load(tmp_path / "d_straight" / f"rank{rank}.pt", weights_only=True)
        b = torch.load(tmp_path / "d_faulty" / f"rank{rank}.pt", weights_only=True)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), rank
