"""Fine-tune a detection model on a site's own annotated studies ("learn from the rater").

    python -m training.finetune DATASET [DATASET ...] --out MODEL_DIR [--minutes 8]
    python -m CMBLib.detection.finetune ...          (the same; what Slicer runs)

The core lives in CMBLib (like the rest of `CMBLib.detection`, it needs torch) so that the
installed Slicer extension can run it; ``training/finetune.py`` is a thin entry point.

What it does, in order (every step within ``--minutes`` of wall time, preprocessing and
validation included):

1. reads the datasets (`finetune_data`: confirmed / rater-drawn findings are CMBs,
   rejected findings and mimic landmarks hard negatives, proposed findings unknown);
   refuses too few CMBs;
2. splits by subject into fine-tuning and validation studies;
3. scores the parent model on the validation studies (the same pipeline as `cmb detect`,
   VALDO rule, 5 mm), at its shipped threshold and at the best threshold on validation;
4. trains from the parent's weights on patches (CMB / hard negative / background),
   low learning rate, batch-norm statistics frozen, flips and mild intensity changes only
   (the site's contrast is kept), validating now and then and keeping the best state;
5. writes the model folder: the best fine-tuned state when it beats the parent *as
   shipped* on validation (higher F1, or equal F1 with fewer false positives), with the
   threshold chosen on validation among those with no more FP/scan than the parent; else
   the parent's weights and threshold unchanged (the card says so).  The folder is built
   under a temporary name and renamed at the end: an interrupted run leaves no
   half-written model.  A checkpoint in a work folder lets a rerun of the same command
   continue where it stopped.

``--progress-json`` prints one JSON object per line on stdout (see docs/finetuning.md).
"""
import argparse
import copy
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import CMBError

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
MIN_CMBS = 3
SMALL_VALIDATION = (5, 20)  # fewer validation studies or CMBs than this: figures are anecdotal
DEFAULTS = {"lr": 1e-4, "batch_size": 4, "sampling": {"cmb": 0.4, "negative": 0.3, "background": 0.3},
            "intensity": 0.05, "noise": 0.02, "val_rounds": 4}
RULE = {"rule": "valdo", "distance_mm": 5.0}


# --- output ------------------------------------------------------------------------------
class Reporter:
    """Human lines on stderr, or JSON lines on stdout (``--progress-json``) for a GUI."""

    def __init__(self, as_json: bool = False, quiet: bool = False):
        self.as_json, self.quiet = as_json, quiet

    def emit(self, event: str, text: str = "", **fields):
        if self.as_json:
            sys.stdout.write(json.dumps({"event": event, **fields}, default=_plain) + "\n")
            sys.stdout.flush()
        elif text and not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def progress(self, fraction: float, message: str):
        """Fraction done (JSON only: the human lines are the start / train / val / done ones)."""
        self.emit("progress", "", progress=round(float(fraction), 4), message=message)


def _plain(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (np.ndarray, Path)):
        return o.tolist() if isinstance(o, np.ndarray) else str(o)
    raise TypeError(type(o).__name__)


# --- cases on the model grid ----------------------------------------------------------------
def prepare_case(study, meta: dict, with_native: bool = False) -> dict:
    """Arrays on the model grid ([k, j, i]) for training and scoring one LabelledStudy."""
    from .preprocess import preprocess, resample_to

    pre = preprocess(study.image, tuple(meta["spacing_mm"]), polarity=study.polarity)
    grid, shape = pre.grid, pre.grid.shape_ijk
    img = study.image
    pos = (study.positives > 0).astype(np.uint8)
    frac = resample_to(img.with_array(pos.astype(np.float32)), grid, shape, order=1)
    # partial volume: a voxel a quarter covered is CMB; nearest neighbour keeps CMBs thinner than a voxel
    target = (frac >= 0.25) | (resample_to(img.with_array(pos), grid, shape, order=0) > 0)
    ignore = resample_to(img.with_array(study.ignore.astype(np.float32)), grid, shape, order=1) > 0
    ignore &= ~target
    neg = []
    for p in study.negatives_ras:
        kji = np.rint(grid.ras_to_voxel(p)[::-1]).astype(int)
        if np.all(kji >= 0) and np.all(kji < pre.array.shape):
            neg.append(kji)
    from scipy import ndimage as ndi

    far = ~ndi.binary_dilation(ignore | target, iterations=3)
    rng = np.random.default_rng(0)
    bg = np.argwhere(pre.brain_mask & far)
    if len(bg) > 20000:
        bg = bg[rng.choice(len(bg), 20000, replace=False)]
    case = {"key": study.key, "subject": study.subject, "image": pre.array.astype(np.float32),
            "target": target.astype(np.uint8), "weight": (~ignore).astype(np.float32),
            "cmb_idx": np.argwhere(target), "neg_idx": np.asarray(neg, int).reshape(-1, 3), "bg_idx": bg,
            "n_cmbs": study.n_cmbs}
    if with_native:
        case.update(pre=pre, ref=img.with_array(study.positives), ignore_native=study.ignore,
                    polarity=study.polarity)
    return case


