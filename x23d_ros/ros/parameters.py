"""Declare a node's parameters once, each with its description and range."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node


@dataclass(frozen=True)
class Param:
    """One ROS parameter: name, default (which fixes its type), description, optional range."""

    name: str
    default: bool | int | float | str
    description: str
    min: float | None = None
    max: float | None = None


def declare(node: Node, params: tuple[Param, ...]) -> SimpleNamespace:
    """Declare `params` on `node` and return their current values as attributes."""
    values = {}
    for p in params:
        descriptor = ParameterDescriptor(description=p.description)
        if p.min is not None and p.max is not None:
            if isinstance(p.default, int) and not isinstance(p.default, bool):
                descriptor.integer_range = [
                    IntegerRange(from_value=int(p.min), to_value=int(p.max), step=1)
                ]
            elif isinstance(p.default, float):
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(p.min), to_value=float(p.max), step=0.0)
                ]
        values[p.name] = node.declare_parameter(p.name, p.default, descriptor).value
    return SimpleNamespace(**values)
