"""The fine-tuning run: read, split, score the parent, train, decide (the gate), write.

Every step counts against ``--minutes`` of wall time.  Progress goes through a `Reporter`
(human lines on stderr, or JSON lines on stdout for Slicer; docs/finetuning.md lists the
events).  A checkpoint in a work folder lets a rerun of the same command continue.
"""
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import CMBError
from . import finetune_batches as batches
from . import finetune_gate as gate
from .finetune_folder import candidate_meta, model_card, model_metadata, write_model_folder

MIN_CMBS = 3
SMALL_VALIDATION = (5, 20)  # fewer validation studies or CMBs than this: figures are anecdotal
DEFAULTS = {"lr": 1e-4, "batch_size": 4, "sampling": {"cmb": 0.4, "negative": 0.3, "background": 0.3},
            "intensity": 0.05, "noise": 0.02, "val_rounds": 4, "val_fraction": 0.25, "test_fraction": 0.25}
CHECKPOINT_FORMAT = 2   # 2: three splits, validation through `detect` (older checkpoints are not resumed)


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

    def row(self, event: str, text: str, row: dict, **fields):
        """A "val" or "test" event: one model's figures at one threshold."""
        self.emit(event, text, **fields, **{k: row[k] for k in gate.ROW_FIELDS})


def _plain(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (np.ndarray, Path)):
        return o.tolist() if isinstance(o, np.ndarray) else str(o)
    raise TypeError(type(o).__name__)


