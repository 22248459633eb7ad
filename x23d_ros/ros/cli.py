"""`x23d-ros`: the ROS-side tools — launch without `ros2 launch`, transport check, demo."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rclpy.duration import Duration

from x23d_ros import __version__
from x23d_ros.ros import bringup
from x23d_ros.ros.transport_check import image_roundtrip

_PIXEL_TYPES = {"mono8": np.uint8, "mono16": np.uint16, "32FC1": np.float32}


def _test_image(size: int, encoding: str, seed: int = 0) -> np.ndarray:
    """Random pixels over the whole range of the type: any corrupted byte shows."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(_PIXEL_TYPES[encoding])
    if dtype.kind == "f":
        return rng.standard_normal((size, size), dtype=np.float32)
    return rng.integers(0, np.iinfo(dtype).max, (size, size), dtype=dtype, endpoint=True)


def _check_transport(size: int, encoding: str) -> bool:
    image = _test_image(size, encoding)
    with tempfile.TemporaryDirectory(prefix="x23d_transport_") as tmp:
        result = image_roundtrip(image, Path(tmp))
    if result.intact:
        print(
            f"ROS 2 transport OK: a {size}x{size} {encoding} image ({image.nbytes / 1e6:.1f} MB) "
            f"crossed DDS between two processes intact in {result.seconds:.1f} s "
            "(process start and discovery included)."
        )
    else:
        print("ROS 2 transport FAILED: the image did not arrive intact.", file=sys.stderr)
        print(result.log, file=sys.stderr)
    return result.intact


def _cmd_check_transport(args: argparse.Namespace) -> int:
    return 0 if _check_transport(args.size, args.encoding) else 1


def _cmd_launch(args: argparse.Namespace) -> int:
    """Start bringup as `ros2 launch` would: with the installed config/reconstruct.yaml unless
    a --params-file is given; further --ros-args (e.g. -p weights:=my.pt) override it."""
    ros_args = list(args.ros_args)
    if "--params-file" not in ros_args:
        from ament_index_python.packages import get_package_share_directory

        config = Path(get_package_share_directory("x23d_ros")) / "config" / "reconstruct.yaml"
        ros_args = ["--ros-args", "--params-file", str(config), *ros_args]
    return bringup.main(ros_args)


def _cmd_sim_carm(args: argparse.Namespace) -> int:
    from x23d_ros.ros import sim_carm

    return sim_carm.main(args.ros_args)


