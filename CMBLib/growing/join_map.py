"""Join tolerances: for every voxel, the smallest tolerance at which region growing reaches it.

Thesis Algorithm 1 re-runs a breadth-first search for every tolerance step.  Here the
whole size-versus-tolerance curve comes out of one computation: ``join[v]`` is the
tolerance at which voxel ``v`` joins the region, so the region grown with tolerance
``T`` is exactly ``{v : join[v] <= T}`` (connected to the seeds by construction) and the
curve is the cumulative histogram of ``join``.

All arrays here are small boxes around one scribble, indexed [k, j, i].  Intensities
are already divided by the intensity scale when the difference is relative.

Modes (intensity difference a voxel must keep below the tolerance):

* ``seed_average``: ``|I(v) - mean(I[seeds])|``.  join is the minimax path cost from the
  seeds (the largest difference met along the best path), exact for any tolerance.
* ``parent_son``: ``|I(v) - I(parent)|`` for the neighbour it is reached from.  join is the
  minimax path cost over edge weights, exact for any tolerance.
* ``half_dip`` (default, not in the thesis): ``max(I(v) - m, 0)`` for a dark lesion with m
  its minimum (the darkest seed here; the engine uses a noise-corrected minimum next to
  the scribble): one-sided, so the region at tolerance T is the voxels no brighter than
  m + T connected to the seeds.  Exact, like ``seed_average``.
* ``running_average``: ``|I(v) - mean(region so far)|``.  Voxels are taken in the order
  an ordered flood from the seeds reaches them (darkest-connected first for a dark
  lesion, brightest first for a bright one); each one's difference is measured against
  the mean of the voxels taken before it, and join is the running maximum of those
  differences.  Unlike the thesis's FIFO version, the result does not depend on the
  queue order.
"""
import numpy as np

from .boxops import structure

MODES = ("half_dip", "running_average", "seed_average", "parent_son")


def neighbour_offsets(connectivity: int):
    """Offsets (dk, dj, di) of the 6 or 26 neighbours."""
    if connectivity not in (6, 26):
        raise ValueError("connectivity must be 6 or 26")
    offs = []
    for dk in (-1, 0, 1):
        for dj in (-1, 0, 1):
            for di in (-1, 0, 1):
                n = abs(dk) + abs(dj) + abs(di)
                if n == 0 or (connectivity == 6 and n != 1):
                    continue
                offs.append((dk, dj, di))
    return offs


def _shift_slices(offset):
    """Slices (dst, src) so that dst[v] pairs with src[v - offset]."""
    dst, src = [], []
    for d in offset:
        if d > 0:
            dst.append(slice(d, None))
            src.append(slice(None, -d))
        elif d < 0:
            dst.append(slice(None, d))
            src.append(slice(-d, None))
        else:
            dst.append(slice(None))
            src.append(slice(None))
    return tuple(dst), tuple(src)


def _neighbour_min(values: np.ndarray, connectivity: int, out: np.ndarray) -> np.ndarray:
    """out[v] = min over v and its neighbours of values (inf outside the box)."""
    np.copyto(out, values)
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(None, -1)
        hi[axis] = slice(1, None)
        # 26 neighbours: the 3 x 3 x 3 minimum is three 3-voxel minima, one axis after another
        src = out.copy() if connectivity == 26 else values
        np.minimum(out[tuple(hi)], src[tuple(lo)], out=out[tuple(hi)])
        np.minimum(out[tuple(lo)], src[tuple(hi)], out=out[tuple(lo)])
    return out


SMALL = 4096  # voxels: below this, minimax_vertex relaxes (see there)