def _run_key(args, parent_sha: str) -> str:
    text = json.dumps({"data": [str(Path(d).resolve()) for d in args.datasets], "parent": parent_sha,
                       "seed": args.seed, "val": args.val_fraction, "test": args.test_fraction,
                       "pos": args.positives, "format": CHECKPOINT_FORMAT}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def work_folder(out: Path, work=None) -> Path:
    return Path(work) if work else out.parent / f".{out.name}.finetune-work"


def read_datasets(args):
    """(studies, dataset summaries); CMBError with too few CMBs."""
    from .finetune_data import load_dataset

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
    return studies, datasets


def _freeze_batch_norm(network, torch) -> None:
    """Training mode with frozen batch-norm statistics: few, skewed patches would distort them."""
    network.train()
    for m in network.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def finetune(args, rep: Reporter) -> dict:
    import torch

    from .finetune_data import split_subjects
    from .inference import select_device
    from .model_io import WEIGHTS_FILE, load_model, read_metadata, sha256_file
    from .registry import resolve, user_models_dir

    t_start = time.time()
    out = Path(args.out).expanduser() if args.out else user_models_dir(args.models_dir) / args.name
    if out.exists() and not args.overwrite:
        raise CMBError(f"--out {out}: exists; not overwritten (choose another folder or add --overwrite)")
    init = "default" if args.init in (None, "", "bundled", "default") else args.init
    parent_dir = resolve(init, args.models_dir)
    parent_meta = dict(read_metadata(parent_dir), path=str(parent_dir))  # path: where its second stage lies
    new_meta = candidate_meta(parent_meta)                                 # how new weights run (and are scored)
    parent_sha = sha256_file(parent_dir / WEIGHTS_FILE)
    if args.threads:
        torch.set_num_threads(max(1, int(args.threads)))
    device = select_device(args.device)

    # 1. data and the three splits (by subject)
    rep.progress(0.0, "reading the datasets")
    studies, datasets = read_datasets(args)
    work = work_folder(out, args.work)
    key = _run_key(args, parent_sha)
    ckpt_path = work / "checkpoint.pt"
    state = None
    if ckpt_path.is_file() and not args.restart:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if state.get("key") != key:
            raise CMBError(f"{work}: holds an interrupted run of other data or settings; remove it or add --restart")
    train_subj, val_subj, test_subj = split_subjects(
        studies, args.val_fraction, args.seed, (state["val_subjects"], state["test_subjects"]) if state else None,
        test_fraction=args.test_fraction)
    side = {s: "train" for s in train_subj}
    side.update({s: "val" for s in val_subj})
    side.update({s: "test" for s in test_subj})
    parts = {k: [s for s in studies if side[s.subject] == k] for k in ("train", "val", "test")}
    n_cmbs = {k: sum(s.n_cmbs for s in v) for k, v in parts.items()}
    if n_cmbs["train"] == 0:
        raise CMBError("no CMB is left in the fine-tuning studies after the validation split; annotate more studies")
    for ds in datasets:
        for k in ("train", "val", "test"):
            ds[f"n_{k}"] = sum(1 for s in parts[k] if str(Path(s.dataset).resolve()) == ds["path"])
    warnings = []
    if len(parts["val"]) < SMALL_VALIDATION[0] or n_cmbs["val"] < SMALL_VALIDATION[1]:
        warnings.append(f"validation is small ({len(parts['val'])} studies, {n_cmbs['val']} CMBs): its figures are "
                        "anecdotal and may not hold for your next studies; check the model on studies of your own "
                        "before relying on it")
    can_confirm = n_cmbs["test"] > 0
    if not can_confirm:
        warnings.append(f"not enough studies to judge: {len(set(side))} subjects leave no test study with a CMB to "
                        "confirm a better validation result on (3 subjects with CMBs at least, --test-fraction > 0); "
                        "the parent is kept" + (" unless the fine-tuned weights do better on validation "
                                                "(--accept-unconfirmed)" if args.accept_unconfirmed else ""))
    rep.emit("start", f"{len(parts['train'])} fine-tuning studies ({n_cmbs['train']} CMBs), {len(parts['val'])} "
             f"validation studies ({n_cmbs['val']} CMBs), {len(parts['test'])} test studies ({n_cmbs['test']} CMBs); "
             f"parent {parent_meta['name']} {parent_meta['version']}; device {device}", train=train_subj,
             val=val_subj, test=test_subj, n_cmbs_train=n_cmbs["train"], n_cmbs_val=n_cmbs["val"],
             n_cmbs_test=n_cmbs["test"], parent=parent_meta["name"], device=device, budget_s=60 * args.minutes,
             resumed=state is not None)
    for w in warnings:
        rep.emit("warning", f"warning: {w}", message=w)

    def elapsed():
        return time.time() - t_start + (state["elapsed_s"] if state else 0.0)

    def warn_new(before: int):
        for w in warnings[before:]:
            rep.emit("warning", f"warning: {w}", message=w)

    budget = 60.0 * float(args.minutes)
    train_cases = []
    for i, s in enumerate(parts["train"]):
        rep.progress(0.02 + 0.08 * i / len(parts["train"]), f"preprocessing {s.subject}")
        train_cases.append(batches.train_case(s, parent_meta))
    val_cases = [batches.eval_case(s) for s in parts["val"]]
    test_cases = [batches.eval_case(s) for s in parts["test"]]
    del studies, parts

    # 2. the parent on the validation studies, its threshold chosen by the rule every model gets
    parent_net, _ = load_model(parent_dir, device=device)
    parent_state = {k: v.detach().cpu().clone() for k, v in parent_net.state_dict().items()}
    t = time.time()
    thresholds = tuple(sorted(set(gate.THRESHOLDS) | {float(parent_meta.get("threshold", 0.5))}))
    n_warn = len(warnings)
    parent_rows = state["parent_rows"] if state else gate.score(parent_net, parent_meta, val_cases, device,
                                                                thresholds, warnings)
    warn_new(n_warn)
    t_val = max(1.0, time.time() - t) if not state else state.get("t_val", 10.0)
    p_ship = gate.row_at(parent_rows, parent_meta.get("threshold", 0.5))
    p_val = gate.choose_threshold(parent_rows)
    rep.row("val", f"parent on validation: {gate.figures(p_val)} (as shipped: {gate.figures(p_ship)})", p_val,
            model="parent", step=0, elapsed_s=round(elapsed(), 1), shipped_threshold=p_ship["threshold"],
            shipped_f1=p_ship["f1"], shipped_fp_per_scan=p_ship["fp_per_scan"])

    # 3. training
    network = parent_net
    _freeze_batch_norm(network, torch)
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
    # the end: a last validation, the confirmation (both models on the test studies) and writing
    t_test = 2.0 * t_val * len(test_cases) / max(1, len(val_cases)) if can_confirm else 0.0
    reserve = t_val + t_test + 20.0
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
        n = len(warnings)
        rows = gate.score(network, new_meta, val_cases, device, thresholds, warnings)
        warn_new(n)
        _freeze_batch_norm(network, torch)
        row = gate.choose_threshold(rows)
        history.append({"step": step, **row})
        rep.row("val", f"step {step}: validation {gate.figures(row)}", row, model="finetuned", step=step,
                elapsed_s=round(elapsed(), 1))
        if best is None or gate.beats(row, best["row"]):
            best = {"step": step, "row": row, "rows": rows,
                    "model": {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}}

    def save_checkpoint():
        work.mkdir(parents=True, exist_ok=True)
        tmp = work / "checkpoint.tmp"
        torch.save({"key": key, "model": network.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "best": best, "history": history, "rng": rng.bit_generator.state, "val_subjects": val_subj,
                    "test_subjects": test_subj, "parent_rows": parent_rows, "t_val": t_val,
                    "elapsed_s": elapsed()}, tmp)
        os.replace(tmp, ckpt_path)

    try:
        while elapsed() < budget - reserve and (not args.max_steps or step < args.max_steps):
            x, y, w, _ = batches.sample_batch(train_cases, patch_kji, rng, args.batch_size, DEFAULTS["sampling"],
                                              DEFAULTS["intensity"], DEFAULTS["noise"])
            frac = min(1.0, elapsed() / max(1.0, budget - reserve))
            lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac)))
            for g in opt.param_groups:
                g["lr"] = lr
            logits = network(torch.from_numpy(x).to(device))
            loss = batches.masked_loss(logits, torch.from_numpy(y).to(device), torch.from_numpy(w).to(device),
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

    # 4. the gate
    if step < 50 and not args.max_steps:
        warnings.append(f"only {step} training steps fitted in {args.minutes:g} minutes after preprocessing and "
                        "validation; give it more --minutes")
        rep.emit("warning", f"warning: {warnings[-1]}", message=warnings[-1])
    identical = best is not None and gate.same_weights(best["model"], parent_state)
    if best is not None:
        network.load_state_dict(best["model"])

    def confirm():
        """Both models on the test studies, each at its threshold chosen on validation."""
        if not can_confirm:
            return None
        rep.progress(0.97, "confirming on the held-out test studies")
        n = len(warnings)
        reference, _ = load_model(parent_dir, device=device)
        p_test = gate.score(reference, parent_meta, test_cases, device, (p_val["threshold"],), warnings)[0]
        c_test = gate.score(network, new_meta, test_cases, device, (best["row"]["threshold"],), warnings)[0]
        warn_new(n)
        for name, row in (("parent", p_test), ("finetuned", c_test)):
            rep.row("test", f"{name} on the test studies: {gate.figures(row)}", row, model=name,
                    step=0 if name == "parent" else best["step"], n_studies=len(test_cases),
                    elapsed_s=round(elapsed(), 1))
        return p_test, c_test

    verdict = gate.decide(p_val, best["row"] if best else None, identical, confirm, args.accept_unconfirmed)
    accepted = verdict["accepted"]
    outcome = gate.outcome_text(verdict, p_val, best, len(test_cases))
    if accepted:
        threshold = best["row"]["threshold"]
        if parent_meta.get("second_stage"):
            warnings.append("the parent's candidate classifier (its opt-in second stage) is left out: it was trained "
                            "on the parent's candidates; train one for the new weights with "
                            "python -m training.train_second_stage")
            rep.emit("warning", f"warning: {warnings[-1]}", message=warnings[-1])
    else:
        threshold = float(parent_meta.get("threshold", 0.5))
        if verdict["reason"] != "not_enough_studies":
            warnings.append("fine-tuning did not improve on the parent; the parent is kept")
    result = {"accepted": accepted, "verdict": verdict["reason"], "outcome": outcome, "threshold": threshold,
              "steps": step, "wall_s": round(elapsed(), 1), "parent_rows": parent_rows, "parent_shipped": p_ship,
              "parent_val": p_val, "best": {k: v for k, v in (best or {}).items() if k != "model"} or None,
              "test": verdict["test"], "identical": identical, "history": history, "warnings": warnings,
              "datasets": datasets, "train": train_subj, "val": val_subj, "test_subjects": test_subj,
              "n_cmbs_train": n_cmbs["train"], "n_cmbs_val": n_cmbs["val"], "n_cmbs_test": n_cmbs["test"],
              "device": device, "parent_dir": str(parent_dir), "parent_sha": parent_sha}
    meta = model_metadata(parent_meta, args, result)
    write_model_folder(network if accepted else None, meta, parent_dir, out, model_card(meta, result),
                       overwrite=args.overwrite)
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    rep.emit("done", f"{outcome}\nmodel written to {out} (use: cmb detect --model {out} ...)", model_dir=str(out),
             accepted=accepted, verdict=verdict["reason"], reason=gate.VERDICTS[verdict["reason"]], outcome=outcome,
             threshold=threshold, steps=step, elapsed_s=round(elapsed(), 1))
    return result
