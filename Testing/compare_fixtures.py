"""Hand-built baseline / follow-up pairs for the compare tests: a textured brain-like
phantom (no data files), re-acquired after a known head motion on another grid."""
import numpy as np
from scipy import ndimage as ndi

from CMBLib.geometry import Volume
from CMBLib.synthesis.cmb_insertion import insert_cmbs
from CMBLib.synthesis.followup_pair import apply, move_volume, rigid_motion
from CMBLib.synthesis.label_synthesis import reacquire

SPACING = 1.5
SHAPE_KJI = (80, 100, 90)          # 120 x 150 x 135 mm
CENTRE = np.array([67.5, 75.0, 60.0])  # RAS mm, centre of the ellipsoid


def textured_brain(seed: int = 0):
    """(Volume, mask): an ellipsoidal 'brain' (semi-axes 55, 65, 48 mm) with a smooth random
    texture (structures of ~10 mm) and bright 'ventricles'; RAS axes, origin 0."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*(np.arange(n) * SPACING for n in SHAPE_KJI), indexing="ij")
    r = ((i - CENTRE[0]) / 55) ** 2 + ((j - CENTRE[1]) / 65) ** 2 + ((k - CENTRE[2]) / 48) ** 2
    mask = r <= 1
    tex = ndi.gaussian_filter(rng.normal(size=SHAPE_KJI), 3.0)
    img = 1.0 + 0.25 * tex / tex.std()
    vent = ((i - CENTRE[0] - 8) / 6) ** 2 + ((j - CENTRE[1]) / 20) ** 2 + ((k - CENTRE[2] - 5) / 10) ** 2 <= 1
    img[vent] = 1.8
    img = np.where(mask, np.clip(img, 0.2, None), 0.0).astype(np.float32) * 500
    return Volume(img, (SPACING,) * 3, (0.0, 0.0, 0.0), np.eye(3)), mask


def make_pair(seed=0, motion=((6.0, -4.0, 8.0), (5.0, -7.0, 4.0)), baseline_cmbs=(), followup_cmbs=(),
              baseline_spacing=(0.9, 0.9, 3.0), followup_spacing=(1.0, 1.0, 4.0), followup_seed=None):
    """(baseline Volume, follow-up Volume, motion 4x4) of the phantom; CMBs (RAS mm of the
    baseline head) are inserted into the scan(s) that show them; the follow-up sees the
    head moved by `motion` ((angles deg, shift mm) about the phantom's centre).
    followup_seed: another phantom for the follow-up (an unrelated image)."""
    brain, mask = textured_brain(seed)
    other = brain if followup_seed is None else textured_brain(followup_seed)[0]
    m = rigid_motion(motion[0], motion[1], CENTRE)
    rng = np.random.default_rng(seed + 100)
    b, _ = reacquire(brain, baseline_spacing, rng, mask=mask, tilt_deg=3.0)
    f, _ = reacquire(move_volume(other, m), followup_spacing, rng, mask=mask, tilt_deg=3.0)
    if len(baseline_cmbs):
        b = insert_cmbs(b, centres_ras=np.asarray(baseline_cmbs, float), rng=1, radius_mm=(2.0, 2.0),
                        contrast=(0.9, 0.9), dipole_prob=0).image
    if len(followup_cmbs):
        f = insert_cmbs(f, centres_ras=apply(m, followup_cmbs), rng=2, radius_mm=(2.0, 2.0),
                        contrast=(0.9, 0.9), dipole_prob=0).image
    return b, f, m


def darken(followup: Volume, motion, centre_ras, radius_mm: float, factor: float) -> Volume:
    """`followup` with a ball (centre: RAS mm of the baseline head, seen through `motion`)
    multiplied by `factor`."""
    pts = followup.kji_to_ras(np.argwhere(np.ones(followup.array.shape, bool)))
    ball = np.linalg.norm(apply(np.linalg.inv(motion), pts) - np.asarray(centre_ras, float), axis=1) <= radius_mm
    dark = followup.array.copy().reshape(-1)
    dark[ball] *= factor
    return followup.with_array(dark.reshape(followup.array.shape))


def findings_document(volume: Volume, centres_ras) -> dict:
    """A minimal cmb-detections 1.0 document for `volume` with CMBs at `centres_ras`."""
    cmbs = []
    for n, c in enumerate(np.asarray(centres_ras, float).reshape(-1, 3), start=1):
        cmbs.append({"label": n, "centre_ras": c.tolist(), "centre_ijk": volume.ras_to_voxel(c).round().tolist(),
                     "diameter_mm": 4.0, "volume_mm3": 33.5, "size_class": "<5mm", "max_probability": 0.9})
    return {"format": "cmb-detections", "format_version": "1.0", "image": "",
            "image_geometry": {"size_ijk": list(volume.shape_ijk)}, "model": {"name": "hand", "version": "0"},
            "threshold": 0.5, "cmb_count": len(cmbs), "cmbs": cmbs}


OLD_CMBS = CENTRE + np.array([[-25.0, 10, 5], [20, -20, -10], [5, 30, 15]])     # baseline RAS mm
NEW_CMBS = CENTRE + np.array([[25.0, 15, 0], [-15, -30, 10]])                    # only on the follow-up


def write_pair(folder):
    """base.nii.gz / follow.nii.gz and their findings base_cmb.json / follow_cmb.json in `folder`
    (OLD_CMBS on both, NEW_CMBS on the follow-up); returns the head motion 4x4."""
    import json

    from CMBLib.io import write_volume

    b, f, m = make_pair(seed=0, baseline_cmbs=OLD_CMBS, followup_cmbs=np.vstack([OLD_CMBS, NEW_CMBS]))
    write_volume(b, folder / "base.nii.gz")
    write_volume(f, folder / "follow.nii.gz")
    (folder / "base_cmb.json").write_text(json.dumps(findings_document(b, OLD_CMBS)))
    (folder / "follow_cmb.json").write_text(json.dumps(findings_document(f, apply(m, np.vstack([OLD_CMBS,
                                                                                              NEW_CMBS])))))
    return m
