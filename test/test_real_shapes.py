"""The real-shapes generator: real vertebrae, deformed and scaled, in the procedural spine."""

from __future__ import annotations

import hashlib

import pytest

from x23d_ros.anatomy.procedural import generate

# sha256 of hu, labels and affine bytes at 3 mm, computed before real-shapes-1 was added
# (procedural-3 seed 11 is a cut scan range). The procedural generators must not move.
_PROCEDURAL_SHA256 = {
    ("procedural-2", 3): "daf8cb73b0a2c2c87f150359e5a604b2e20e0b16ceff0a147437064a7c09e7c8",
    ("procedural-2", 11): "8df8262d457e8de0b21d9402a93509c476752510466b91c13b3e60630cfb8874",
    ("procedural-3", 3): "92e4b5feff133107fde89354f555088f1483b4f157b0dfbdf0354169dcec7d6d",
    ("procedural-3", 11): "d3936523bae2bd27d2951173facc164ccd449d0ce3bd70fc061ae87d212db16f",
}


@pytest.mark.parametrize(("generator", "seed"), sorted(_PROCEDURAL_SHA256))
def test_procedural_generators_draw_the_same_volumes_as_before(generator, seed):
    a = generate(seed, spacing_mm=3.0, generator=generator)
    digest = hashlib.sha256(a.hu.tobytes() + a.labels.tobytes() + a.affine.tobytes()).hexdigest()
    assert digest == _PROCEDURAL_SHA256[generator, seed]