def _patch(a: np.ndarray, start, size, fill):
    pad = [(max(0, -s), max(0, s + n - d)) for s, n, d in zip(start, size, a.shape)]
    sl = tuple(slice(max(0, s), min(d, s + n)) for s, n, d in zip(start, size, a.shape))
    return np.pad(a[sl], pad, constant_values=fill)


def sample_batch(cases: list, patch_kji, rng, batch_size: int, sampling: dict, intensity: float, noise: float):
    """(x (B,1,k,j,i) float32, y (B,1,...) int64, w (B,1,...) float32, kinds)."""
    kinds = list(sampling)
    p = np.asarray([sampling[k] for k in kinds], float)
    xs, ys, ws, used = [], [], [], []
    size = np.asarray(patch_kji, int)
    for _ in range(batch_size):
        case = cases[int(rng.integers(len(cases)))]
        kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
        pts = {"cmb": case["cmb_idx"], "negative": case["neg_idx"], "background": case["bg_idx"]}
        if not len(pts.get(kind, [])):
            kind = "background" if len(case["bg_idx"]) else "random"
        if kind == "random":
            centre = np.array([rng.integers(0, d) for d in case["image"].shape])
        else:
            centre = pts[kind][int(rng.integers(len(pts[kind])))]
        margin = np.minimum(8, size // 4)
        start = centre - np.array([rng.integers(m, n - m) for m, n in zip(margin, size)])
        x = _patch(case["image"], start, size, float(case["image"].min()))
        y = _patch(case["target"], start, size, 0)
        w = _patch(case["weight"], start, size, 1.0)
        for ax in (1, 2):  # in-plane flips; the slice axis keeps its orientation
            if rng.random() < 0.5:
                x, y, w = np.flip(x, ax), np.flip(y, ax), np.flip(w, ax)
        x = x * (1 + rng.uniform(-intensity, intensity)) + rng.uniform(-intensity, intensity)
        if noise:
            x = x + rng.normal(0, rng.uniform(0, noise), x.shape)
        xs.append(np.ascontiguousarray(x, np.float32))
        ys.append(np.ascontiguousarray(y, np.int64))
        ws.append(np.ascontiguousarray(w, np.float32))
        used.append(kind)
    return np.stack(xs)[:, None], np.stack(ys)[:, None], np.stack(ws)[:, None], used


def masked_loss(logits, target, weight, **params):
    """The parent's loss (CMBLib.detection.losses), voxels of weight 0 (unknown findings) left out."""
    from .losses import focal_tversky_ce

    params = {k: v for k, v in params.items() if k != "name"}  # a training config may name the loss
    return focal_tversky_ce(logits, target, weight, **params)


# --- scoring -----------------------------------------------------------------------------------
def score_studies(network, meta: dict, cases: list, device: str = "cpu", thresholds=THRESHOLDS) -> list[dict]:
    """Pooled TP / FP / FN per threshold over `cases` (with native grids), through the same
    steps as `cmb detect` (flip averaging, window, size limits, brain mask), VALDO rule 5 mm;
    unknown findings' regions are blanked first (they count neither way).  A model with a
    second stage (candidate classifier) is scored with it, as `cmb detect` runs it."""
    from ..metrics import evaluate_case
    from .candidates import find_candidates
    from .inference import predict_probability
    from .pipeline import apply_second_stage, stages

    network.eval()
    overlap = float(meta.get("inference_overlap", 0.125))
    counts = [{"tp": 0, "fp": 0, "fn": 0} for _ in thresholds]
    for case in cases:
        stage2, case_meta = stages(meta, case.get("polarity", "dark"))
        min_d = float(case_meta.get("min_diameter_mm", 2.0))
        max_d = float(case_meta.get("max_diameter_mm", 10.0))
        pre = case["pre"]
        window = meta.get("inference_patch_size") or meta["patch_size"]
        prob, _ = predict_probability(network, pre.array, window, device=device, overlap=overlap,
                                      mask=pre.brain_mask, flip_average=bool(meta.get("flip_average", False)))
        prob[~pre.brain_mask] = 0.0
        native = np.clip(pre.to_native(prob, order=1), 0.0, 1.0).astype(np.float32)
        native[case["ignore_native"]] = 0.0
        brain = pre.to_native(pre.brain_mask.astype(np.uint8), order=0) > 0
        vol = case["ref"].with_array(native)
        for c, t in zip(counts, thresholds):
            labels, records, _ = find_candidates(vol, t, min_d, max_d, brain_mask=brain)
            if stage2 is not None and records:
                from .second_stage import candidate_features

                feats = candidate_features(pre.array, prob, pre.brain_mask, pre.grid, records)
                labels, records, _ = apply_second_stage(stage2, feats, labels, records)
            r = evaluate_case(case["ref"].with_array(labels), case["ref"], rule=RULE["rule"],
                              distance_mm=RULE["distance_mm"])
            c["tp"] += r.tp
            c["fp"] += r.fp
            c["fn"] += r.fn
    n = max(1, len(cases))
    rows = []
    for c, t in zip(counts, thresholds):
        tp, fp, fn = c["tp"], c["fp"], c["fn"]
        rows.append({"threshold": float(t), "tp": tp, "fp": fp, "fn": fn,
                     "sensitivity": tp / (tp + fn) if tp + fn else None,
                     "precision": tp / (tp + fp) if tp + fp else None,
                     "f1": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else None,
                     "fp_per_scan": fp / n})
    return rows


def best_threshold(rows: list[dict], max_fp_per_scan=None) -> dict:
    """Highest F1 (None counts as 0); ties: fewer FP, then the higher threshold.  Only rows
    with FP/scan <= `max_fp_per_scan` when any qualifies."""
    ok = [r for r in rows if max_fp_per_scan is None or r["fp_per_scan"] <= max_fp_per_scan + 1e-9] or rows
    return max(ok, key=lambda r: (r["f1"] or 0.0, -r["fp"], r["threshold"]))


def row_at(rows: list[dict], threshold: float) -> dict:
    return min(rows, key=lambda r: abs(r["threshold"] - float(threshold)))


def beats(new: dict, old: dict) -> bool:
    """True when `new` is better than `old`: higher F1, or equal F1 with fewer FP."""
    a, b = new["f1"] or 0.0, old["f1"] or 0.0
    return a > b + 1e-9 or (abs(a - b) <= 1e-9 and new["fp"] < old["fp"])


# --- the run ------------------------------------------------------------------------------------
def _run_key(args, parent_sha: str) -> str:
    text = json.dumps({"data": [str(Path(d).resolve()) for d in args.datasets], "parent": parent_sha,
                       "seed": args.seed, "val": args.val_fraction, "pos": args.positives}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def work_folder(out: Path, work=None) -> Path:
    return Path(work) if work else out.parent / f".{out.name}.finetune-work"


def finetune(args, rep: Reporter) -> dict:
    import torch

    from .finetune_data import load_dataset, split_subjects
    from .inference import select_device
    from .model_io import read_metadata, sha256_file
    from .registry import resolve, user_models_dir

    t_start = time.time()
    out = Path(args.out).expanduser() if args.out else user_models_dir(args.models_dir) / args.name
    if out.exists() and not args.overwrite:
        raise CMBError(f"--out {out}: exists; not overwritten (choose another folder or add --overwrite)")
    init = "default" if args.init in (None, "", "bundled", "default") else args.init
    parent_dir = resolve(init, args.models_dir)
    parent_meta = dict(read_metadata(parent_dir), path=str(parent_dir))  # path: where its second stage lies
    parent_sha = sha256_file(parent_dir / "weights.npz")
    if args.threads:
        torch.set_num_threads(max(1, int(args.threads)))
    device = select_device(args.device)

    # 1. data
    rep.progress(0.0, "reading the datasets")
    studies, datasets = [], []
    for d in args.datasets:
        layout, items = load_dataset(d, args.positives)
        datasets.append({"path": str(Path(d).resolve()), "layout": layout, "n_studies": len(items),
                         "n_cmbs": sum(s.n_cmbs for s in items)})
        studies += items
    n_cmbs = sum(s.n_cmbs for s in studies)
    if n_cmbs < args.min_cmbs:
        what = "confirmed or rater-drawn" if args.positives == "rater" else "confirmed"
        raise CMBError(f"only {n_cmbs} {what} CMB{'s' if n_cmbs != 1 else ''} in {len(studies)} studies; "
                       f"fine-tuning needs at least {args.min_cmbs} (annotate more studies)")
    work = work_folder(out, args.work)
    key = _run_key(args, parent_sha)
    ckpt_path = work / "checkpoint.pt"
    state = None
    if ckpt_path.is_file() and not args.restart:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if state.get("key") != key:
            raise CMBError(f"{work}: holds an interrupted run of other data or settings; remove it or add --restart")
    train_subj, val_subj = split_subjects(studies, args.val_fraction, args.seed,
                                          state["val_subjects"] if state else None)
    train_studies = [s for s in studies if s.subject in set(train_subj)]
    val_studies = [s for s in studies if s.subject in set(val_subj)]
    n_train_cmbs = sum(s.n_cmbs for s in train_studies)
    if n_train_cmbs == 0:
        raise CMBError("no CMB is left in the fine-tuning studies after the validation split; annotate more studies")
    for ds in datasets:
        ds["n_train"] = sum(1 for s in train_studies if str(Path(s.dataset).resolve()) == ds["path"])
        ds["n_val"] = ds["n_studies"] - ds["n_train"]
    warnings = []
    n_val_cmbs = sum(s.n_cmbs for s in val_studies)
    if len(val_studies) < SMALL_VALIDATION[0] or n_val_cmbs < SMALL_VALIDATION[1]:
        warnings.append(f"validation is small ({len(val_studies)} studies, {n_val_cmbs} CMBs): its figures are "
                        "anecdotal and may not hold for your next studies; check the model on studies of your own "
                        "before relying on it")
    rep.emit("start", f"{len(train_studies)} fine-tuning studies ({n_train_cmbs} CMBs), {len(val_studies)} "
             f"validation studies ({n_val_cmbs} CMBs); parent {parent_meta['name']} {parent_meta['version']}; "
             f"device {device}", train=train_subj, val=val_subj, n_cmbs_train=n_train_cmbs, n_cmbs_val=n_val_cmbs,
             parent=parent_meta["name"], device=device, budget_s=60 * args.minutes, resumed=state is not None)
    for w in warnings:
        rep.emit("warning", f"warning: {w}", message=w)

    def elapsed():
        return time.time() - t_start + (state["elapsed_s"] if state else 0.0)

    budget = 60.0 * float(args.minutes)
    cases = []
    for i, s in enumerate(train_studies + val_studies):
        rep.progress(0.02 + 0.08 * i / len(studies), f"preprocessing {s.subject}")
        cases.append(prepare_case(s, parent_meta, with_native=i >= len(train_studies)))
    train_cases, val_cases = cases[:len(train_studies)], cases[len(train_studies):]
    del studies, train_studies, val_studies

    # 2. the parent on the validation studies
    from .model_io import load_model

    parent_net, parent_loaded = load_model(parent_dir, device=device)
    t = time.time()
    thresholds = tuple(sorted(set(THRESHOLDS) | {float(parent_meta.get("threshold", 0.5))}))
    parent_rows = state["parent_rows"] if state else score_studies(parent_net, parent_meta, val_cases, device,
                                                                   thresholds)
    t_val = max(1.0, time.time() - t) if not state else state.get("t_val", 10.0)
    p_ship = row_at(parent_rows, parent_meta.get("threshold", 0.5))
    p_best = best_threshold(parent_rows)
    rep.emit("val", f"parent on validation: F1 {_f(p_ship['f1'])}, {p_ship['fp_per_scan']:.2f} FP/scan at its "
             f"threshold {p_ship['threshold']}", model="parent", step=0, elapsed_s=round(elapsed(), 1),
             **{k: p_ship[k] for k in ("threshold", "f1", "sensitivity", "precision", "fp_per_scan", "tp", "fp", "fn")})

    # 3. training
    network = parent_net
    network.train()
    for m in network.modules():  # frozen batch-norm statistics: few, skewed patches would distort them
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    opt = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-5)
    loss_params = dict((parent_meta.get("training") or {}).get("loss") or {})
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    step, best, history = 0, None, []
    if state:
        network.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, best, history = state["step"], state["best"], state["history"]
        rng.bit_generator.state = state["rng"]
        rep.emit("resume", f"resumed from {ckpt_path} at step {step}", step=step)
    reserve = t_val + 20.0                      # final validation + writing
    # validations during training take at most a quarter of the training time (plus one at the end)
    train_time = max(0.0, budget - elapsed() - reserve)
    rounds = max(0, min(int(args.val_rounds), int(0.25 * train_time / t_val)))
    val_every = train_time / (rounds + 1) if rounds else float("inf")
    next_val = elapsed() + val_every
    last_ckpt = time.time()
    patch_kji = [int(p) for p in parent_meta["patch_size"]][::-1]
    losses = []

    def validate():
        nonlocal best
        rows = score_studies(network, parent_meta, val_cases, device, thresholds)
        network.train()
        for m in network.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        row = best_threshold(rows, max_fp_per_scan=p_ship["fp_per_scan"])
        history.append({"step": step, **row})
        rep.emit("val", f"step {step}: validation F1 {_f(row['f1'])}, {row['fp_per_scan']:.2f} FP/scan at "
                 f"threshold {row['threshold']}", model="finetuned", step=step, elapsed_s=round(elapsed(), 1),
                 **{k: row[k] for k in ("threshold", "f1", "sensitivity", "precision", "fp_per_scan", "tp", "fp",
                                        "fn")})
        if best is None or beats(row, best["row"]):
            best = {"step": step, "row": row, "rows": rows,
                    "model": {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}}

    def save_checkpoint():
        work.mkdir(parents=True, exist_ok=True)
        tmp = work / "checkpoint.tmp"
        torch.save({"key": key, "model": network.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "best": best, "history": history, "rng": rng.bit_generator.state, "val_subjects": val_subj,
                    "parent_rows": parent_rows, "t_val": t_val, "elapsed_s": elapsed()}, tmp)
        os.replace(tmp, ckpt_path)

    try:
        while elapsed() < budget - reserve and (not args.max_steps or step < args.max_steps):
            x, y, w, _ = sample_batch(train_cases, patch_kji, rng, args.batch_size, DEFAULTS["sampling"],
                                      DEFAULTS["intensity"], DEFAULTS["noise"])
            frac = min(1.0, elapsed() / max(1.0, budget - reserve))
            lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac)))
            for g in opt.param_groups:
                g["lr"] = lr
            logits = network(torch.from_numpy(x).to(device))
            loss = masked_loss(logits, torch.from_numpy(y).to(device), torch.from_numpy(w).to(device),
                               **loss_params)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            if step % 10 == 0:
                rep.emit("train", f"step {step} loss {np.mean(losses):.4f} lr {lr:.1e} {elapsed():.0f}s", step=step,
                         loss=round(float(np.mean(losses)), 5), lr=lr, elapsed_s=round(elapsed(), 1))
                rep.progress(0.1 + 0.85 * min(1.0, elapsed() / budget), f"training step {step}")
                losses = []
            if elapsed() >= next_val:
                validate()
                next_val += val_every
            if time.time() - last_ckpt > 60:
                save_checkpoint()
                last_ckpt = time.time()
        if step and (not history or history[-1]["step"] != step):
            validate()
    except KeyboardInterrupt:
        save_checkpoint()
        rep.emit("interrupted", f"interrupted at step {step}; rerun the same command to continue "
                 f"(checkpoint {ckpt_path})", step=step, checkpoint=str(ckpt_path))
        raise

    # 4. decide and write
    if step < 50 and not args.max_steps:
        warnings.append(f"only {step} training steps fitted in {args.minutes:g} minutes after preprocessing and "
                        "validation; give it more --minutes")
        rep.emit("warning", f"warning: {warnings[-1]}", message=warnings[-1])
    accepted = best is not None and beats(best["row"], p_ship)
    if accepted:
        network.load_state_dict(best["model"])
        threshold = best["row"]["threshold"]
        outcome = (f"fine-tuned weights of step {best['step']} kept: validation F1 {_f(best['row']['f1'])} vs the "
                   f"parent's {_f(p_ship['f1'])}, FP/scan {best['row']['fp_per_scan']:.2f} vs "
                   f"{p_ship['fp_per_scan']:.2f}")
        if parent_meta.get("second_stage"):
            warnings.append("the parent's candidate classifier (its opt-in second stage) is left out: it was trained "
                            "on the parent's candidates; train one for the new weights with "
                            "python -m training.train_second_stage")
            rep.emit("warning", f"warning: {warnings[-1]}", message=warnings[-1])
    else:
        network.load_state_dict(parent_net_state(parent_dir, device))
        threshold = float(parent_meta.get("threshold", 0.5))
        outcome = ("no fine-tuned state beat the parent on validation (higher F1, or equal F1 with fewer false "
                   "positives): this folder holds the parent's weights and threshold unchanged")
        warnings.append("fine-tuning did not improve on the parent on the validation studies; the parent is kept")
    result = {"accepted": accepted, "outcome": outcome, "threshold": threshold, "steps": step,
              "wall_s": round(elapsed(), 1), "parent_rows": parent_rows, "parent_shipped": p_ship,
              "parent_best": p_best, "best": {k: v for k, v in (best or {}).items() if k != "model"},
              "history": history, "warnings": warnings, "datasets": datasets, "train": train_subj, "val": val_subj,
              "n_cmbs_train": n_train_cmbs, "n_cmbs_val": n_val_cmbs, "device": device,
              "parent_dir": str(parent_dir), "parent_sha": parent_sha}
    meta = model_metadata(parent_meta, args, result)
    write_model_folder(network, meta, parent_dir, out, model_card(meta, result), overwrite=args.overwrite)
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    rep.emit("done", f"{outcome}\nmodel written to {out} (use: cmb detect --model {out} ...)", model_dir=str(out),
             accepted=accepted, threshold=threshold, steps=step, elapsed_s=round(elapsed(), 1))
    return result


