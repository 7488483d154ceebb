"""``loftr-train CONFIG [key=value ...]``: train LoFTR, alone or under torchrun.

Examples::

    loftr-train synthetic_homography logging.run_dir=runs/synth
    torchrun --nproc_per_node 4 -m loftr_train.cli_train megadepth_outdoor_ds \\
        data.root=/data/megadepth/train logging.run_dir=runs/outdoor
    loftr-train runs/outdoor/config.yaml --resume runs/outdoor/checkpoints/last.ckpt
    loftr-train synthetic_homography --print-config

``CONFIG`` is a YAML file or the name of a shipped config (``--list-configs``). Overrides are
dotted keys with YAML values. Errors follow the policy of every loftr command
(:mod:`loftr_core.cli.runner`): exit status 0 on success, 2 with one line saying what to fix
(a bad config value, an unknown attention backend, an unwritable run folder, a full disk...), 1
with one line asking for a report on an internal error (``-v`` adds the traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from loftr_core.cli.runner import check_output, check_readable, new_parser, run
from loftr_core.errors import InputError
from loftr_data.errors import LoftrDataError
from loftr_train import __version__
from loftr_train.train_config import builtin_configs, load_config

__all__ = ["main"]

PROG = "loftr-train"


def _parser() -> argparse.ArgumentParser:
    p = new_parser(
        PROG,
        "Train LoFTR (plain DDP; launch with torchrun for several processes).",
        __version__,
    )
    p.add_argument("config", nargs="?", help="YAML config file or shipped config name")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides (YAML values)")
    p.add_argument("--resume", metavar="PATH", help="checkpoint to continue from")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--list-configs", action="store_true", help="list the shipped configs")
    return p


def _run(args: argparse.Namespace) -> int:
    if args.list_configs:
        print("\n".join(builtin_configs()))
        return 0
    if not args.config:
        raise InputError(f"give a CONFIG (a YAML file or one of: {', '.join(builtin_configs())})")
    config = load_config(args.config, args.overrides)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    resume = None if args.resume is None else check_readable(Path(args.resume), "--resume file")
    # before any work: the run folder must be writable (checkpoints, logs, the config)
    check_output(Path(config.logging.run_dir), "logging.run_dir", folder=True)
    from loftr_train.trainer import Trainer

    result = Trainer(config, resume=resume).fit()
    if os.environ.get("RANK", "0") == "0":
        print(result.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``loftr-train``; returns the exit status (0 ok, 2 bad input, 1 a bug)."""
    rank = os.environ.get("RANK", "0")
    code = run(
        _parser(),
        _run,
        argv,
        user_errors=(LoftrDataError,),
        log_level=logging.INFO if rank == "0" else logging.WARNING,
        log_format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    if code != 0 and _process_group_left():
        # After an error the process group is left alive (see trainer.process_group): tearing
        # it down at interpreter exit, with a peer already gone, can abort the process (gloo:
        # SIGABRT) and hide the exit status. The error line is printed; leave without it.
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    return code


def _process_group_left() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
