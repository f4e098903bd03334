"""The ``otae`` command's parser and its error handling.

Errors a user can fix (bad config, missing or damaged data, corrupted checkpoint, a
diverging run...) are printed as one ``otae: error: ...`` line with exit status 2, not
a traceback; the code raises them as ``ValueError`` / ``OSError`` (``FileNotFoundError``
...), ``ImportError`` (an optional package to install), :class:`~otae.training.CheckpointError` or
:class:`~otae.training.NonFiniteLossError`, with a message naming the culprit. Any other
exception is a bug in otae: one ``otae: internal error: ...`` line, exit status 1.
``OTAE_DEBUG=1`` re-raises either kind with its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import bench, evaluate, export, fid, listing, multiview, sample, train, tune

EXAMPLES = """examples:
  otae train mnist/drae-quick                      # a shipped config, by name
  otae train configs/mnist/drae-paper.yaml training.epochs=10 model.beta=0.2
  otae train runs/drae-quick --resume              # continue an interrupted run
  otae eval runs/drae-quick --checkpoint best
  otae sample runs/drae-quick -n 64 --component 3
  otae bench mnist-quick --seeds 0 --models VAE,"RAE (D)"
  otae multiview --data handwritten --views pix,fou --methods all --seeds 10
  otae list
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``otae`` parser: one subparser per command, in the order of ``otae --help``."""
    parser = argparse.ArgumentParser(
        prog="otae",
        description="Autoencoders regularised by optimal transport.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="one of the commands below; `otae COMMAND --help` lists its options",
    )
    for command in (train, evaluate, sample, export, bench, tune, multiview, listing, fid):
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``otae ARGV`` (default: the command line); the exit status."""
    parser = build_parser()
    # Overrides may come before or after options: collect key=value leftovers.
    args, extra = parser.parse_known_args(argv)
    leftovers = [
        e
        for e in extra
        if e.startswith("-") or "=" not in e or args.command not in ("train", "bench", "tune")
    ]
    if leftovers:
        parser.error(f"unrecognized arguments: {' '.join(leftovers)}")
    if args.command in ("train", "bench", "tune"):
        args.overrides = list(args.overrides) + extra
    commands = {
        "multiview": multiview.run,
        "bench": bench.run,
        "tune": tune.run,
        "train": train.run,
        "eval": evaluate.run,
        "sample": sample.run,
        "list": listing.run,
        "fid-weights": fid.run_weights,
        "fid": fid.run,
        "export": export.run,
        "encode": export.run_encode,
    }
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("otae: interrupted; `otae train RUN_DIR --resume` continues the run", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`otae list | head`): nothing left to say, and saying it
        # would fail again; point stdout at devnull so the interpreter's flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:
        if os.environ.get("OTAE_DEBUG"):
            raise
        if _is_user_error(err):
            print(f"otae: error: {_one_line(_describe(err))}", file=sys.stderr)
            return 2
        print(
            f"otae: internal error: {type(err).__name__}: {_one_line(str(err))} (a bug in otae, "
            "not in your input); rerun with OTAE_DEBUG=1 for the traceback and report it",
            file=sys.stderr,
        )
        return 1


def _is_user_error(err: BaseException) -> bool:
    """Errors that bad input, bad files, a missing optional package or a diverging run
    cause: one line, exit status 2."""
    from ..training import CheckpointError, NonFiniteLossError
    from ..training.distributed import RunStoppedOnAnotherRank

    return isinstance(
        err,
        (
            ValueError,
            OSError,
            ImportError,
            CheckpointError,
            NonFiniteLossError,
            RunStoppedOnAnotherRank,
        ),
    )


def _describe(err: BaseException) -> str:
    # "[Errno 13] Permission denied: 'x'" reads better as "x: permission denied"
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        target = f" -> {err.filename2}" if err.filename2 is not None else ""
        return f"{err.filename}{target}: {err.strerror[0].lower()}{err.strerror[1:]}"
    return str(err) or type(err).__name__


def _one_line(text: str) -> str:
    """The message on one line (some messages from libraries span several)."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())