def parent_net_state(parent_dir, device):
    from .model_io import load_model

    net, _ = load_model(parent_dir, device=device)
    return net.state_dict()


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def model_metadata(parent_meta: dict, args, r: dict) -> dict:
    """model.json of the new model: the parent's entries copied through, then what changed.
    New weights leave out the parent's second stage (a classifier of the parent's candidates)."""
    dropped = ("path", "sha256", "default") + (("second_stage",) if r["accepted"] else ())
    meta = {k: copy.deepcopy(v) for k, v in parent_meta.items() if k not in dropped}
    stamp = time.strftime("%Y%m%d%H%M", time.gmtime())
    meta.update({
        "name": args.name or Path(args.out).name,
        "version": f"{parent_meta.get('version', '0')}+ft.{stamp}",
        "threshold": r["threshold"],
        "parent": {"name": parent_meta.get("name"), "version": parent_meta.get("version"),
                   "sha256": r["parent_sha"], "path": r["parent_dir"]},
        "training_datasets": r["datasets"],
        "training_data": (f"{parent_meta.get('name')} {parent_meta.get('version')} fine-tuned on "
                          f"{sum(d['n_studies'] for d in r['datasets'])} annotated studies "
                          f"({r['n_cmbs_train']} CMBs in {len(r['train'])} fine-tuning subjects) of "
                          + ", ".join(d["path"] for d in r["datasets"])) if r["accepted"] else
        parent_meta.get("training_data", ""),
        "metrics": {"rule": "valdo, 5 mm", "threshold": r["threshold"],
                    "validation": {"n_cases": len(r["val"]), "n_cmbs": r["n_cmbs_val"],
                                   **_counts_only(row_at(r["best"]["rows"], r["threshold"]) if r["accepted"]
                                                  else r["parent_shipped"])},
                    "parent_validation": {"n_cases": len(r["val"]), **_counts_only(r["parent_shipped"])}},
        "finetune": {
            "outcome": r["outcome"], "accepted": r["accepted"], "steps": r["steps"], "wall_s": r["wall_s"],
            "minutes": args.minutes, "device": r["device"], "lr": args.lr, "batch_size": args.batch_size,
            "seed": args.seed, "val_fraction": args.val_fraction, "positives": args.positives,
            "train_subjects": r["train"], "val_subjects": r["val"], "warnings": r["warnings"],
            "validation": {"n_studies": len(r["val"]), "n_cmbs": r["n_cmbs_val"],
                           "model": row_at(r["best"]["rows"], r["threshold"]) if r["accepted"] else r["parent_shipped"],
                           "parent_shipped": r["parent_shipped"], "parent_best": r["parent_best"]},
            "history": r["history"]},
    })
    return meta


