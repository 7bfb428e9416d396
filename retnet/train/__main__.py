"""python -m retnet.train --config train.json [--max-steps N] [--out-dir DIR]"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from .trainer import TrainConfig, Trainer


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m retnet.train", description="Train a RetNet language model "
                                     "(or, with \"arch\": \"transformer\", the same-size Transformer baseline).")
    parser.add_argument("--config", required=True, help="training config JSON (fields of retnet.train.TrainConfig)")
    parser.add_argument("--max-steps", type=int, help="override max_steps")
    parser.add_argument("--out-dir", help="override out_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = TrainConfig.from_json(args.config)
    overrides = {k: v for k, v in (("max_steps", args.max_steps), ("out_dir", args.out_dir)) if v is not None}
    Trainer(dataclasses.replace(cfg, **overrides)).train()


if __name__ == "__main__":
    main()
