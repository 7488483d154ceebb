"""``loftr-train CONFIG [key=value ...]``: train LoFTR, alone or under torchrun.

Examples::

    loftr-train synthetic_homography logging.run_dir=runs/synth
    torchrun --nproc_per_node 4 -m loftr_train.cli_train megadepth_outdoor_ds \\
        data.root=/data/megadepth/train logging.run_dir=runs/outdoor
    loftr-train runs/outdoor/config.yaml --resume runs/outdoor/checkpoints/last.ckpt
    loftr-train synthetic_homography --print-config

``CONFIG`` is a YAML file or the name of a shipped config (``--list-configs``). Overrides are
dotted keys with YAML values. Exit status: 0 on success, 2 on a configuration or checkpoint
error (the message says what to fix), 1 on any other failure.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from loftr_core.errors import LoftrError
from loftr_data.errors import LoftrDataError
from loftr_train.train_config import builtin_configs, load_config

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="loftr-train",
        description="Train LoFTR (plain DDP; launch with torchrun for several processes).",
    )
    p.add_argument("config", nargs="?", help="YAML config file or shipped config name")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides (YAML values)")
    p.add_argument("--resume", metavar="PATH", help="checkpoint to continue from")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--list-configs", action="store_true", help="list the shipped configs")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``loftr-train``; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.list_configs:
        print("\n".join(builtin_configs()))
        return 0
    if not args.config:
        _parser().print_usage(sys.stderr)
        print("loftr-train: error: give a CONFIG (file or shipped name)", file=sys.stderr)
        return 2
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO if rank == "0" else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config, args.overrides)
        if args.print_config:
            print(config.to_yaml(), end="")
            return 0
        from loftr_train.trainer import Trainer

        result = Trainer(config, resume=args.resume).fit()
    except (LoftrError, LoftrDataError) as exc:
        print(f"loftr-train: error: {exc}", file=sys.stderr)
        return 2
    if rank == "0":
        print(result.summary())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
