"""Time of the atlas registration behind `cmb locate` (target <= 60 s on 2 CPU cores).

Cases (real data from ../shared/data; skipped when absent):
  * moved: the ICBM 2009a template, contrast-inverted, rotated 10 deg, shifted 15 mm,
    resampled to 0.9 x 0.9 x 3 mm (the judged case (a)); reports landmark score and
    landmark error in MNI mm;
  * clinical: the same on a 0.45 x 0.45 x 5 mm grid (512 x 512 x ~30, SWI-like);
  * qsm: the real QSM brain (2016 challenge), 1.06 mm;
  * t1: the real FreeSurfer subject's norm.nii.gz, 1 mm, 256^3.
Also times, in the same run, a plain reference set-up on case `moved`: the same
rigid + affine stages on the image at its own resolution with 100 % metric sampling
(no working-resolution resampling, no sampling restriction), and prints the ratio.
Per case also the two mutual informations that the location filter's gate compares
(rigid and affine fit, `registration.affine_consistency_problem`) and the share of the
registration's time they take (with the template points made once, on the first case).
``--compare``: each case registered with the settings before issue 26 (`registration.LEGACY`)
and with today's, alternately, ``--runs`` times each, both as in a fresh process (template
masks made in the registration; the ratio) and today's again with the masks kept (as in the
warm worker); prints the times, ratios, failures and the transforms' largest difference over the
template brain (docs/location.md, Registration speed).  Adds the case "clin 0.86x0.86x4"
(`training.mine_candidates.make_case('clin', 'val', 1)`, the scan of issue 26 item 5).

    OMP_NUM_THREADS=2 python benchmarks/bench_locate.py [--no-reference]
    OMP_NUM_THREADS=2 ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=2 python benchmarks/bench_locate.py --compare --runs 2
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "Testing")]
DATA = Path(os.environ.get("CMB_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _cases():
    import test_location_atlas as T

    from CMBLib.io import read_volume

    tpl_path = DATA / "atlases/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    if tpl_path.is_file():
        tpl = read_volume(tpl_path)
        inv = tpl.with_array(255.0 - tpl.array.astype(np.float32))
        yield "moved 0.9x0.9x3", T.moved_copy(inv, T.MATRIX, T.SHIFT), T.moved_landmarks(T.MATRIX, T.SHIFT)
        yield ("clinical 0.45x0.45x5", T.moved_copy(inv, T.MATRIX, T.SHIFT, spacing=(0.45, 0.45, 5.0), slice_mm=5.0),
               T.moved_landmarks(T.MATRIX, T.SHIFT))
    for name, rel in (("qsm 1.06 mm", "real/qsm2016/chi_cosmos.nii.gz"),
                      ("t1 1 mm 256^3", "real/freesurfer_subject/norm.nii.gz")):
        if (DATA / rel).is_file():
            yield name, read_volume(DATA / rel), None


def _clin_case():
    from training.mine_candidates import load_backgrounds, make_case

    if (DATA / "real/qsm2016/chi_cosmos.nii.gz").is_file():
        yield "clin 0.86x0.86x4", make_case("clin", "val", 1, *load_backgrounds(["clin"]))["image"], None


def compare(runs):
    """Settings before issue 26 against today's, alternately on each case (same process)."""
    import SimpleITK as sitk
    import test_location_atlas as T

    from CMBLib.errors import CMBError
    from CMBLib.location import registration as R
    from CMBLib.location.atlas import load_atlas

    template, mask = load_atlas().template_sitk()
    m = sitk.GetArrayViewFromImage(mask)
    pts = [mask.TransformContinuousIndexToPhysicalPoint([float(x) for x in p[::-1]]) for p in np.argwhere(m > 0)[::50]]
    truth = np.array([p for p, _ in T.LANDMARKS])
    new = {k: getattr(R, k) for k in R.LEGACY}
    ratios = []
    for name, vol, landmarks in list(_clin_case()) + list(_cases()):
        times, out = {"before": [], "now": [], "kept": []}, {}
        for _ in range(runs):
            for label, settings in (("before", R.LEGACY), ("now", new), ("kept", new)):
                for k, v in settings.items():
                    setattr(R, k, v)
                if label != "kept":
                    R._TEMPLATE_CACHE.clear()  # a fresh process (`cmb detect`): masks made once
                t0 = time.perf_counter()
                try:
                    res = R.register_template(template, mask, vol)
                except CMBError as exc:            # kept: the time counts, the outcome is printed
                    res = exc
                finally:
                    for k, v in new.items():
                        setattr(R, k, v)
                times[label].append(time.perf_counter() - t0)
                out.setdefault(label, []).append(res)
        ratio = np.median(times["before"]) / np.median(times["now"])
        ratios.append(ratio)
        line = (f"{name:22s} before {np.median(times['before']):5.2f} s  now {np.median(times['now']):5.2f} s  "
                f"ratio {ratio:4.2f}  (template masks kept, warm worker: {np.median(times['kept']):5.2f} s, ratio "
                f"{np.median(times['before']) / np.median(times['kept']):4.2f})")
        for k in ("before", "now"):
            fails = sum(isinstance(r, CMBError) for r in out[k])
            mi = [f"{r.interior_mi:.3f}" for r in out[k] if not isinstance(r, CMBError)]
            line += f"  {k}: {fails} of {runs} failed, interior MI {','.join(mi)}"
        out = {k: next((r for r in v if not isinstance(r, CMBError)), None) for k, v in out.items()}
        if out["before"] is not None and out["now"] is not None:
            a, b = (np.array([out[k].transform.TransformPoint(p) for p in pts]) for k in ("before", "now"))
            line += f"  transforms differ by <= {np.max(np.linalg.norm(a - b, axis=1)):.2f} mm"
        if landmarks is not None and None not in out.values():
            err = [np.max(np.linalg.norm(out[k].subject_to_template_ras(landmarks) - truth, axis=1))
                   for k in ("before", "now")]
            line += f"  landmark error max {err[0]:.1f} -> {err[1]:.1f} mm"
        print(line, flush=True)
    print(f"median ratio {np.median(ratios):.2f} over {len(ratios)} cases (fresh process)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-reference", action="store_true", help="skip the plain reference timing")
    ap.add_argument("--compare", action="store_true", help="settings before issue 26 against today's")
    ap.add_argument("--runs", type=int, default=1, help="with --compare: registrations per setting and case")
    args = ap.parse_args()
    if args.compare:
        return compare(args.runs)
    import test_location_atlas as T

    from CMBLib.location import registration as R
    from CMBLib.location.atlas import load_atlas
    from CMBLib.location.regions import region_name

    atlas = load_atlas()
    template, mask = atlas.template_sitk()
    import SimpleITK as sitk

    print(f"CPU cores {os.cpu_count()}, SimpleITK threads {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()} "
          "(set ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=2 to pin)")
    first = None
    spent = []
    check = {k: getattr(R, k) for k in ("points_mutual_information", "_SampledImage", "_check_points")}

    def timed(f):                           # what the gate's misfit check adds to a registration
        def run(*a, **k):
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                spent.append(time.perf_counter() - t)
        return run

    for k, f in check.items():
        setattr(R, k, timed(f))
    for name, vol, landmarks in _cases():
        spent.clear()
        t0 = time.perf_counter()
        res = R.register_template(template, mask, vol)
        dt = time.perf_counter() - t0
        line = (f"{name:22s} grid {vol.shape_ijk} registration {dt:6.1f} s  MI {-res.metric:.3f}  "
                f"scales {', '.join(f'{s:.2f}' for s in res.scales)}  rigid / affine MI {res.rigid_mi:.3f} / "
                f"{res.affine_mi:.3f} ({sum(spent):.2f} s, {100 * sum(spent) / dt:.1f} % of the registration)")
        if landmarks is not None:
            mni = res.subject_to_template_ras(landmarks)
            truth = np.array([p for p, _ in T.LANDMARKS])
            reg, _, _ = atlas.lookup(mni, 3.0)
            ok = sum(region_name(r) == n for r, (_, n) in zip(reg, T.LANDMARKS))
            line += f"  landmarks {ok}/12, error max {np.max(np.linalg.norm(mni - truth, axis=1)):.1f} mm"
        print(line, flush=True)
        if first is None:
            first = (vol, dt)
        if name.startswith("t1"):
            for k, f in check.items():
                setattr(R, k, f)
            t0 = time.perf_counter()
            res = R.register_template(template, mask, vol, deformable=True)
            print(f"{name + ' +bspline':22s} registration {time.perf_counter() - t0:6.1f} s  "
                  f"B-spline kept: {res.deformation is not None}  MI {-res.metric:.3f}", flush=True)
    if first and not args.no_reference:
        vol, dt = first
        saved = (R.WORK_SPACING_MM, R.SAMPLING_FRACTION)
        R.WORK_SPACING_MM, R.SAMPLING_FRACTION = 0.0, 1.0
        try:
            t0 = time.perf_counter()
            R.register_template(template, mask, vol)
            ref = time.perf_counter() - t0
        finally:
            R.WORK_SPACING_MM, R.SAMPLING_FRACTION = saved
        print(f"plain reference (native resolution, 100% sampling) {ref:.1f} s; ratio reference/ours {ref / dt:.1f}x")


if __name__ == "__main__":
    main()
