"""One command-line policy for every loftr command (``loftr-match``, ``loftr-convert``,
``loftr-train``, ``loftr-eval`` and any later one).

- Shared options are spelled, documented and validated once here (:func:`add_shared`):
  ``--weights``, ``--preset``, ``--thr``, ``--attention``, ``--device``, ``--dtype``,
  ``--execution`` / ``--exec-option``, plus ``-v/--verbose``, ``-q/--quiet`` and ``--version`` on
  every command (:func:`new_parser`). Bad values fail while parsing, before any work.
- Output paths are checked before long work starts (:func:`check_output`).
- One error policy (:func:`run`): an error the user can cause (a bad value, an unknown backend, an
  unreadable or unwritable path, a full disk, a broken plugin) ends with one line
  ``<command>: error: ...`` and exit status 2; an unexpected internal error prints one line asking
  for a report (exit status 1), with the traceback only under ``-v``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from loftr_attention import available_backends
from loftr_attention.errors import LoftrAttentionError
from loftr_core.api.devices import resolve_device
from loftr_core.api.pretrained import PRETRAINED, pretrained_name
from loftr_core.errors import ConfigError, InputError, LoftrError
from loftr_core.execution import EXECUTION_PRESETS, ExecutionOptions
from loftr_core.execution.options import parse_setting
from loftr_core.model.config import PRESETS, check_thr

__all__ = [
    "EXIT_INTERNAL",
    "EXIT_USAGE",
    "CommandParser",
    "add_shared",
    "check_output",
    "check_readable",
    "execution_options",
    "new_parser",
    "positive_int",
    "report",
    "run",
    "typed",
]

EXIT_USAGE = 2
EXIT_INTERNAL = 1
REPORT_URL = "the loftr issue tracker"
SHARED = ("weights", "preset", "thr", "attention", "device", "dtype", "execution")


class CommandParser(argparse.ArgumentParser):
    """``argparse`` with the house error format: one line ``<prog>: error: ...``, exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def new_parser(
    prog: str, description: str, version: str, epilog: str | None = None
) -> CommandParser:
    """A parser with ``-v/--verbose``, ``-q/--quiet`` and ``--version`` (every command has them)."""
    parser = CommandParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging; tracebacks of internal errors"
    )
    noise.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}")
    return parser


