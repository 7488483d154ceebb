"""``loftr-convert``: turn an official / kornia checkpoint into the native safetensors format.

The native file holds the weights and the model config (in the safetensors metadata), so it
rebuilds its own model: ``loftr-match --weights OUT.safetensors`` needs no ``--preset``.
The weights are loaded into the preset's model first, so a converted file always fits its
stored config.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from loftr_core.errors import InputError, LoftrError

__all__ = ["main"]

PROG = "loftr-convert"

EPILOG = """\
example:
  loftr-convert weights/outdoor_ds.ckpt weights/outdoor_ds.safetensors --preset outdoor_ds

The official checkpoints (outdoor_ds.ckpt, outdoor_ot.ckpt, indoor_ds.ckpt, indoor_ds_new.ckpt,
indoor_ot.ckpt) are linked from https://github.com/zju3dv/LoFTR; give the preset of the same
name. Exit status: 0 on success, 2 on bad input.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``loftr-convert``."""
    from loftr_core import __version__
    from loftr_core.config import PRESETS

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Convert an official LoFTR (.ckpt) or kornia checkpoint into a native "
        ".safetensors file that stores its model config.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", help="official Lightning .ckpt or kornia state dict")
    parser.add_argument("output", help="output file, must end in .safetensors")
    parser.add_argument(
        "--preset",
        required=True,
        choices=sorted(PRESETS),
        help="model configuration of the checkpoint (the official file name without .ckpt)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``loftr-convert``; returns the exit status (0 ok, 2 bad input)."""
    from loftr_core.checkpoint import convert_checkpoint, read_checkpoint

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        out = Path(args.output)
        if out.suffix.lower() != ".safetensors":
            raise InputError(f"output {args.output!r} must end in .safetensors")
        if out.resolve() == Path(args.input).resolve():
            raise InputError("output and input are the same file; choose another output path")
        source = read_checkpoint(args.input)
        written = convert_checkpoint(args.input, out, args.preset)
    except LoftrError as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{PROG}: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 2
    print(
        f"wrote {written} ({len(source.state_dict)} tensors, {source.layout} layout -> native, "
        f"preset {args.preset})"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
