"""Materials: HU → densities, mass attenuation coefficients, and the X-ray tube's spectrum.

Mass attenuation coefficients μ/ρ (cm²/g) are NIST's (Hubbell & Seltzer, *X-Ray Mass
Attenuation Coefficients*, NIST Standard Reference Database 126), at the energies tabulated there:
- Bone, Cortical (ICRU-44), ρ 1.92 g/cm³, and Tissue, Soft (ICRU-44), ρ 1.06: NIST ComTab
  `bone` and `tissue` (checked against copies of the tables, bone at all energies, soft tissue
  from 40 keV; its 10–30 keV values are recalled, and the filtered beam has few photons there).
- Aluminium (Z = 13), the tube filter: NIST ElemTab `z13` (checked likewise).
- Titanium (Z = 22, implants) and iron (Z = 26, steel instruments): NIST ElemTab `z22`, `z26`,
  as recalled; they were not checked here. Metal is nearly opaque at these energies, so
  small errors in them do not change the image.
Between tabulated energies, μ/ρ is interpolated log–log, as NIST recommends.

HU → density follows DeepDRR (Unberath et al., MICCAI 2018, `conv_hu_to_density`):
ρ = 0.001029·HU + 1.030 below 0 HU and 0.0005886·HU + 1.030 above, in g/cm³.
Each voxel is split into cortical bone and soft tissue by its HU between soft tissue (+50)
and cortical bone (+1500): a two-material decomposition rather than DeepDRR's hard
threshold, so cancellous bone (≈ 160 HU) keeps its modest bone content.

The spectrum is Kramers' law for a tungsten anode, N(E) ∝ (kVp − E)/E photons per keV,
with tungsten's Kα (59.3 keV) and Kβ (67.2 keV) lines above their 69.5 keV edge, hardened by
the aluminium filter. It is a model, not a measured spectrum.
"""

from __future__ import annotations

import numpy as np
import torch

ENERGY_KEV = np.array([10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0])
MU_RHO = {  # cm²/g at ENERGY_KEV
    "bone": np.array([28.51, 9.032, 4.001, 1.331, 0.6655, 0.4242, 0.3148, 0.2229, 0.1855, 0.1480]),
    "soft": np.array(
        [5.379, 1.715, 0.8179, 0.3786, 0.2688, 0.2264, 0.2048, 0.1823, 0.1693, 0.1492]
    ),
    "aluminium": np.array(
        [26.23, 7.955, 3.441, 1.128, 0.5685, 0.3681, 0.2778, 0.2018, 0.1704, 0.1378]
    ),
    "titanium": np.array(
        [110.9, 35.87, 15.85, 4.972, 2.214, 1.213, 0.7661, 0.4052, 0.2721, 0.1649]
    ),
    "iron": np.array([170.6, 57.08, 25.68, 8.176, 3.629, 1.958, 1.205, 0.5952, 0.3717, 0.1964]),
}
DENSITY = {"bone": 1.92, "soft": 1.06, "aluminium": 2.699, "titanium": 4.54, "iron": 7.874}
HU_SOFT, HU_CORTICAL = 50.0, 1500.0
#: Linear attenuation of water at 60 keV (mm⁻¹), NIST: 0.2059 cm²/g × 1 g/cm³.
MU_WATER_PER_MM = 0.02059


def mu_rho(material: str, energy_kev: np.ndarray) -> np.ndarray:
    """μ/ρ (cm²/g) of `material` at `energy_kev`, log–log interpolated."""
    table = MU_RHO[material]
    return np.exp(np.interp(np.log(energy_kev), np.log(ENERGY_KEV), np.log(table)))


def hu_to_density(hu: torch.Tensor) -> torch.Tensor:
    """Mass density (g/cm³) from HU, DeepDRR's piecewise-linear fit."""
    return torch.clamp(torch.minimum(0.001029 * hu + 1.030, 0.0005886 * hu + 1.030), min=0.0)


def decompose(hu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bone and soft-tissue partial densities (g/cm³) of each voxel; they sum to its density."""
    density = hu_to_density(hu)
    bone_fraction = torch.clamp((hu - HU_SOFT) / (HU_CORTICAL - HU_SOFT), 0.0, 1.0)
    bone = bone_fraction * torch.clamp(density, min=DENSITY["bone"])
    soft = (1.0 - bone_fraction) * hu_to_density(torch.clamp(hu, max=HU_SOFT))
    return bone, soft


def spectrum(
    kvp: float, filter_mm_al: float, step_kev: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Energies (keV) and relative photon counts (sum 1) of a filtered tungsten-anode beam."""
    energy = np.arange(15.0, kvp, step_kev) + step_kev / 2
    photons = np.clip(kvp - energy, 0.0, None) / energy
    if kvp > 69.5:  # tungsten K lines, a few percent of the photons above the K edge
        for line_kev, share in ((59.3, 0.04), (67.2, 0.012)):
            photons[np.argmin(np.abs(energy - line_kev))] += (
                share * photons.sum() * (1 - 69.5 / kvp)
            )
    photons = photons * np.exp(
        -mu_rho("aluminium", energy) * DENSITY["aluminium"] * filter_mm_al / 10
    )
    return energy, photons / photons.sum()
