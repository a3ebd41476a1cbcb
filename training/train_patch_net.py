"""Train the native patch stage (issue 28): dark-spot candidates scored by a small 2.5D network.

Two steps, each resumable:

1. ``patches``: for every case of a split, the dark-spot candidates
   (`CMBLib.detection.dark_spots`, top `--top-k`) and their patches
   (`CMBLib.detection.patch_net.sample_patches`).  A candidate within `POS_MM` of an inserted
   CMB's centre is a positive, one farther than `NEG_MM` from every CMB a negative (between:
   left out); each inserted CMB also gives a patch at its own centre.  Negatives kept per
   case: the `--hard` deepest and `--easy` others at random (real anatomy: veins, sulci,
   deep grey matter; the ``fs`` cases' synthetic mimics).  Sources: those of
   `training.mine_candidates.make_case` plus ``clin_small`` / ``fsn_small`` (the same two real
   brains on the clinical grids with 4-14 CMBs of core radius 0.5-1.6 mm: the small ones the
   U-Net misses).  Each sample records its brain (``qsm``: clin, t2s, clin_small; ``fs``:
   fsn, fs, fsn_small) for leave-one-brain-out.
2. ``train``: the 2.5D CNN (`patch_net.build_network`) with half-positive batches, random
   in-plane flips and 90-degree turns, plane order reversed, intensity scaling; ``--exclude-brain``
   leaves one brain out.

    python -m training.train_patch_net patches --split train --n 50 --sources clin,t2s,clin_small \
        --out training/runs/patch/train_qsm.npz
    python -m training.train_patch_net patches --split train --n 50 --sources fsn,fs,fsn_small \
        --out training/runs/patch/train_fs.npz
    python -m training.train_patch_net train --data training/runs/patch/train_*.npz --out training/runs/patch/all
    python -m training.train_patch_net train --data ... --exclude-brain qsm --out training/runs/patch/no_qsm
"""
import argparse
import glob
import json
import time
from pathlib import Path

import numpy as np

POS_MM = 2.0
NEG_MM = 4.0
BRAIN_OF = {"clin": "qsm", "t2s": "qsm", "clin_small": "qsm", "fsn": "fs", "fs": "fs", "fsn_small": "fs"}
SMALL_SEED = {"train": 12_000_000, "val": 13_000_000, "test": 14_000_000}
SMALL_FSN_SEED = {"train": 15_000_000, "val": 16_000_000, "test": 17_000_000}


def small_case(source: str, split: str, i: int, chi, msk, fsn) -> dict:
    """A real brain (``clin_small``: QSM pseudo-T2*; ``fsn_small``: FreeSurfer T2*-like) on a
    clinical grid with 4-14 small dark CMBs (core radius 0.5-1.6 mm) in the split's hemisphere."""
    from training.generate_cache import pseudo_t2s
    from training.mine_candidates import CLIN_GRIDS, _clinical_grid_case

    seed = (SMALL_SEED if source == "clin_small" else SMALL_FSN_SEED)[split] + i
    rng = np.random.default_rng(seed)
    base, brain = (pseudo_t2s(chi, msk, rng), msk) if source == "clin_small" else fsn
    return _clinical_grid_case(source, base, brain, split, i, rng, grid=CLIN_GRIDS[i % len(CLIN_GRIDS)],
                               n_cmbs=(4, 15), radius_mm=(0.5, 1.6))


def get_case(source, split, i, backgrounds):
    from training.mine_candidates import make_case

    labels, chi, msk, fsn = backgrounds
    if source.endswith("_small"):
        return small_case(source, split, i, chi, msk, fsn)
    return make_case(source, split, i, labels, chi, msk, fsn)


def case_samples(case, top_k: int, hard: int, easy: int, rng) -> dict:
    """Patches, labels and dips of one case (see the module docstring)."""
    from scipy import ndimage as ndi

    from CMBLib.detection.native_stage import candidates
    from CMBLib.detection.patch_net import sample_patches
    from training.mine_candidates import reference_centres

    image = case["image"]
    # the brain as detect's mask would give it for these skull-stripped cases: the non-zero voxels
    cands, brain, dip, level = candidates(image, ndi.binary_fill_holes(np.asarray(image.array) > 0), top_k)
    ref = reference_centres(case["cmb_mask"])
    pts = np.array([c["centre_ras"] for c in cands], float).reshape(-1, 3)
    dist = (np.min(np.linalg.norm(pts[:, None] - ref[None], axis=2), axis=1) if len(ref)
            else np.full(len(pts), np.inf))
    pos = np.flatnonzero(dist <= POS_MM)
    neg = np.flatnonzero(dist > NEG_MM)
    keep_neg = list(neg[:hard])
    rest = neg[hard:]
    if len(rest):
        keep_neg += list(rng.choice(rest, size=min(easy, len(rest)), replace=False))
    kji = [cands[n]["kji"] for n in pos] + [cands[n]["kji"] for n in keep_neg]
    y = [1] * len(pos) + [0] * len(keep_neg)
    dips = [cands[n]["dip"] for n in pos] + [cands[n]["dip"] for n in keep_neg]
    if len(ref):      # every inserted CMB at its own centre, too
        c_kji = image.ras_to_voxel(ref)[:, ::-1]
        kji += [list(v) for v in c_kji]
        y += [1] * len(ref)
        dips += [float(dip[tuple(np.clip(np.round(v).astype(int), 0, np.array(dip.shape) - 1))]) for v in c_kji]
    x = sample_patches(image, brain, np.array(kji, float).reshape(-1, 3), level=level) if kji else \
        np.zeros((0, 3, 1, 1), np.float32)
    return {"x": x.astype(np.float16), "y": np.array(y, np.int8), "dip": np.array(dips, np.float32),
            "n_cands": len(cands), "n_ref": len(ref), "found": int(np.sum(np.min(
                np.linalg.norm(ref[:, None] - pts[None], axis=2), axis=1) <= POS_MM)) if len(ref) and len(pts) else 0}