def typed(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` that turns a :class:`LoftrError` into a parse error (one line)."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except (LoftrError, LoftrAttentionError) as exc:
            raise argparse.ArgumentTypeError(_one_line(str(exc))) from None
        except (OSError, RuntimeError) as exc:  # a path too long or unreadable, a CUDA probe
            raise argparse.ArgumentTypeError(f"{text!r}: {_one_line(str(exc))}") from None

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def positive_int(text: str) -> int:
    """An argparse ``type``: an int >= 1 (e.g. ``--resize``, ``--max-matches``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _thr(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a number; give a threshold in [0, 1)") from None
    return check_thr(value, "--thr")


def _attention(name: str) -> str:
    names = available_backends()  # a broken plugin raises its own one-line error here
    if name not in names:
        raise ConfigError(
            f"unknown attention backend {name!r}; available: {', '.join(sorted(names))} "
            "(third-party backends install as plugins, see the loftr-attention README)"
        )
    return name


def _device(text: str) -> str:
    resolve_device(text)
    return text


def _weights(text: str) -> str:
    """A ``--weights`` value: a pretrained name (fetched later, not while parsing) or a file."""
    if pretrained_name(text) is not None:
        return text
    path = Path(text)
    if not path.exists() and "/" not in text and os.sep not in text and not path.suffix:
        raise InputError(
            f"weights {text!r}: no such file and not a name of the official weights "
            f"({', '.join(PRETRAINED)}); check the path or the name"
        )
    check_readable(path, "file")
    return text


def add_shared(parser: argparse.ArgumentParser, names: Iterable[str], **defaults: Any) -> None:
    """Add the shared options ``names`` (from :data:`SHARED`), spelled and validated alike.

    Args:
        parser: the command's parser.
        names: which shared options the command takes.
        defaults: per-command defaults, e.g. ``device="cpu"``.
    """
    names = list(names)
    unknown = sorted(set(names) - set(SHARED))
    if unknown:  # a programming error in a command, not a user error
        raise ValueError(f"unknown shared options {unknown}; known: {SHARED}")
    group = parser.add_argument_group("model and execution (shared by every loftr command)")
    if "weights" in names:
        group.add_argument(
            "--weights",
            metavar="NAME|PATH",
            type=typed(_weights),
            default=defaults.get("weights"),
            help="official weights by name ("
            + ", ".join(PRETRAINED)
            + "; downloaded into $LOFTR_HOME on first use, then reused offline; a bare name is "
            "always the name, write ./outdoor for a file of that name) or a checkpoint file: "
            "official .ckpt, kornia state dict, native .safetensors or a loftr-train checkpoint"
            + (f" (default: {defaults['weights']})" if defaults.get("weights") else ""),
        )
    if "preset" in names:
        group.add_argument(
            "--preset",
            choices=sorted(PRESETS),
            default=defaults.get("preset"),
            help="model configuration (default: stored in the checkpoint, else inferred)",
        )
    if "thr" in names:
        group.add_argument(
            "--thr",
            type=typed(_thr),
            default=defaults.get("thr"),
            metavar="T",
            help="coarse matching confidence threshold in [0, 1) (default: the model's)",
        )
    if "attention" in names:
        group.add_argument(
            "--attention",
            type=typed(_attention),
            default=defaults.get("attention"),
            metavar="NAME",
            help="attention backend from loftr-attention (linear, full, sdpa, flash, "
            "memory_efficient, or a plugin's; default: the model's)",
        )
    if "device" in names:
        group.add_argument(
            "--device",
            type=typed(_device),
            default=defaults.get("device", "auto"),
            help="torch device: auto (CUDA when available), cpu, cuda, cuda:1 ... "
            f"(default {defaults.get('device', 'auto')})",
        )
    if "dtype" in names:
        group.add_argument(
            "--dtype",
            choices=["fp32", "bf16", "fp16"],
            default=defaults.get("dtype", "fp32"),
            help="compute precision under autocast (fp16: CUDA only; default fp32)",
        )
    if "execution" in names:
        group.add_argument(
            "--execution",
            choices=sorted(EXECUTION_PRESETS),
            default="default",
            help="execution preset: default (fast kernels, same matches) or reference (the "
            "original's rounding)",
        )
        group.add_argument(
            "--exec-option",
            action="append",
            default=[],
            type=typed(_setting),
            metavar="NAME=VALUE",
            help="one execution option (repeatable), e.g. fine_chunk_matches=256, "
            "channels_last=false, coarse_dtype=bfloat16; see loftr_core.ExecutionOptions",
        )


def _setting(text: str) -> str:
    ExecutionOptions().replace(**dict([parse_setting(text)]))  # each field validates alone
    return text


def execution_options(args: argparse.Namespace) -> ExecutionOptions:
    """The :class:`ExecutionOptions` of ``--execution`` and ``--exec-option``."""
    return ExecutionOptions.from_preset(args.execution, args.exec_option)


def check_readable(path: Path, what: str = "file") -> Path:
    """``path`` if it is an existing, readable file (``what="file"``) or folder; else InputError."""
    if not path.exists():
        raise InputError(f"{what} {str(path)!r} does not exist; check the path")
    if what == "file" and not path.is_file():
        raise InputError(f"{str(path)!r} is not a file; give a file path")
    if what == "folder" and not path.is_dir():
        raise InputError(f"{str(path)!r} is not a folder; give a folder path")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} {str(path)!r} is not readable (permissions)")
    return path


def check_output(path: Path, what: str, *, folder: bool = False, suffix: str | None = None) -> Path:
    """Check, before any long work, that ``path`` can be written; create its parent folders.

    Args:
        path: the output file (or folder, with ``folder=True``).
        what: how the message names it (e.g. ``"--output"``).
        folder: ``path`` is a folder to write files into.
        suffix: required file suffix (e.g. ``".npz"``).

    Raises:
        InputError: wrong suffix, an existing folder where a file is wanted (or the reverse),
            a parent that cannot be created, or a folder that cannot be written.
    """
    if suffix is not None and path.suffix.lower() != suffix:
        raise InputError(f"{what} {str(path)!r} must end in {suffix}")
    directory = path if folder else path.parent
    if folder and path.exists() and not path.is_dir():
        raise InputError(f"{what} {str(path)!r} exists and is not a folder; choose a folder")
    if not folder and path.is_dir():
        raise InputError(f"{what} {str(path)!r} is a folder; give a file path inside it")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".loftr-write-check-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(
            f"{what} {str(path)!r} cannot be written ({reason}: {exc.filename or directory}); "
            "choose a folder you can write to"
        ) from None
    return path


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` (itself or in its cause/context chain), e.g. a full disk that
    torch reports as ``RuntimeError: [enforce fail at inline_container.cc...]``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and not isinstance(current, LoftrError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def report(
    prog: str,
    exc: BaseException,
    *,
    verbose: bool = False,
    user_errors: Sequence[type[BaseException]] = (),
) -> int:
    """Print the one line for ``exc`` on stderr and return the exit status (2 user, 1 internal)."""
    if isinstance(exc, (LoftrError, LoftrAttentionError, *user_errors)):
        print(f"{prog}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        print(
            f"{prog}: error: out of memory; use smaller images (--resize / --img-resize), a "
            "smaller batch, or execution options with smaller chunks (--exec-option)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    os_error = _os_error(exc)
    if os_error is not None:
        where = f": {os_error.filename}" if os_error.filename else ""
        reason = os_error.strerror or _one_line(str(os_error))
        print(
            f"{prog}: error: {reason}{where} (check the path, permissions and free disk space)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if verbose:
        traceback.print_exception(exc)
    print(
        f"{prog}: internal error: {type(exc).__name__}: {_one_line(str(exc))[:300]}; this is a "
        f"bug, please report it to {REPORT_URL} with the command line"
        + ("" if verbose else " and the traceback that -v prints"),
        file=sys.stderr,
    )
    return EXIT_INTERNAL


def configure_logging(args: argparse.Namespace, default: int, fmt: str) -> None:
    """Logging for a command: ``-v`` debug, ``-q`` warnings, else ``default``."""
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else default
    logging.basicConfig(level=level, format=fmt, force=True)


def run(
    parser: argparse.ArgumentParser,
    handler: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
    *,
    user_errors: Sequence[type[BaseException]] = (),
    log_level: int = logging.WARNING,
    log_format: str = "%(name)s: %(message)s",
) -> int:
    """Parse ``argv``, run ``handler(args)`` under the error policy; return the exit status.

    Args:
        parser: from :func:`new_parser` (bad values exit 2 with one line while parsing).
        handler: the command's work; returns its exit status.
        argv: arguments (default ``sys.argv[1:]``).
        user_errors: further exception types that are the user's to fix (e.g. loftr-data's).
        log_level, log_format: the command's logging without ``-v`` / ``-q``.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a one-line parse error
        return int(stop.code or 0) if not isinstance(stop.code, str) else EXIT_USAGE
    except Exception as exc:  # anything else while parsing still follows the policy
        return report(parser.prog, exc, user_errors=user_errors)
    configure_logging(args, log_level, log_format)
    try:
        return handler(args)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return report(parser.prog, exc, verbose=args.verbose, user_errors=user_errors)
