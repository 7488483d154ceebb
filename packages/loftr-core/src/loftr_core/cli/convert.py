"""``loftr-convert``: turn a checkpoint into the native safetensors format.

The native file holds the weights and the model config (in the safetensors metadata), so it
rebuilds its own model: ``loftr-match --weights OUT.safetensors`` needs no ``--preset``.
The weights are loaded into the model first, so a converted file always fits its stored config.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from loftr_core._version import __version__
from loftr_core.api.checkpoint import convert_checkpoint, read_checkpoint
from loftr_core.api.pretrained import check_preset_for, fetch_pretrained, pretrained_name
from loftr_core.cli.runner import add_shared, check_output, check_readable, new_parser, run
from loftr_core.errors import InputError

__all__ = ["main"]

PROG = "loftr-convert"

EPILOG = """\
example:
  loftr-convert weights/outdoor_ds.ckpt weights/outdoor_ds.safetensors --preset outdoor_ds

The official checkpoints (outdoor_ds.ckpt, outdoor_ot.ckpt, indoor_ds.ckpt, indoor_ds_new.ckpt,
indoor_ot.ckpt) are linked from https://github.com/zju3dv/LoFTR; give the preset of the same
name (without --preset: the stored config, the official file name, else outdoor_ds / outdoor_ot
by the checkpoint's kind). Exit status: 0 on success, 2 on bad input (one line says what to fix),
1 on an internal error.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``loftr-convert``."""
    parser = new_parser(
        PROG,
        "Convert an official LoFTR (.ckpt) or kornia checkpoint into a native .safetensors file "
        "that stores its model config.",
        __version__,
        EPILOG,
    )
    parser.add_argument(
        "input",
        help="official Lightning .ckpt, kornia state dict, loftr-train checkpoint, or a "
        "pretrained name (outdoor, indoor, indoor_new: downloaded on first use)",
    )
    parser.add_argument("output", help="output file, must end in .safetensors")
    add_shared(parser, ["preset"])
    return parser


def _run(args: argparse.Namespace) -> int:
    name = pretrained_name(args.input)
    if name is None:
        source_path, preset = check_readable(Path(args.input), "checkpoint file"), args.preset
    out = check_output(Path(args.output), "output", suffix=".safetensors")
    if name is not None:  # the output is checked before a download
        preset = check_preset_for(name, args.preset)
        source_path = fetch_pretrained(name)
    if out.exists() and out.resolve() == source_path.resolve():
        raise InputError("output and input are the same file; choose another output path")
    source = read_checkpoint(source_path)
    written = convert_checkpoint(source_path, out, preset)
    preset = preset or "from the checkpoint"
    print(
        f"wrote {written} ({len(source.state_dict)} tensors, {source.layout} layout -> native, "
        f"preset {preset})"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``loftr-convert``; returns the exit status (0 ok, 2 bad input, 1 a bug)."""
    return run(build_parser(), _run, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
