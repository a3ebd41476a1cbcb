"""An image array together with its place in the world.

Conventions, used everywhere in CMBLib:

* ``Volume.array`` is indexed ``[k, j, i]`` (slice, row, column), as SimpleITK's
  ``GetArrayFromImage`` and Slicer's ``arrayFromVolume`` return it.
* Voxel indices passed to or returned by conversion functions are ``(i, j, k)``
  column-first, as Slicer's IJK and NIfTI's voxel coordinates.
* ``spacing`` is ``(si, sj, sk)`` in mm along i, j, k.
* World coordinates are **RAS in mm** (as NIfTI and Slicer report them).  ``origin``
  and ``direction`` are stored in RAS as well; SimpleITK's LPS is converted on I/O.
"""
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import CMBError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Volume:
    """A 3D array indexed [k, j, i] with spacing (mm), origin (RAS mm) and direction (RAS)."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self):
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)

    # --- geometry -------------------------------------------------------------------
    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        """Size along (i, j, k)."""
        return tuple(int(n) for n in self.array.shape[::-1])

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    @property
    def ijk_to_ras(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous (i, j, k, 1) to RAS mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    @property
    def ras_to_ijk(self) -> np.ndarray:
        return np.linalg.inv(self.ijk_to_ras)

    def voxel_to_ras(self, ijk) -> np.ndarray:
        """(N, 3) or (3,) voxel indices (i, j, k), possibly fractional -> RAS mm."""
        p = np.asarray(ijk, dtype=float)
        return p @ self.ijk_to_ras[:3, :3].T + self.ijk_to_ras[:3, 3]

    def ras_to_voxel(self, ras) -> np.ndarray:
        """(N, 3) or (3,) RAS mm -> fractional voxel indices (i, j, k)."""
        p = np.asarray(ras, dtype=float)
        m = self.ras_to_ijk
        return p @ m[:3, :3].T + m[:3, 3]

    def kji_to_ras(self, kji) -> np.ndarray:
        """Array-order indices (k, j, i) -> RAS mm."""
        return self.voxel_to_ras(np.asarray(kji, dtype=float)[..., ::-1])

    def same_geometry(self, other: "Volume", tol_mm: float = 1e-3) -> bool:
        return not geometry_difference(self, other, tol_mm)

    def with_array(self, array: np.ndarray) -> "Volume":
        """A new Volume on the same grid holding `array` (same shape required)."""
        if array.shape != self.array.shape:
            raise CMBError(f"array shape {array.shape} differs from the volume's {self.array.shape}")
        return Volume(array, self.spacing, self.origin, self.direction.copy())


def geometry_difference(a: Volume, b: Volume, tol_mm: float = 1e-3) -> str:
    """Describe in words how the grids of `a` and `b` differ; '' when they match."""
    if a.array.shape != b.array.shape:
        return f"size {a.shape_ijk} vs {b.shape_ijk} (i, j, k voxels)"
    if not np.allclose(a.spacing, b.spacing, atol=tol_mm):
        return f"spacing {_fmt(a.spacing)} vs {_fmt(b.spacing)} mm"
    if not np.allclose(a.origin, b.origin, atol=max(tol_mm, 1e-3 * max(a.spacing))):
        return f"origin {_fmt(a.origin)} vs {_fmt(b.origin)} mm"
    if not np.allclose(a.direction, b.direction, atol=1e-4):
        return "direction (orientation) differs"
    return ""


def sphere_voxel_count(diameter_mm: float, spacing: Sequence[float]) -> int:
    """Number of voxels of a sphere of `diameter_mm` on a grid of `spacing` (mm)."""
    r = diameter_mm / 2.0
    return int(np.ceil((4.0 / 3.0) * np.pi * r ** 3 / float(np.prod(spacing))))


def equivalent_diameter_mm(volume_mm3: float) -> float:
    """Diameter (mm) of the sphere with the given volume (mm^3)."""
    return float((6.0 * volume_mm3 / np.pi) ** (1.0 / 3.0)) if volume_mm3 > 0 else 0.0


def bombs_size_class(diameter_mm: float) -> str:
    """BOMBS size class from a diameter in mm: '<5mm' or '5-10mm' ('>10mm' beyond)."""
    if diameter_mm < 5.0:
        return "<5mm"
    if diameter_mm <= 10.0:
        return "5-10mm"
    return ">10mm"


def _fmt(v) -> str:
    return "(" + ", ".join(f"{x:.3g}" for x in v) + ")"