def _counts_only(row: dict) -> dict:
    return {k: row[k] for k in ("threshold", "tp", "fp", "fn", "sensitivity", "precision", "f1", "fp_per_scan")}


def write_model_folder(network, meta: dict, parent_dir: Path, out: Path, card: str, overwrite: bool = False) -> Path:
    """Build the model folder under a temporary name beside `out`, then rename it into place.

    Files of the parent folder other than the weights, model.json and its card are copied
    through, except the parent's second-stage classifier when `meta` has none.
    """
    from ..io import honour_umask, write_text_atomic
    from .model_io import METADATA_FILE, WEIGHTS_FILE, read_metadata, save_model

    skip = {WEIGHTS_FILE, METADATA_FILE, "README.md"}
    parent_stage2 = read_metadata(parent_dir).get("second_stage") or {}
    if parent_stage2.get("file") and not meta.get("second_stage"):
        skip.add(parent_stage2["file"])

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=str(out.parent)))
    try:
        for f in sorted(Path(parent_dir).iterdir()):
            if f.is_file() and f.name not in skip and not f.name.startswith("."):
                shutil.copy2(f, tmp / f.name)
        save_model(network, meta, tmp)
        write_text_atomic(tmp / "README.md", card)
        for f in [*tmp.iterdir(), tmp]:  # temporary files are private; the model is shared like any file
            honour_umask(f)
        if out.exists():
            if not overwrite:
                raise CMBError(f"--out {out}: appeared while training; not overwritten")
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def model_card(meta: dict, r: dict) -> str:
    """README.md of the fine-tuned model: what, from what, both models' figures side by side."""
    ft = meta["finetune"]
    mine = ft["validation"]["model"]
    parent = meta["parent"]
    lines = [f"# {meta['name']} {meta['version']} — model card", "",
             f"**What it is.** {parent['name']} {parent['version']} (sha256 `{parent['sha256']}`) fine-tuned on "
             f"this site's annotated studies with `python -m training.finetune` "
             f"({ft['steps']} steps, {ft['wall_s']:.0f} s on {ft['device']}, learning rate {ft['lr']:g}, "
             f"batch-norm statistics frozen).", "",
             f"**Outcome.** {ft['outcome']}.", ""]
    for w in ft["warnings"]:
        lines += [f"> **Warning:** {w}.", ""]
    lines += ["**Training data.**", ""]
    for d in meta["training_datasets"]:
        lines.append(f"* `{d['path']}` ({d['layout']} layout): {d['n_studies']} studies, {d['n_cmbs']} CMBs; "
                     f"{d['n_train']} for fine-tuning, {d['n_val']} for validation")
    lines += ["", f"Fine-tuning subjects: {', '.join(ft['train_subjects'])}.  Validation subjects (never trained "
              f"on): {', '.join(ft['val_subjects'])}.  CMBs are the confirmed findings"
              + (" and the ones drawn by the rater and not yet reviewed" if ft["positives"] == "rater" else "")
              + "; rejected findings and mimic landmarks were sampled as hard negatives; detector proposals "
              "nobody reviewed were left out.", "",
              f"**Validation** ({ft['validation']['n_studies']} studies, {ft['validation']['n_cmbs']} CMBs; "
              "VALDO rule, 5 mm; the same steps as `cmb detect`; the threshold of this model was chosen on "
              "these studies, so its figures are optimistic):", "",
              "| model | threshold | TP | FP | FN | sensitivity | precision | F1 | FP/scan |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, row in ((f"this model ({meta['name']})", mine),
                      (f"parent as shipped ({parent['name']})", ft["validation"]["parent_shipped"]),
                      ("parent, threshold re-chosen on validation", ft["validation"]["parent_best"])):
        lines.append(f"| {name} | {row['threshold']} | {row['tp']} | {row['fp']} | {row['fn']} | "
                     f"{_f(row['sensitivity'])} | {_f(row['precision'])} | {_f(row['f1'])} | "
                     f"{row['fp_per_scan']:.2f} |")
    lines += ["", "**Use.** `cmb detect --model <this folder or its name> IMAGE --out DIR`.  To revert, delete "
              "this folder; the bundled model was not changed.", ""]
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.finetune",
                                description="Fine-tune a CMB detection model on annotated studies (the "
                                            "annotator's export or VALDO layout) and write a new model folder.")
    p.add_argument("datasets", nargs="+", metavar="DATASET", help="exported dataset folder(s)")
    p.add_argument("--out", metavar="MODEL_DIR",
                   help="new model folder (default: <user models folder>/<--name>); never overwritten silently")
    p.add_argument("--name", default=None, help="model name (default: the --out folder's name, else "
                                                 "cmb-finetuned-<date>)")
    p.add_argument("--minutes", type=float, default=8.0, help="wall-time budget, everything included (default 8)")
    p.add_argument("--init", default="bundled", metavar="bundled|MODEL",
                   help="parent model: bundled (default), a model name or a model folder")
    p.add_argument("--val-fraction", type=float, default=0.25, help="share of subjects kept for validation")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="learning rate (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--val-rounds", type=int, default=DEFAULTS["val_rounds"],
                   help="validations during training (default 4, plus one at the end)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: the time budget)")
    p.add_argument("--min-cmbs", type=int, default=MIN_CMBS, help=f"refuse fewer CMBs (default {MIN_CMBS})")
    p.add_argument("--positives", choices=["rater", "confirmed"], default="rater",
                   help="rater (default): confirmed findings and rater-drawn ones not yet reviewed are CMBs; "
                        "confirmed: only confirmed findings")
    p.add_argument("--models-dir", default=None, help="user models folder (default $CMB_MODELS_DIR or ~/.cmb/models)")
    p.add_argument("--work", default=None, help="work folder for the resumable checkpoint "
                                               "(default: .<out name>.finetune-work beside --out)")
    p.add_argument("--restart", action="store_true", help="ignore an interrupted run's checkpoint")
    p.add_argument("--keep-work", action="store_true", help="keep the work folder after success")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--progress-json", action="store_true", help="JSON lines on stdout (for Slicer)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.name:
        args.name = Path(args.out).name if args.out else time.strftime("cmb-finetuned-%Y%m%d-%H%M", time.gmtime())
    rep = Reporter(args.progress_json, args.quiet)

    def on_term(signum, frame):  # Cancel from a GUI (QProcess.terminate): checkpoint, then stop
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        pass
    try:
        finetune(args, rep)
    except CMBError as exc:
        rep.emit("error", message=str(exc))
        print(f"finetune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("finetune: cancelled; rerun the same command to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
