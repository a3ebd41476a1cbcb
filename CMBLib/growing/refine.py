"""Refinement of a grown region: closing, hole filling, keep what holds the scribble.

Thesis section IV.C: closing with two iterations of dilation and erosion, then hole
filling, "yielding a single connected component per CMB".  Arrays are boolean boxes
indexed [k, j, i].
"""
import numpy as np

from . import boxops
from .boxops import bounding_box, components_holding, structure


def refine_region(region: np.ndarray, seeds: np.ndarray, connectivity: int = 6,
                  closing_iterations: int = 2, fill_holes: bool = True, connected: bool = False) -> np.ndarray:
    """Close (dilate then erode `closing_iterations` times), fill holes, keep the seed component(s).

    The result always contains every seed voxel; when the seeds fall into several
    components (a "multiple" group of CMBs) each component holding a seed is kept.
    connected: the caller knows every component of `region | seeds` holds a seed (a
    region grown from them); without closing, hole filling keeps that, so the component
    search is skipped.
    """
    st = structure(connectivity)
    out = region | seeds
    # work inside the region's bounding box, padded so closing cannot touch the edge
    pad = closing_iterations + 1
    sub = bounding_box(out)
    part = np.pad(out[sub], pad)
    if closing_iterations > 0:   # the thesis modes only
        from scipy import ndimage

        part |= ndimage.binary_closing(part, structure=st, iterations=closing_iterations)
    if fill_holes:
        part = boxops.fill_holes(part, connectivity)
    out = out.copy()
    out[sub] = part[pad:-pad, pad:-pad, pad:-pad]
    if connected and closing_iterations == 0:
        return out
    return keep_seed_components(out, seeds, connectivity)


def keep_seed_components(mask: np.ndarray, seeds: np.ndarray, connectivity: int = 6) -> np.ndarray:
    """Only the connected components of `mask | seeds` that contain a seed voxel."""
    return components_holding(mask, seeds, connectivity)
