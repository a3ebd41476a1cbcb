"""How far is the atlas fit of a clinical scan from the fit of the 1 mm brain it was made from?

A real brain (the QSM 2016 brain as pseudo-T2*, `training.generate_cache.pseudo_t2s`, one draw
per seed; the FreeSurfer subject as T2*-like image, `training.mine_candidates.fs_norm_t2s`) is
registered at 1 mm (the reference) and again after re-acquisition on a clinical grid
(`CMBLib.synthesis.label_synthesis.reacquire`: slab averaging, tilt up to 8 degrees; bias and
Rician noise as `training.mine_candidates._clinical_grid_case`; optionally the synthetic head of
`benchmarks.check_location_filter.add_head`).  Re-acquisition keeps world coordinates, so the
two template -> subject transforms should agree; their disagreement (mm, over template points)
is the misfit:

* ``mean``: mean displacement over the template brain (every 50th mask voxel);
* ``midline``: mean displacement over the deep-midline zone's box
  (`location_filter.ZONES['deep_midline_veins']`, a 2 mm grid, `registration.zone_shift_mm`), the
  part the filter acts on.

Also printed per fit: the rigid -> affine gain in mutual information (at `registration.CHECK_LEVEL`) and the
rigid -> affine shift over the same box (the two figures of `registration.affine_consistency_problem`),
and the gate's verdict with and without that check (``gate``, ``gate_before``).

Both fits run as `cmb detect` runs them (`registration.register_template`, affine), and the
gate's verdict (`registration.filter_problems`) is printed for the clinical one.  A case with
midline misfit > ``--limit`` (5 mm) is a misfit.  ``--issue`` adds the scan of issue 26
(`training.mine_candidates.make_case('clin', 'val', 1)`, whose base is `pseudo_t2s` with seed
7_000_001).

    OMP_NUM_THREADS=2 ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=2 \
        python benchmarks/check_registration_misfit.py --seeds 0-3 --issue [--out rows.json]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GRIDS = {"0.86x0.86x4": (0.86, 0.86, 4.0), "0.5x0.5x5": (0.5, 0.5, 5.0), "0.9x0.9x1.5": (0.9, 0.9, 1.5)}


def parse_seeds(text):
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def brain_points():
    """Template brain points (every 50th mask voxel), template LPS mm."""
    import SimpleITK as sitk

    from CMBLib.location.atlas import load_atlas

    _, mask = load_atlas().template_sitk()
    m = sitk.GetArrayViewFromImage(mask)
    return np.array([mask.TransformContinuousIndexToPhysicalPoint([float(x) for x in p[::-1]])
                     for p in np.argwhere(m > 0)[::50]])


def displacement(a, b, points_lps):
    """Per point: |a(p) - b(p)| (mm) for two template -> subject transforms."""
    pa = np.array([a.TransformPoint(tuple(map(float, p))) for p in points_lps])
    pb = np.array([b.TransformPoint(tuple(map(float, p))) for p in points_lps])
    return np.linalg.norm(pa - pb, axis=1)


def sources(names, seeds):
    """(name, seed, 1 mm base Volume, brain mask, rng for the re-acquisition) per source and seed."""
    from CMBLib.io import read_volume
    from training.generate_cache import FS_LABELS, QSM, QSM_MASK, pseudo_t2s
    from training.mine_candidates import FS_NORM, fs_norm_t2s

    if "qsm" in names:
        chi, msk = read_volume(QSM), read_volume(QSM_MASK).array > 0
        for s in seeds:
            rng = np.random.default_rng(s)
            yield "qsm", s, pseudo_t2s(chi, msk, rng), msk, rng
    if "fsn" in names:
        base, brain = fs_norm_t2s(read_volume(FS_NORM), read_volume(FS_LABELS))
        for s in seeds:
            yield "fsn", s, base, brain, np.random.default_rng(10_000 + s)


def degrade(base, brain, spacing, rng, head, seed):
    from benchmarks.check_location_filter import add_head
    from CMBLib.synthesis.label_synthesis import reacquire
    from training.generate_cache import magnitude_image

    img, mask = reacquire(base, spacing, rng, mask=brain)
    image = img.with_array(magnitude_image(img.array, mask, spacing, rng, noise_sd=(0.01, 0.05)))
    if head:
        image = add_head(image, np.random.default_rng(50_000 + seed))
    return image


def register(image):
    from CMBLib.errors import CMBError
    from CMBLib.location.atlas import load_atlas
    from CMBLib.location.registration import register_template

    template, mask = load_atlas().template_sitk()
    t = time.perf_counter()
    try:
        return register_template(template, mask, image), time.perf_counter() - t
    except CMBError as exc:
        return exc, time.perf_counter() - t


def gate_without_check(res, image, box):
    """The gate's verdict without `affine_consistency_problem` (the gate before issue 26 item 4)."""
    from CMBLib.location import registration as R

    saved, R.MIN_AFFINE_GAIN = R.MIN_AFFINE_GAIN, None
    try:
        return (R.filter_problems(res, image, box) or ["applied"])[0]
    finally:
        R.MIN_AFFINE_GAIN = saved


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", default="qsm,fsn")
    ap.add_argument("--seeds", default="0-1", help="e.g. 0-3 (tuning) or 100-103 (report)")
    ap.add_argument("--grids", default=",".join(GRIDS))
    ap.add_argument("--head", default="no,yes", help="no, yes or both (no,yes)")
    ap.add_argument("--issue", action="store_true", help="add the scan of issue 26 (clin val 1)")
    ap.add_argument("--clin", default="", help="cases of training.mine_candidates' 'clin' source, SPLIT:SEEDS "
                    "(e.g. val:0-7; even i 0.86 x 0.86 x 4 mm, odd 0.5 x 0.5 x 5 mm by i // 2, CMBs on odd i)")
    ap.add_argument("--limit", type=float, default=5.0, help="midline misfit (mm) counted as a misfit")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from CMBLib.detection.location_filter import ZONES
    from CMBLib.location.registration import filter_problems, zone_shift_mm

    box = ZONES["deep_midline_veins"].box_mni_mm
    brain_pts = brain_points()
    rows = []

    def measure(name, image, ref):
        res, dt = register(image)
        row = {"case": name, "seconds": round(dt, 1)}
        if isinstance(res, Exception):
            row.update(failed=str(res))
        else:
            row.update(scales=[round(s, 3) for s in res.scales], interior_mi=round(res.interior_mi, 3),
                       rigid_mi=round(res.rigid_mi, 4), affine_mi=round(res.affine_mi, 4),
                       gain=round(res.affine_mi - res.rigid_mi, 4),
                       rigid_shift_mm=round(zone_shift_mm(res.transform, res.rigid_transform, box), 1),
                       gate=(filter_problems(res, image, box) or ["applied"])[0],
                       gate_before=gate_without_check(res, image, box))
            if not isinstance(ref, Exception):
                row.update(mean_mm=round(float(displacement(res.transform, ref.transform, brain_pts).mean()), 1),
                           midline_mm=round(zone_shift_mm(res.transform, ref.transform, box), 1))
        rows.append(row)
        print(json.dumps(row), flush=True)
        return res

    for src, seed, base, brain, rng in sources(args.sources.split(","), parse_seeds(args.seeds)):
        ref, dt = register(base)
        print(json.dumps({"case": f"{src} {seed} 1 mm (reference)", "seconds": round(dt, 1),
                          "scales": None if isinstance(ref, Exception) else [round(s, 3) for s in ref.scales]}),
              flush=True)
        for grid in args.grids.split(","):
            state = rng.bit_generator.state        # every grid / head variant from the same draw
            for head in args.head.split(","):
                rng.bit_generator.state = state
                image = degrade(base, brain, GRIDS[grid], rng, head == "yes", seed)
                measure(f"{src} {seed} {grid}{' head' if head == 'yes' else ''}", image, ref)
    clin = [("val", 1)] if args.issue else []
    if args.clin:
        split, _, seeds = args.clin.partition(":")
        clin += [(split, i) for i in parse_seeds(seeds) if (split, i) not in clin]
    if clin:
        from training.generate_cache import pseudo_t2s
        from training.mine_candidates import CLIN_GRIDS, CLIN_SEED, load_backgrounds, make_case

        labels, chi, msk, _ = load_backgrounds(["clin"])
        for split, i in clin:
            ref, _ = register(pseudo_t2s(chi, msk, np.random.default_rng(CLIN_SEED[split] + i)))
            grid = "x".join(f"{v:g}" for v in CLIN_GRIDS[(i // 2) % 2])
            measure(f"clin {split} {i} {grid}{' (issue 26)' if (split, i) == ('val', 1) else ''}",
                    make_case("clin", split, i, labels, chi, msk)["image"], ref)
    ok = [r for r in rows if "midline_mm" in r]
    bad = [r for r in ok if r["midline_mm"] > args.limit]
    print(f"\n{len(ok)} fits compared; midline misfit > {args.limit} mm: {len(bad)} "
          f"({', '.join(r['case'] for r in bad) or 'none'}); of those the gate applied the filter on "
          f"{sum(r['gate'] == 'applied' for r in bad)} (before the misfit check: "
          f"{sum(r['gate_before'] == 'applied' for r in bad)})")
    new = [r for r in ok if r["gate"] != "applied" and r["gate_before"] == "applied"]
    names = ", ".join(f"{r['case']} ({r['midline_mm']} mm)" for r in new) or "none"
    print(f"refused by the misfit check only: {len(new)} ({names}); of those with a midline misfit "
          f"<= {args.limit} mm: {sum(r['midline_mm'] <= args.limit for r in new)}")
    if ok:
        print(f"misfit median mean {np.median([r['mean_mm'] for r in ok]):.1f} mm, "
              f"midline {np.median([r['midline_mm'] for r in ok]):.1f} mm; max midline "
              f"{max(r['midline_mm'] for r in ok):.1f} mm")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
