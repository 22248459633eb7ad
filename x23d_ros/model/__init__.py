"""The X23D network: 2D encoder per view, unprojection through each view's P, view fusion,
3D decoder to occupancy (Jecklin et al., J. Imaging 2022)."""
