"""The native patch stage on the one real T2*-weighted image of a third subject in ../shared/data:
a 3-echo GRE crop with a vein and no CMB (real/gre_multiecho_small/mag.nii.gz, 51 x 51 x 41
voxels of 0.47 x 0.47 x 1 mm).  Per echo: dark-spot candidates, how many the patch network scores
at or above its threshold (false positives: the crop has no CMB) and above 0.9.

    python benchmarks/check_native_gre.py [--model CMBLib/models/cmb-default]
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="CMBLib/models/cmb-default")
    args = ap.parse_args(argv)
    import SimpleITK as sitk

    from CMBLib.detection.native_stage import score
    from CMBLib.detection.patch_net import load_patch_net
    from CMBLib.geometry import Volume
    from training.generate_cache import DATA  # ../shared/data/real or $CMB_SHARED_DATA/real

    net, meta = load_patch_net(args.model)
    img = sitk.ReadImage(str(DATA / "gre_multiecho_small" / "mag.nii.gz"))
    echoes = sitk.GetArrayFromImage(img)          # [echo, k, j, i]
    for e, arr in enumerate(echoes.astype(np.float32)):
        vol = Volume(arr, spacing=img.GetSpacing()[:3])
        brain = arr > 0.2 * np.percentile(arr, 90)
        cands, p, _ = score(vol, brain, net)
        top = [(cands[i]["kji"], round(float(p[i]), 3)) for i in np.argsort(-p)[:3]]
        print(f"echo {e + 1}: {len(cands)} candidates, {int((p >= meta['threshold']).sum())} at or above "
              f"{meta['threshold']}, {int((p >= 0.9).sum())} above 0.9; top {top}")


if __name__ == "__main__":
    main()