def minimax_vertex(cost: np.ndarray, seeds: np.ndarray, connectivity: int, seed_value: float = 0.0,
                   method: str = "auto") -> np.ndarray:
    """Smallest possible maximum of `cost` along a path from `seeds` to each voxel.

    Seeds get `seed_value`.  This is a grey-level reconstruction by erosion of a marker
    (seed_value on the seeds, +max elsewhere) under `cost`, computed by scikit-image's
    queue-based algorithm; `cost` must be finite.  Boxes of up to `SMALL` voxels (a
    half_dip zone) use the vectorised relaxation instead: same values (only min / max
    are taken), faster there, and `cmb grow` need not import scikit-image.  method:
    "auto", "reconstruction" or "relaxation".
    """
    if method == "relaxation" or (method == "auto" and cost.size <= SMALL):
        return minimax_vertex_relaxation(np.asarray(cost, dtype=np.float64), seeds, connectivity, seed_value)
    from skimage.morphology import reconstruction

    mask = np.array(cost, dtype=np.float64)
    mask[seeds] = seed_value
    marker = np.full_like(mask, mask.max())
    marker[seeds] = seed_value
    return reconstruction(marker, mask, method="erosion", footprint=structure(connectivity))


def minimax_vertex_relaxation(cost: np.ndarray, seeds: np.ndarray, connectivity: int,
                              seed_value: float = 0.0) -> np.ndarray:
    """Same as `minimax_vertex` by plain vectorised relaxation (one neighbour ring per sweep)."""
    join = np.full(cost.shape, np.inf)
    join[seeds] = seed_value
    scratch = np.empty_like(join)
    while True:
        _neighbour_min(join, connectivity, scratch)
        np.maximum(scratch, cost, out=scratch)
        scratch[seeds] = seed_value
        if np.array_equal(scratch, join):
            return join
        join, scratch = scratch, join


def minimax_edge(intensity: np.ndarray, seeds: np.ndarray, connectivity: int) -> np.ndarray:
    """Smallest possible maximum of |I(a) - I(b)| over the steps of a path from `seeds`."""
    offsets = neighbour_offsets(connectivity)
    pairs = []
    for off in offsets:
        dst, src = _shift_slices(off)
        pairs.append((dst, src, np.abs(intensity[dst] - intensity[src])))
    join = np.full(intensity.shape, np.inf)
    join[seeds] = 0.0
    while True:
        changed = False
        for dst, src, w in pairs:
            cand = np.maximum(join[src], w)
            target = join[dst]
            better = cand < target
            if better.any():
                target[better] = cand[better]
                changed = True
        if not changed:
            return join


def join_tolerances(intensity: np.ndarray, seeds: np.ndarray, mode: str, connectivity: int,
                    dark: bool = True) -> np.ndarray:
    """join[v]: the tolerance at which voxel v joins the region grown from `seeds`.

    intensity: float box [k, j, i] (already divided by the scale for relative mode).
    seeds: bool box, at least one True.  dark: lesion darker than its surroundings
    (decides the flood order of ``running_average``).  Seeds get join = 0.
    """
    if mode == "seed_average":
        ref = float(intensity[seeds].mean())
        return minimax_vertex(np.abs(intensity - ref), seeds, connectivity)
    if mode == "half_dip":
        level = intensity if dark else -intensity
        return minimax_vertex(np.maximum(level - float(level[seeds].min()), 0.0), seeds, connectivity)
    if mode == "parent_son":
        return minimax_edge(intensity, seeds, connectivity)
    if mode == "running_average":
        return _running_average(intensity, seeds, connectivity, dark)
    raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")


def _running_average(intensity, seeds, connectivity, dark):
    """Ordered flood (by minimax intensity path, lesion side first), then running means."""
    level = intensity if dark else -intensity
    flood = minimax_vertex(level, seeds, connectivity, seed_value=float(level.min()) - 1.0)
    others = ~seeds
    order_keys = flood[others]
    values = intensity[others]
    # Ties in flood level: the voxel closer to the lesion's intensity goes first.
    order = np.lexsort((level[others], order_keys))
    values = values[order]
    n_seed = int(seeds.sum())
    sums = float(intensity[seeds].sum()) + np.concatenate(([0.0], np.cumsum(values)[:-1]))
    means = sums / (n_seed + np.arange(values.size))
    diffs = np.abs(values - means)
    joined = np.maximum.accumulate(diffs) if diffs.size else diffs
    join = np.zeros(intensity.shape)
    flat = np.empty(values.size)
    flat[order] = joined
    join[others] = flat
    return join
