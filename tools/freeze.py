"""Print `name==version` for every distribution pip installed into this interpreter's prefix.

Unlike `pip freeze`, this skips the egg-info metadata that the ros-* wheels carry inside them
(e.g. `action_msgs` within `ros-action-msgs`): those are not installable distributions.
The editable x23d_ros itself is left out; pip is pinned too (the Makefile installs it first).
"""

from __future__ import annotations

from importlib.metadata import distributions


def main() -> None:
    pins = set()
    for dist in distributions():
        if (dist.read_text("INSTALLER") or "").strip() != "pip":
            continue
        name = dist.metadata["Name"]
        if name.lower().replace("_", "-") == "x23d-ros":
            continue
        pins.add(f"{name}=={dist.version}")
    print("\n".join(sorted(pins, key=str.lower)))


if __name__ == "__main__":
    main()
