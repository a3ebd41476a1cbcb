"""A faithful, straightforward per-voxel implementation of the thesis's region growing.

Thesis (../shared/seeds/004_*, Algorithm 1): breadth-first search from every scribble
voxel with a FIFO queue; a neighbour joins when its intensity difference to the
reference (parent voxel, seed average or running average) is within the tolerance;
growth stops once the region exceeds the size cap.  The automatic tolerance re-runs
the search for every tolerance step and keeps the last one before the cap is exceeded.

This is the oracle of the tests and the reference the benchmark times the engine
against.  Arrays are indexed [k, j, i]; seeds are a list of (k, j, i) tuples.
"""
from collections import deque

import numpy as np


def _neighbours(connectivity):
    offs = []
    for dk in (-1, 0, 1):
        for dj in (-1, 0, 1):
            for di in (-1, 0, 1):
                n = abs(dk) + abs(dj) + abs(di)
                if n and (connectivity == 26 or n == 1):
                    offs.append((dk, dj, di))
    return offs


def grow(volume, seeds, tolerance, connectivity=6, max_size=None, mode="seed_average", inclusive=True):
    """Region (set of (k, j, i)) grown with one fixed tolerance; stops past `max_size`."""
    shape = volume.shape
    region = set(seeds)
    queue = deque(seeds)
    visited = set()
    seed_values = [float(volume[s]) for s in seeds]
    ref_sum, ref_n = sum(seed_values), len(seed_values)
    seed_avg = ref_sum / ref_n
    total = len(region)
    offsets = _neighbours(connectivity)
    while queue:
        p = queue.popleft()
        if p in visited:
            continue
        for dk, dj, di in offsets:
            n = (p[0] + dk, p[1] + dj, p[2] + di)
            if not (0 <= n[0] < shape[0] and 0 <= n[1] < shape[1] and 0 <= n[2] < shape[2]):
                continue
            if n in region or n in visited:
                continue
            value = float(volume[n])
            if mode == "parent_son":
                ref = float(volume[p])
            elif mode == "seed_average":
                ref = seed_avg
            else:  # running_average
                ref = ref_sum / ref_n
            diff = abs(value - ref)
            if diff <= tolerance if inclusive else diff < tolerance:
                region.add(n)
                queue.append(n)
                ref_sum += value
                ref_n += 1
                total += 1
                if max_size is not None and total > max_size:
                    return region
        visited.add(p)
    return region


def auto_grow(volume, seeds, max_size, connectivity=6, mode="seed_average", steps=None):
    """Thesis automatic tolerance: last tolerance step before the region exceeds `max_size`.

    `steps` are tolerances in the units of `volume` (default 200 steps over its range).
    Returns (tolerance, region, sizes) where sizes lists the region size per step tried.
    """
    if steps is None:
        span = float(volume.max() - volume.min())
        steps = np.linspace(0.0, span, 201)
    best_t, best_region, sizes = float(steps[0]), set(seeds), []
    for t in steps:
        region = grow(volume, seeds, float(t), connectivity, max_size, mode)
        sizes.append(len(region))
        if len(region) > max_size:
            break
        best_t, best_region = float(t), region
    return best_t, best_region, sizes