def _cmd_record(args: argparse.Namespace) -> int:
    from x23d_ros.ros.bags import record
    from x23d_ros.ros.sim_carm import load_case

    item = load_case(
        str(args.shards or ""),
        args.case,
        args.seed,
        args.views,
        args.domain,
        distortion=not args.no_distortion,
    )
    record(args.out, item, args.views, args.domain, args.storage, args.period_s)
    print(f"{args.views} shots recorded in {args.out}")
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    import rclpy

    from x23d_ros.ros.bags import DEMO_BAG, replay

    bag = DEMO_BAG if str(args.bag) == "demo" else args.bag
    rclpy.init()
    node = rclpy.create_node("x23d_replay")
    try:
        count = replay(node, bag, args.rate, args.wait_s)
        for publisher in node.publishers:
            publisher.wait_for_all_acked(Duration(seconds=10))
    except TimeoutError as error:
        print(f"replay: {error}", file=sys.stderr)
        return 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    print(f"replayed {count} messages from {bag}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    # The data engine pulls in torch: imported here, so the other commands start fast.
    from x23d_ros.data.preview import contact_sheet
    from x23d_ros.data.simulate import SimulateConfig, simulate

    print(f"x23d_ros {__version__} demo")
    ok = _check_transport(1024, "mono16")
    out = Path(args.out)
    # The demo renders its case anew: shards left by an earlier version would be refused.
    shutil.rmtree(out / "shards", ignore_errors=True)
    config = SimulateConfig(out=out / "shards", cases=1, views=4, seed=args.seed, cases_per_shard=1)
    start = time.perf_counter()
    shard = simulate(config)[0]
    sheet = contact_sheet(shard, out / "contact_sheet.png")
    print(
        f"Data engine: a procedural lumbar spine and 4 C-arm shots, synthetic and realistic, "
        f"in {time.perf_counter() - start:.0f} s: {shard} and the contact sheet {sheet}."
    )
    summary = _demo_ros(out)
    return 0 if ok and summary else 1


def _demo_ros(out: Path) -> dict:
    """The reconstruction process fed by the shipped bag, received as a planner would."""
    from x23d_ros.ros import demo

    start = time.perf_counter()
    try:
        summary = demo.run(out)
    except (RuntimeError, TimeoutError) as error:
        print(f"ROS 2 reconstruction FAILED: {error}", file=sys.stderr)
        return {}
    stages = ", ".join(f"{k} {v:.0f}" for k, v in summary["stages_ms"].items())
    print(
        f"ROS 2 reconstruction: bringup (carm_listener → reconstructor → spine_publisher) fed by "
        f"the demo bag (3 shots); the spine arrived {summary['latency_last_shot_to_cloud_ms']:.0f} "
        f"ms after the last shot on {summary['device']} (stages, ms: {stages}); "
        f"{time.perf_counter() - start:.0f} s in all, process start included."
    )
    for name, row in summary["levels"].items():
        print(
            f"  {name}: mean surface distance to ground truth {row['surface_distance_mm']:.1f} mm"
        )
    if summary["missing"]:
        print(f"  not reconstructed: {', '.join(summary['missing'])}")
    view = summary["planner_view"]
    print(
        f"  a planner joining late (MoveIt QoS, own process) received collision objects "
        f"{', '.join(view['collision_objects'])} and /tf_static {'; '.join(view['tf_static'])}"
    )
    record = view["session"]
    print(
        f"  and the session record: reconstruction {record['reconstruction']}, levels "
        f"{record['levels']}, confirmed by a person: {record['levels_confirmed']} "
        "(/x23d/confirm_levels records the surgeon's count)"
    )
    fluoro = summary.get("fluoroscopy")
    if fluoro and "error" in fluoro:
        print(f"Fluoroscopy replay FAILED: {fluoro['error']}", file=sys.stderr)
    elif fluoro:
        distances = ", ".join(
            f"{name} {row['surface_distance_mm']:.1f}" for name, row in fluoro["levels"].items()
        )
        print(
            f"Fluoroscopy (the same case as a C-arm shows it; {fluoro['adaptation']}): "
            f"the spine arrived {fluoro['latency_last_shot_to_cloud_ms']:.0f} ms after the last "
            f"shot; mean surface distance to ground truth, mm: {distances or 'none'}"
            + (f"; not reconstructed: {', '.join(fluoro['missing'])}" if fluoro["missing"] else "")
        )
    print(
        "Meshes (PLY, STL; metres, patient_ref), points.ply, spine.png, planner_view.json and "
        f"summary.json: {out}/"
    )
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="x23d-ros", description=__doc__)
    parser.add_argument("--version", action="version", version=f"x23d_ros {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check-transport", help="send an image between two processes over DDS")
    check.add_argument("--size", type=int, default=1024, help="image side in pixels")
    check.add_argument("--encoding", choices=sorted(_PIXEL_TYPES), default="mono16")
    check.set_defaults(func=_cmd_check_transport)

    launch = sub.add_parser(
        "launch", help="start the reconstruction process (ros2 launch stand-in)"
    )
    launch.add_argument("ros_args", nargs=argparse.REMAINDER, help="passed on to the nodes")
    launch.set_defaults(func=_cmd_launch)

    sim = sub.add_parser("sim-carm", help="publish simulated posed C-arm shots (driver stand-in)")
    sim.add_argument("ros_args", nargs=argparse.REMAINDER, help="e.g. --ros-args -p seed:=7")
    sim.set_defaults(func=_cmd_sim_carm)

    record = sub.add_parser("record", help="record simulated C-arm shots into a rosbag2 bag")
    record.add_argument("--out", type=Path, required=True, help="bag folder to create")
    record.add_argument("--shards", type=Path, help="take the case from these shards")
    record.add_argument("--case", type=int, default=0, help="case index in --shards")
    record.add_argument("--seed", type=int, default=2026, help="else simulate this seed's case")
    record.add_argument("--views", type=int, default=3)
    record.add_argument("--domain", choices=("synthetic", "realistic"), default="synthetic")
    record.add_argument(
        "--no-distortion",
        action="store_true",
        help="realistic domain: no image-intensifier warp (the bag's CameraInfo always gives "
        "zero distortion coefficients: true only with this flag)",
    )
    record.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    record.add_argument("--period-s", type=float, default=1.0, help="seconds between shots")
    record.set_defaults(func=_cmd_record)

    replay = sub.add_parser("replay", help="publish a bag's C-arm messages with their timing")
    replay.add_argument("bag", type=Path, help="bag folder (or `demo` for the shipped one)")
    replay.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    replay.add_argument("--wait-s", type=float, default=60.0, help="wait for subscribers")
    replay.set_defaults(func=_cmd_replay)

    demo = sub.add_parser("demo", help="the end-to-end demo (make demo)")
    demo.add_argument("--out", default="demo_out", help="folder for what the demo makes")
    demo.add_argument("--seed", type=int, default=2026, help="seed of the simulated case")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
