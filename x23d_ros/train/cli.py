"""`x23d train`'s command line: a TrainConfig from a JSON file and flags."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from x23d_ros.train.config import STAGES, TrainConfig, default_net
from x23d_ros.train.loop import train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="folder of training shards")
    parser.add_argument(
        "--out", required=True, help="run folder (continues if it has a checkpoint)"
    )
    parser.add_argument("--val", help="folder of validation shards")
    parser.add_argument("--config", type=Path, help="JSON TrainConfig overriding the defaults")
    parser.add_argument("--steps", type=int, help="total steps")
    parser.add_argument("--domain", choices=("synthetic", "realistic"))
    parser.add_argument("--stage", choices=STAGES, help="which network to train")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's TrainConfig: the --config file's, with --data, --out and (when given) --val,
    --steps, --domain from the command line; a config file's `val` stands when --val is not
    given (before, it was silently dropped and the run went without validation)."""
    base = {"data": args.data, "out": args.out}
    if args.val is not None or not args.config:
        base["val"] = args.val
    if args.config:
        cfg = TrainConfig.from_json(json.dumps({**json.loads(args.config.read_text()), **base}))
    else:
        stage = args.stage or "coarse"
        cfg = TrainConfig(**base, stage=stage, net=default_net(stage))
    if args.steps:
        cfg.steps = args.steps
    if args.domain:
        cfg.domain = args.domain
    if args.stage and args.stage != cfg.stage:
        raise SystemExit(f"--stage {args.stage} contradicts the config's stage {cfg.stage!r}")
    return cfg


def run(args: argparse.Namespace) -> int:
    train(config_from_args(args))
    return 0
