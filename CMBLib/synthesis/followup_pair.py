"""Baseline / follow-up pairs with a known head motion, for tests and `benchmarks/bench_compare.py`.

A head motion is a rigid map of world space, a 4x4 matrix on homogeneous RAS mm
(`rigid_motion`).  `move_volume` applies it to a Volume by changing only its geometry
(origin and direction), so the voxels are untouched and the image sits where the moved
head would be.  A follow-up acquired after the motion M sees the point x of the baseline
head at M x: the true follow-up -> baseline map is inv(M).
"""
import numpy as np

from ..geometry import Volume


def rotation_matrix(angles_deg) -> np.ndarray:
    """3x3 rotation about R, A, then S (degrees), as Rz @ Ry @ Rx."""
    a, b, c = np.deg2rad(np.asarray(angles_deg, float))
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rigid_motion(angles_deg, translation_mm, centre_ras=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 map x -> R (x - c) + c + t on RAS mm: a turn of the head about `centre_ras`
    (e.g. the brain's centre) by `angles_deg` (about R, A, S), then a shift `translation_mm`."""
    r = rotation_matrix(angles_deg)
    c = np.asarray(centre_ras, float)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c - r @ c + np.asarray(translation_mm, float)
    return m


def move_volume(volume: Volume, motion: np.ndarray) -> Volume:
    """`volume` moved by `motion` (4x4 on RAS mm): same voxels, new origin and direction."""
    m = np.asarray(motion, float)
    origin = m[:3, :3] @ np.asarray(volume.origin) + m[:3, 3]
    return Volume(volume.array, volume.spacing, tuple(origin), m[:3, :3] @ volume.direction)


def apply(matrix: np.ndarray, points_ras) -> np.ndarray:
    """(N, 3) RAS mm mapped by a 4x4 matrix."""
    p = np.atleast_2d(np.asarray(points_ras, float)).reshape(-1, 3)
    m = np.asarray(matrix, float)
    return p @ m[:3, :3].T + m[:3, 3]
