"""python -m training --config train.json [--max-steps N] [--out-dir DIR]"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from .trainer import TrainConfig, Trainer


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training", description="Train a RetNet language model "
                                     "(or, with \"arch\": \"transformer\", the same-size Transformer baseline).")
    parser.add_argument("--config", required=True, help="training config JSON (fields of training.trainer.TrainConfig)")
    parser.add_argument("--max-steps", type=int, help="override max_steps")
    parser.add_argument("--out-dir", help="override out_dir")
    parser.add_argument("--until", type=int, help="stop (and save) at this step; a later run resumes from there, "
                        "possibly with other train_sources: a curriculum on one cosine schedule")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = TrainConfig.from_json(args.config)
    overrides = {k: v for k, v in (("max_steps", args.max_steps), ("out_dir", args.out_dir)) if v is not None}
    Trainer(dataclasses.replace(cfg, **overrides)).train(until=args.until)


if __name__ == "__main__":
    main()
