"""`x23d`: the command-line tools of the ROS-agnostic core (simulate, train, evaluate, ...).

Each sub-command lives with the module that does the work and registers itself here.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys

import numpy as np
import torch

from x23d_ros import __version__


def _cmd_info(args: argparse.Namespace) -> int:
    """Print versions and the compute device, as JSON: the first thing to attach to a bug report."""
    info = {
        "x23d_ros": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
    }
    print(json.dumps(info, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="x23d", description=__doc__)
    parser.add_argument("--version", action="version", version=f"x23d_ros {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="versions and compute device as JSON")
    info.set_defaults(func=_cmd_info)

    from x23d_ros.data import simulate

    sim = sub.add_parser("simulate", help="paired synthetic/realistic shots → HDF5 shards")
    simulate.add_arguments(sim)
    sim.set_defaults(func=simulate.run)

    from x23d_ros import train

    tr = sub.add_parser("train", help="train the X23D network (resumable)")
    train.add_arguments(tr)
    tr.set_defaults(func=train.run)
    ex = sub.add_parser("export", help="bundle a coarse and a fine run into one weights file")
    train.add_export_arguments(ex)
    ex.set_defaults(func=train.run_export)

    from x23d_ros import evaluate

    ev = sub.add_parser("evaluate", help="accuracy of weights on shards or on a CT")
    evaluate.add_arguments(ev)
    ev.set_defaults(func=evaluate.run)

    from x23d_ros.train import style

    st = sub.add_parser(
        "style", help="train the fluoroscopy → synthetic style transfer on paired shards"
    )
    style.add_arguments(st)
    st.set_defaults(func=style.run)

    from x23d_ros.train import adapt

    ad = sub.add_parser(
        "adapt", help="transfer learning: fine-tune weights on fluoroscopy-domain shards"
    )
    adapt.add_arguments(ad)
    ad.set_defaults(func=adapt.run)

    from x23d_ros.train import orientation

    orient = sub.add_parser(
        "orientation", help="train the network that reads the patient's axes from the shots"
    )
    orientation.add_arguments(orient)
    orient.set_defaults(func=orientation.run)

    from x23d_ros import calibrate

    ca = sub.add_parser("calibrate", help="fit where the fine grids go (on training data)")
    calibrate.add_arguments(ca)
    ca.set_defaults(func=calibrate.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