def make_patches(args) -> None:
    from training.mine_candidates import load_backgrounds

    sources = args.sources.split(",")
    backgrounds = load_backgrounds([s.replace("_small", "") for s in sources] + ["fsn"])
    rng = np.random.default_rng(args.seed)
    xs, ys, dips, brains, srcs = [], [], [], [], []
    t0 = time.time()
    for i in range(args.n):
        for source in sources:
            case = get_case(source, args.split, i, backgrounds)
            if case is None or case["polarity"] != "dark":
                continue
            s = case_samples(case, args.top_k, args.hard, args.easy, rng)
            xs.append(s["x"])
            ys.append(s["y"])
            dips.append(s["dip"])
            brains += [BRAIN_OF[source]] * len(s["y"])
            srcs += [source] * len(s["y"])
            print(f"{source} {i}: {len(s['y'])} patches, {int(s['y'].sum())} positive, candidates "
                  f"{s['n_cands']}, CMBs found {s['found']}/{s['n_ref']}  {time.time() - t0:.0f}s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, x=np.concatenate(xs), y=np.concatenate(ys), dip=np.concatenate(dips),
             brain=np.array(brains), source=np.array(srcs))


def augment(x: np.ndarray, rng) -> np.ndarray:
    """Random in-plane flips and 90-degree turns, plane order reversed, intensity x 0.8-1.25."""
    if rng.random() < 0.5:
        x = x[:, :, ::-1]
    if rng.random() < 0.5:
        x = x[:, :, :, ::-1]
    if rng.random() < 0.5:
        x = np.swapaxes(x, 2, 3)
    if rng.random() < 0.5:
        x = x[:, ::-1]
    return np.ascontiguousarray(x) * rng.uniform(0.8, 1.25, size=(len(x), 1, 1, 1)).astype(np.float32)


def train(args) -> None:
    import torch

    from CMBLib.detection.patch_net import build_network, save_patch_net

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    files = sorted(f for pattern in args.data for f in glob.glob(pattern))
    parts = [np.load(f) for f in files]
    brain = np.concatenate([p["brain"] for p in parts])
    keep = brain != args.exclude_brain if args.exclude_brain else np.ones(len(brain), bool)
    x = np.concatenate([p["x"] for p in parts])[keep]
    y = np.concatenate([p["y"] for p in parts])[keep].astype(np.float32)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    print(f"{len(files)} files, {len(y)} patches ({len(pos)} positive), brains left out: {args.exclude_brain}",
          flush=True)
    device = torch.device(args.device)
    net = build_network(args.width).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * (len(neg) // (args.batch // 2))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=max(steps, 1))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    t0, step, log = time.time(), 0, []
    for epoch in range(args.epochs):
        net.train()
        order = rng.permutation(neg)
        losses = []
        for s in range(0, len(order) - args.batch // 2 + 1, args.batch // 2):
            idx = np.concatenate([order[s:s + args.batch // 2], rng.choice(pos, args.batch // 2)])
            xb = torch.from_numpy(augment(x[idx].astype(np.float32), rng)).to(device)
            yb = torch.from_numpy(y[idx]).to(device)
            loss = loss_fn(net(xb)[:, 0], yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
        log.append({"epoch": epoch, "loss": float(np.mean(losses)), "seconds": time.time() - t0})
        print(json.dumps(log[-1]), flush=True)
    save_patch_net(net.cpu(), args.out, {"width": args.width, "epochs": args.epochs, "lr": args.lr, "seed": args.seed,
                                    "data": [Path(f).name for f in files], "exclude_brain": args.exclude_brain,
                                    "patches": int(len(y)), "positives": int(len(pos)), "log": log})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    p = sub.add_parser("patches")
    p.add_argument("--split", default="train")
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--sources", default="clin,t2s,clin_small")
    p.add_argument("--top-k", type=int, default=3000)
    p.add_argument("--hard", type=int, default=400)
    p.add_argument("--easy", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    t = sub.add_parser("train")
    t.add_argument("--data", nargs="+", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--exclude-brain", default=None, choices=(None, "qsm", "fs"))
    t.add_argument("--epochs", type=int, default=6)
    t.add_argument("--batch", type=int, default=256)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--width", type=int, default=16)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", help="cpu or cuda (the same batches and augmentation)")
    args = ap.parse_args(argv)
    (make_patches if args.step == "patches" else train)(args)


if __name__ == "__main__":
    main()
