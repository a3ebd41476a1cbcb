"""Refinement of a grown region: closing, hole filling, keep what holds the scribble.

Thesis section IV.C: closing with two iterations of dilation and erosion, then hole
filling, "yielding a single connected component per CMB".  Arrays are boolean boxes
indexed [k, j, i].
"""
import numpy as np
from scipy import ndimage


def structure(connectivity: int) -> np.ndarray:
    """3x3x3 structuring element for 6- (face) or 26- (full) connectivity."""
    return ndimage.generate_binary_structure(3, 1 if connectivity == 6 else 3)


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
    sub = ndimage.find_objects(out.view(np.uint8))[0]
    part = np.pad(out[sub], pad)
    if closing_iterations > 0:
        part |= ndimage.binary_closing(part, structure=st, iterations=closing_iterations)
    if fill_holes:
        part = ndimage.binary_fill_holes(part, structure=st)
    out = out.copy()
    out[sub] = part[pad:-pad, pad:-pad, pad:-pad]
    if connected and closing_iterations == 0:
        return out
    return keep_seed_components(out, seeds, connectivity)


def keep_seed_components(mask: np.ndarray, seeds: np.ndarray, connectivity: int = 6) -> np.ndarray:
    """Only the connected components of `mask | seeds` that contain a seed voxel."""
    mask = mask | seeds
    labels, n = ndimage.label(mask, structure=structure(connectivity))
    keep = np.zeros(n + 1, bool)
    keep[labels[seeds]] = True
    keep[0] = False
    return keep[labels]
