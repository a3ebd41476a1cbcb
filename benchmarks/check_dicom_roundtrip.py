"""Same scan as NIfTI and as a plain DICOM MR series -> same CMBs?  (the issue-16 check)

    python benchmarks/check_dicom_roundtrip.py STUDY.nii.gz [STUDY2.nii.gz ...] --work DIR
        [--model NAME|PATH] [--location] [--threads 2]

For each NIfTI study: writes it as a DICOM series three times -- "k": InstanceNumbers
along the volume's k axis; "unnumbered": every InstanceNumber 1, file names in k order;
"reversed": InstanceNumbers against k (the reader then keeps that order, so the array is
the NIfTI's flipped along k: informational, it shows how much the detector depends on
the slice order) -- runs `cmb detect` on the NIfTI and on each DICOM folder (`--report
--dicom-seg`, plus `--location` when asked), and prints: CMB counts, the largest distance
between matched CMB centres (NIfTI vs DICOM), the number of SEG files, and the largest
distance between a SEG segment's centre and its record.  Exit 1 when a check of "k" or
"unnumbered" fails (centres > 1 mm, not exactly one SEG, segment centre > 2 mm).
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _detect(src, out, args):
    cmd = [sys.executable, "-m", "CMBLib", "detect", str(src), "--out", str(out), "--model", args.model,
           "--report", "--overwrite", "--threads", str(args.threads)]
    if args.location:
        cmd.append("--location")
    if Path(src).is_dir():
        cmd.append("--dicom-seg")
    subprocess.run(cmd, check=True, cwd=str(REPO), stdout=subprocess.DEVNULL)
    return json.loads(next(Path(out).glob("*_cmb.json")).read_text(encoding="utf-8"))["cmbs"]


def _max_match(a, b):
    if len(a) != len(b):
        return float("inf")
    if not a:
        return 0.0
    pa, pb = np.array([r["centre_ras"] for r in a]), np.array([r["centre_ras"] for r in b])
    d = np.linalg.norm(pa[:, None] - pb[None], axis=2)
    return float(max(d.min(axis=1).max(), d.min(axis=0).max()))


def main(argv=None) -> int:
    from CMBLib.dicom.seg import read_seg_segments
    from CMBLib.dicom.write import write_dicom_series
    from CMBLib.io import read_volume, strip_image_suffix

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("studies", nargs="+")
    p.add_argument("--work", required=True)
    p.add_argument("--model", default="default")
    p.add_argument("--location", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    ok = True
    for study in args.studies:
        name = strip_image_suffix(study)
        work = Path(args.work) / name
        vol = read_volume(study)
        ref = _detect(study, work / "out_nifti", args)
        for order in ("k", "unnumbered", "reversed"):
            folder = work / f"dicom_{order}"
            paths = write_dicom_series(vol, folder, patient_id=name[:16], series_description="T2STAR")
            if order != "k":
                import pydicom

                for n, path in enumerate(paths):
                    ds = pydicom.dcmread(str(path))
                    ds.InstanceNumber = len(paths) - n if order == "reversed" else 1
                    ds.save_as(str(path))
            out = work / f"out_{order}"
            got = _detect(folder, out, args)
            segs = sorted(out.glob("*_cmb_seg.dcm"))
            seg_err = 0.0
            if segs:
                segments = read_seg_segments(segs[0])
                seg_err = max((float(np.linalg.norm(np.subtract(s["centre_ras"], r["centre_ras"])))
                               for s, r in zip(segments.values(), got)), default=0.0)
                seg_ok = len(segments) == len(got)
            else:
                seg_ok = not got
            dist = _max_match(ref, got)
            good = dist <= 1.0 and len(segs) == (1 if got else 0) and seg_ok and seg_err <= 2.0
            ok &= good or order == "reversed"
            verdict = "ok" if good else ("differs" if order == "reversed" else "FAIL")
            print(f"{name} [{order}]: NIfTI {len(ref)} CMBs, DICOM {len(got)}; max centre distance {dist:.4f} mm; "
                  f"SEG files {len(segs)}, max segment-record distance {seg_err:.4f} mm -> {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
