"""X-ray image formation: one ray-cast of material line integrals per shot, two domains.

- `raycast`: cone-beam line integrals of a multi-channel volume through P (torch, batched).
- `materials`: HU → material densities, attenuation tables, the tube spectrum.
- `synthetic`: the bone-only DRR that X23D trains on.
- `realistic`: fluoroscopy physics applied to the same line integrals.
Both domains come from one ray-cast, so they agree geometrically pixel for pixel.
"""
