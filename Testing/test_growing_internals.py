"""Mask engine internals made faster in round 2: each must give exactly what the plain
computation it replaces gives (the tuning set's masks are unchanged; docs/mask_engine.md)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from phantoms import PhantomCMB, make_phantom
from scipy import ndimage

from CMBLib.growing.interactive import _border_connected, _crossings, _quantile
from CMBLib.growing.join_map import SMALL, minimax_vertex, minimax_vertex_relaxation
from CMBLib.io import write_volume

ROOT = Path(__file__).resolve().parents[1]


def _border_connected_reference(bg):
    """Label the whole array; keep the components that touch one of its faces."""
    labels, _ = ndimage.label(bg)
    faces = [labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]]
    keep = np.zeros(int(labels.max()) + 1, bool)
    keep[np.unique(np.concatenate([f.ravel() for f in faces]))] = True
    keep[0] = False
    return keep[labels]


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10_000), shape=st.tuples(*[st.integers(1, 12)] * 3), fill=st.floats(0.2, 1.0),
       framed=st.booleans())
def test_border_connected_equals_labelling_the_whole_array(seed, shape, fill, framed):
    rng = np.random.default_rng(seed)
    bg = rng.random(shape) < fill
    if framed:  # a "brain" inside background, with holes, as on a skull-stripped scan
        bg[:] = True
        lo = rng.integers(0, shape)
        hi = np.minimum(lo + rng.integers(1, np.array(shape) + 1), shape)
        bg[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = rng.random(tuple(hi - lo)) < 0.3
    np.testing.assert_array_equal(_border_connected(bg), _border_connected_reference(bg))


def test_border_connected_keeps_an_enclosed_hole_out():
    bg = np.ones((7, 9, 9), bool)
    bg[1:6, 1:8, 1:8] = False        # the brain
    bg[3, 4, 4] = True               # a hole inside it: not background
    out = _border_connected(bg)
    assert out[0, 0, 0] and out[6, 8, 8] and not out[3, 4, 4]
    assert out.sum() == bg.sum() - 1


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=300), q=st.floats(0, 100))
def test_quantile_equals_numpy_percentile(values, q):
    a = np.array(values)
    assert _quantile(a, q) == np.percentile(a, q) or np.isclose(_quantile(a, q), np.percentile(a, q), rtol=1e-12)


def test_rays_of_a_stack_equal_rays_slice_by_slice():
    rng = np.random.default_rng(5)
    stack = ndimage.gaussian_filter(rng.random((5, 21, 19)), (0, 1.5, 1.5))
    centre, spacing = (10.3, 8.7), np.array([0.86, 0.86])
    threshold = float(np.median(stack))
    together = _crossings(stack, centre, threshold, spacing, 7.0)
    assert together.shape == (5, 16)
    for k in range(5):
        np.testing.assert_array_equal(together[k], _crossings(stack[k], centre, threshold, spacing, 7.0))


def test_minimax_methods_agree_on_small_and_large_boxes():
    rng = np.random.default_rng(11)
    for shape in [(4, 9, 9), (20, 30, 30)]:   # below and above join_map.SMALL voxels
        assert (np.prod(shape) <= SMALL) == (shape[0] == 4)
        cost = ndimage.gaussian_filter(rng.random(shape), 1.0)
        seeds = np.zeros(shape, bool)
        seeds[shape[0] // 2, 4, 4] = True
        for conn in (6, 26):
            expected = minimax_vertex(cost, seeds, conn, method="reconstruction")
            np.testing.assert_array_equal(minimax_vertex(cost, seeds, conn), expected)
            np.testing.assert_array_equal(minimax_vertex_relaxation(cost, seeds, conn), expected)


def test_cmb_grow_with_half_dip_does_not_import_scikit_image_or_scipy_ndimage(tmp_path):
    """scikit-image costs 0.1-0.2 s of start-up and scipy.ndimage about 0.3 s; half_dip zones are
    small enough not to need the first, and CMBLib.growing.boxops replaces the second."""
    vol, _, scr = make_phantom([PhantomCMB((12.0, 12.0, 8.0), 2.0, 0.6)], (28, 28, 8), (0.86, 0.86, 2.0),
                               noise=0.02)
    write_volume(vol, tmp_path / "img.nii.gz")
    write_volume(scr, tmp_path / "scr.nii.gz")
    code = ("import sys; from CMBLib.cli import main; "
            f"rc = main(['grow', r'{tmp_path / 'img.nii.gz'}', r'{tmp_path / 'scr.nii.gz'}', "
            f"'-o', r'{tmp_path / 'mask.nii.gz'}', '--quiet']); "
            "print(rc, 'skimage' in sys.modules, 'scipy.ndimage' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["0", "False", "False"], out.stdout + out.stderr
    assert (tmp_path / "mask.nii.gz").is_file()
