"""python -m retnet.convert SRC DST: turn a torchscale or fla RetNet checkpoint into one of our model directories.

`add_arguments(parser)`, `convert_from_args(args)` and `summary(report)` are what `retnet-rag convert` runs:
the command is defined once, here.
"""

from __future__ import annotations

import argparse
import sys

from ..checkpoint import CheckpointError
from . import SOURCES

EPILOG = """\
sources:
  fla         a flash-linear-attention (fla-hub) RetNet directory: config.json with model_type "retnet",
              model.safetensors or model.safetensors.index.json (+ tokenizer.json). Such directories also
              load directly with RetNetForCausalLM.from_pretrained; converting stores our own format.
  torchscale  a torchscale RetNetDecoder state dict saved with safetensors (a file, or a directory with
              model.safetensors), plus its RetNetConfig arguments as JSON (torchscale_args.json beside the
              weights, or --torchscale-args). Pickle checkpoints (.pt) are not read: see the error message.
"""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("src", help="the checkpoint to convert (directory or .safetensors file)")
    parser.add_argument("dst", help="the model directory to write (config.json + model.safetensors)")
    parser.add_argument("--source", choices=SOURCES, default="auto", help="checkpoint kind (default: detect)")
    parser.add_argument("--dtype", default=None, help="store weights as float32, bfloat16 or float16 "
                                                      "(default: as in the source)")
    parser.add_argument("--torchscale-args", default=None, metavar="JSON",
                        help="torchscale RetNetConfig arguments (default: torchscale_args.json beside the weights)")
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    return parser


def convert_from_args(args: argparse.Namespace) -> dict:
    """Convert as the parsed arguments say; returns convert_checkpoint's report (raises on bad input)."""
    from . import convert_checkpoint  # looked up at call time, so tests can stand in for it

    return convert_checkpoint(args.src, args.dst, args.source, dtype=args.dtype,
                              torchscale_args=args.torchscale_args, overwrite=args.overwrite)


def summary(report: dict) -> str:
    cfg = report["config"]
    return (f"converted {report['source']} checkpoint {report['src']} -> {report['dst']}: "
            f"{report['num_parameters']:,} parameters ({report['dtype']}), {cfg['num_layers']} layers, "
            f"hidden {cfg['hidden_size']}, {cfg['num_heads']} heads; tokenizer files: "
            f"{', '.join(report['tokenizer_files']) or 'none'}")


def run(args: argparse.Namespace) -> int:
    try:
        report = convert_from_args(args)
    except (CheckpointError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retnet.convert", description=__doc__.splitlines()[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    return run(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
