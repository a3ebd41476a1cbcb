"""Fast radial symmetry transform (CMBLib.detection.frst): hand-made discs, spheres and lines."""
import numpy as np
import pytest

from CMBLib.detection.frst import frst, frst_candidates, radii_pixels
from CMBLib.geometry import Volume

SP = (0.5, 0.5, 3.0)   # i, j, k mm


def _disc_volume(radius_px=3.0, contrast=-0.5, centre=(3, 32, 30), shape=(7, 64, 64), line=None, blur=True):
    """Flat 1.0 with a disc (or, with `line`=(j, width), a horizontal band) of `contrast` on slice centre[0]."""
    from scipy import ndimage

    a = np.ones(shape)
    jj, ii = np.mgrid[:shape[1], :shape[2]]
    if line is None:
        spot = (jj - centre[1]) ** 2 + (ii - centre[2]) ** 2 <= radius_px ** 2
    else:
        spot = np.abs(jj - line[0]) <= line[1]
    plane = np.where(spot, 1.0 + contrast, 1.0)
    if blur:
        plane = ndimage.gaussian_filter(plane, 0.7)
    a[centre[0]] = plane
    return Volume(a, spacing=SP)


def test_radii_from_spacing():
    # 1-5 mm diameters = radii 0.5-2.5 mm
    assert radii_pixels((0.5, 0.5)).tolist() == [1, 2, 3, 4, 5]
    assert radii_pixels((0.86, 0.86)).tolist() == [1, 2, 3]
    assert radii_pixels((0.25, 0.25)).tolist() == [2, 4, 5, 7, 8, 10]      # at most 6 radii
    assert radii_pixels((2.0, 2.0)).tolist() == [1]


@pytest.mark.parametrize("r", [1.5, 2.5, 4.0])
def test_dark_disc_peaks_at_its_centre(r):
    vol = _disc_volume(r)
    s = frst(vol)
    assert np.unravel_index(int(np.argmax(s)), s.shape) == (3, 32, 30)
    assert s[3, 32, 30] > 0
    assert s[2].max() == 0 and s[4].max() == 0   # in-plane only: other slices are flat


def test_bright_disc_gives_no_dark_response():
    dark = frst(_disc_volume(2.5, -0.5))
    bright = frst(_disc_volume(2.5, +0.5))
    assert bright[3, 32, 30] < 1e-3 * dark.max()       # its gradient points inwards: no vote at its centre
    assert bright.max() < 0.2 * dark.max()             # (a dark ring outside it collects a little)
    assert frst(_disc_volume(2.5, +0.5), dark=False)[3, 32, 30] > 0.5 * dark[3, 32, 30]


def test_line_weaker_than_disc_of_same_contrast():
    disc = frst(_disc_volume(2.5, -0.5)).max()
    line = frst(_disc_volume(line=(32, 2), contrast=-0.5)).max()   # a 5-pixel-wide vein across the slice
    assert line < 0.5 * disc


def test_scale_invariant_and_mask():
    vol = _disc_volume(2.5)
    s = frst(vol)
    assert np.allclose(frst(vol.with_array(vol.array * 37.0)), s, rtol=0, atol=1e-2 * s.max())   # up to rounding
    mask = np.zeros(vol.array.shape, bool)
    mask[:, :, 40:] = True                                # the disc lies outside: nothing votes for it
    assert frst(vol, mask)[3, 32, 30] == 0


def test_sphere_on_thin_slices_one_candidate_per_blob():
    """A dark sphere spanning 3 slices and a second one elsewhere: one candidate each, in RAS mm."""
    from scipy import ndimage

    shape = (12, 64, 64)
    kk, jj, ii = np.mgrid[:shape[0], :shape[1], :shape[2]]
    sp = (0.5, 0.5, 1.0)
    a = np.ones(shape)
    for c in ((5, 20, 20), (6, 44, 40)):
        d2 = ((kk - c[0]) * sp[2]) ** 2 + ((jj - c[1]) * sp[1]) ** 2 + ((ii - c[2]) * sp[0]) ** 2
        a -= 0.5 * (d2 <= 1.2 ** 2)
    a = ndimage.gaussian_filter(a, (0.3, 0.7, 0.7))
    vol = Volume(a, spacing=sp, origin=(10.0, -5.0, 2.0))
    cands = frst_candidates(vol, top_k=10)
    top = cands[:2]
    assert all(c["score"] > 0 for c in top)
    assert sorted(tuple(c["kji"]) for c in top) == [(5, 20, 20), (6, 44, 40)]
    for c in top:
        assert np.allclose(c["centre_ras"], vol.kji_to_ras(np.array(c["kji"], float)), atol=0.3)
    # everything after the two blobs is far weaker (ringing around them)
    assert all(c["score"] < 0.2 * top[1]["score"] for c in cands[2:])
    assert len(frst_candidates(vol, top_k=1)) == 1
