"""Pictures for the reports (matplotlib, Agg backend; PNG bytes, embedded as base64).

`axial_crop` resamples an axial plane (constant RAS z) through a point, whatever the
acquisition orientation, in **radiological convention**: the patient's right on the
left of the picture, anterior at the top.
"""
import base64
import io
from typing import Optional

import numpy as np

from ..geometry import Volume

CROP_HALF_WIDTH_MM = 20.0
CROP_PIXEL_MM = 0.25


def axial_crop(image: Volume, centre_ras, half_width_mm: float = CROP_HALF_WIDTH_MM,
               pixel_mm: float = CROP_PIXEL_MM) -> np.ndarray:
    """2D array [row, column] of the axial plane through `centre_ras` (RAS mm), linear
    interpolation; row 0 is anterior, column 0 is the patient's right.  NaN outside."""
    from scipy.ndimage import map_coordinates

    cx, cy, cz = (float(v) for v in centre_ras)
    n = int(round(2 * half_width_mm / pixel_mm)) + 1
    offsets = np.linspace(half_width_mm, -half_width_mm, n)
    ys, xs = np.meshgrid(cy + offsets, cx + offsets, indexing="ij")   # rows: A -> P, columns: R -> L
    pts = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, cz)], axis=1)
    ijk = image.ras_to_voxel(pts)
    arr = np.asarray(image.array, dtype=np.float32)
    values = map_coordinates(arr, ijk[:, ::-1].T, order=1, mode="constant", cval=np.nan)
    inside = np.all((ijk > -0.5) & (ijk < np.array(image.shape_ijk) - 0.5), axis=1)
    values[~inside] = np.nan
    return values.reshape(n, n)


def thumbnail_png(image: Volume, centre_ras, diameter_mm: Optional[float] = None, caption: str = "",
                  marked: bool = False, title: str = "", half_width_mm: float = CROP_HALF_WIDTH_MM) -> bytes:
    """PNG of the axial crop around one CMB: a ring around it (radius: half its diameter
    + 2 mm, at least 3 mm), R/L/A/P letters, `title` above and `caption` beneath; the
    ring and caption are orange when `marked` (vessel-like or low confidence)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    crop = axial_crop(image, centre_ras, half_width_mm)
    finite = crop[np.isfinite(crop)]
    lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
    bottom = 0.16 if caption else 0.02
    fig = plt.figure(figsize=(2.2, 2.2 + (0.45 if caption else 0.0) + (0.2 if title else 0.0)), dpi=100)
    ax = fig.add_axes([0.02, bottom, 0.96, 0.98 - bottom - (0.08 if title else 0.0)])
    ax.imshow(np.nan_to_num(crop, nan=lo), cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1,
              extent=(-half_width_mm, half_width_mm, -half_width_mm, half_width_mm), interpolation="bilinear")
    colour = "orange" if marked else "red"
    radius = max(3.0, 0.5 * float(diameter_mm or 0.0) + 2.0)
    ax.add_patch(Circle((0, 0), radius, fill=False, edgecolor=colour, linewidth=1.4))
    for text, xy in (("R", (-0.9, 0)), ("L", (0.9, 0)), ("A", (0, 0.9)), ("P", (0, -0.9))):
        ax.text(xy[0] * half_width_mm, xy[1] * half_width_mm, text, color="yellow", fontsize=7, weight="bold",
                ha="center", va="center", bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0})
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        fig.text(0.5, 0.985, title, ha="center", va="top", fontsize=8, weight="bold")
    if caption:
        fig.text(0.5, 0.085, caption, ha="center", va="center", fontsize=6.5, color="darkorange" if marked else "black",
                 wrap=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def histogram_png(counts, xlabel: str = "CMBs per study", ylabel: str = "studies") -> bytes:
    """PNG histogram of integer counts (one bar per value 0..max)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    counts = [int(c) for c in counts]
    top = max(counts) if counts else 0
    fig, ax = plt.subplots(figsize=(5, 2.6), dpi=100)
    ax.hist(counts, bins=np.arange(-0.5, top + 1.5, 1.0), color="#4a78b0", edgecolor="white")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.yaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
