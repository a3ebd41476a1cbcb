"""Train a CMB detection network.

    python -m training.train --config training/configs/default.yaml [--resume] [--max-minutes 80]
    torchrun --nproc_per_node 2 -m training.train --config ...      # DDP (gloo on CPU, nccl on GPU)

Writes to ``out`` (from the config or ``--out``):

* ``checkpoint.pt`` every ``checkpoint_every`` steps and at the end (``--resume`` continues
  from it: weights, optimiser, step, random states); ``best.pt`` = best validation F1 at
  <= 2 FP/scan;
* ``train_log.csv`` / ``val_log.csv`` (plot with ``python -m training.plot_logs OUT``) and
  ``log.jsonl`` (every record, one JSON object a line);
* ``config.yaml`` (the effective configuration).

``--init-from bundled`` (or a model folder) starts from a bundled model's weights, for
fine-tuning on a user's exported annotations (``data.real`` in the config).
"""
import argparse
import csv
import json
import os
import random
import time
from pathlib import Path

import numpy as np


def load_config(path, overrides=None) -> dict:
    import yaml

    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    for k, v in (overrides or {}).items():
        if v is not None:
            cfg[k] = v
    return cfg


def _dist_info():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return world, rank


def _append_csv(path: Path, row: dict):
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _save(obj, path: Path):
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _broadcast_floats(values, device) -> list:
    """Rank 0's `values` on every rank (torch.distributed broadcast of a float64 tensor)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                     device=device if str(device).startswith("cuda") else "cpu")
    dist.broadcast(t, src=0)
    return [float(v) for v in t.cpu().tolist()]


def init_weights_from(network, source: str):
    """Copy weights from a bundled model ('bundled'/'default', a name or a folder)."""
    import torch

    from CMBLib.detection.model_io import load_model

    name = "default" if source in ("bundled", "default") else source
    src_net, meta = load_model(name, device="cpu")
    state = src_net.state_dict()
    missing = network.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=False)
    return meta, missing


def make_batch(store, cfg, rng, pyrng):
    from .patch_insertion import crop_brain, insert_random_cmbs
    from .sampling import augment, choose_kind, choose_start, patch_at, sample_patch

    patch_kji = cfg["patch_size"][::-1]
    xs, ys, kinds = [], [], []
    for _ in range(int(cfg["batch_size"])):
        case = store.random_case(pyrng)
        kind = choose_kind(rng, cfg["sampling"])
        if kind == "insert":  # fresh synthetic CMBs in a random brain patch (patch_insertion)
            start, _ = choose_start(case, patch_kji, rng, "background", case.get("indices"))
            x, y = patch_at(case, start, patch_kji)
            x, y, n = insert_random_cmbs(x, y, crop_brain(case, start, patch_kji), rng, cfg["spacing_mm"],
                                         **cfg.get("insertion", {}))
            used = "insert" if n else "background"
        else:
            x, y, used = sample_patch(case, patch_kji, rng, kind, case.get("indices"))
        x, y = augment(x, y, rng, **cfg.get("augment", {}))
        xs.append(x)
        ys.append(y)
        kinds.append(used)
    return np.stack(xs)[:, None], np.stack(ys)[:, None], kinds


DEFAULTS = {
    "out": "training/runs/default",
    "seed": 0,
    "threads": 2,
    "spacing_mm": [1.0, 1.0, 2.0],
    "patch_size": [64, 64, 32],          # i, j, k voxels (training patches)
    "inference_patch_size": [160, 160, 64],  # i, j, k sliding-window size (batch norm: any size works)
    "batch_size": 4,
    "max_steps": 20000,
    "lr": 1e-3,
    "lr_min": 1e-5,
    "weight_decay": 1e-5,
    "network": {"architecture": "UNet", "channels": [16, 32, 64, 128], "strides": [2, 2, 2],
                "num_res_units": 1, "norm": "batch", "out_channels": 2},
    "loss": {"alpha": 0.3, "beta": 0.7, "gamma": 3.0, "ce_weights": [0.1, 5.0], "w_ftl": 1.0, "w_ce": 0.1},
    "sampling": {"cmb": 0.5, "mimic": 0.2, "background": 0.3},
    "augment": {"intensity": 0.1, "noise": 0.05},
    "log_every": 20,
    "checkpoint_every": 200,
    "keep_every": 0,                     # > 0: also keep checkpoint_<step>.pt every so many steps
    "val_every": 1000,
    "val_cases": 12,
    "refresh_every": 200,
    "max_in_memory": 48,
    "data": {"train_dirs": ["training/runs/cache/train"], "val_dirs": ["training/runs/cache/val"], "real": []},
    "insertion": {},                     # training/patch_insertion.py keyword arguments
    # losses.instance_balance_weights: small CMBs weigh up to max_weight x (0 mm = off)
    "instance_balance": {"ref_diameter_mm": 0.0, "max_weight": 10.0},
    "min_diameter_mm": 1.5,              # validation's minimum candidate size
    "flip_average": False,               # validation with test-time flip averaging (as model.json)
    # the preprocessing the model is made for (model.json "preprocess", CMBLib.detection.preprocess
    # OPTIONS), written by training.export_model; the cache must be made with it
    # (training.generate_cache --skull-on: skull-on cases preprocessed with head / background)
    "preprocess": {"brain_extraction": "classic", "outside": "keep"},
}


REPLACED_WHOLE = ("sampling",)   # proportions: a config's dict replaces the default one


def effective_config(cfg: dict) -> dict:
    """DEFAULTS updated by `cfg` (nested dicts merged key by key, except REPLACED_WHOLE).

    An unknown key (a typo such as ``max_step``) is refused with SystemExit naming it,
    instead of being ignored silently."""
    out = json.loads(json.dumps(DEFAULTS))
    for k, v in cfg.items():
        if k not in out:
            raise SystemExit(f"unknown configuration key '{k}' (known: {', '.join(sorted(out))})")
        fixed = out[k]
        if isinstance(v, dict) and isinstance(fixed, dict) and fixed and k not in REPLACED_WHOLE \
                and k not in ("network", "loss"):
            unknown = sorted(set(v) - set(fixed))
            if unknown:
                raise SystemExit(f"unknown configuration key '{k}.{unknown[0]}' "
                                 f"(known: {', '.join(sorted(fixed))})")
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in REPLACED_WHOLE:
            out[k].update(v)
        else:
            out[k] = v
    return out


def train(cfg: dict, resume: bool = False, max_minutes=None, init_from=None) -> dict:
    import torch
    import yaml

    from CMBLib.detection.network import build_network
    from CMBLib.io import write_text_atomic

    from .datasets import CaseStore, case_groups, load_val_cases
    from .losses import build_loss, instance_balance_weights
    from .validate import validate

    world, rank = _dist_info()
    distributed = world > 1
    if distributed:
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(int(cfg["threads"]))
    out = Path(cfg["out"])
    main_proc = rank == 0
    if main_proc:
        if not resume and (out / "checkpoint.pt").exists():
            raise SystemExit(f"{out} already holds a run (checkpoint.pt); use --resume or another --out")
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    seed = int(cfg["seed"]) + 1000 * rank
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pyrng = random.Random(seed)

    network = build_network(cfg["network"]).to(device)
    if init_from:
        meta, missing = init_weights_from(network, init_from)
        if main_proc:
            print(f"initialised from {meta.get('name')} {meta.get('version')} ({missing})", flush=True)
    opt = torch.optim.AdamW(network.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    loss_fn = build_loss(cfg["loss"]).to(device)
    balance_cfg = cfg["instance_balance"]

    def balance(y):
        """Voxel weights for a batch of labels (None: instance balancing off)."""
        if float(balance_cfg["ref_diameter_mm"]) <= 0:
            return None
        return torch.from_numpy(instance_balance_weights(y, cfg["spacing_mm"], **balance_cfg)).to(device)
    step = 0
    elapsed_before = 0.0
    best = {"f1": -1.0}
    ckpt = out / "checkpoint.pt"
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        network.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        best = state.get("best", best)
        elapsed_before = float(state.get("elapsed_s", 0.0))
        if "rng" in state and not distributed:
            rng.bit_generator.state = state["rng"]
            pyrng.setstate(state["pyrng"])
            torch.set_rng_state(state["torch_rng"])
        if main_proc:
            print(f"resumed from {ckpt} at step {step}", flush=True)
    model = network
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(network)

    train_dirs, val_dirs = case_groups(cfg, cfg["spacing_mm"])
    store = CaseStore(train_dirs, max_in_memory=int(cfg["max_in_memory"]), spacing=cfg["spacing_mm"])
    val_cases = load_val_cases(val_dirs, int(cfg["val_cases"])) if (main_proc and val_dirs) else []
    if main_proc:
        print(f"{len(store)} training cases, {len(val_cases)} validation cases, world size {world}", flush=True)

    max_steps = int(cfg["max_steps"])
    lr0, lr_min = float(cfg["lr"]), float(cfg["lr_min"])
    t0 = time.time() - elapsed_before  # wall time counts across resumes
    if distributed:  # one clock for all ranks: rank 0's (it started last, after loading validation)
        t0 = _broadcast_floats([t0], device)[0]
    deadline = t0 + 60 * float(max_minutes) if max_minutes else None
    losses = []

    def checkpoint(path):
        _save({"model": network.state_dict(), "optimizer": opt.state_dict(), "step": step, "best": best,
               "config": cfg, "elapsed_s": time.time() - t0, "rng": rng.bit_generator.state, "pyrng": pyrng.getstate(),
               "torch_rng": torch.get_rng_state()}, path)

    def run_validation():
        nonlocal best
        res = validate(network, val_cases, cfg["inference_patch_size"][::-1], cfg["spacing_mm"],
                       min_diameter_mm=float(cfg.get("min_diameter_mm", 1.5)),
                       flip_average=bool(cfg.get("flip_average", False)))
        network.train()
        b = res["best"]
        rec = {"kind": "val", "step": step, "elapsed_s": round(time.time() - t0, 1),
               **{"best_" + k: v for k, v in b.items()}}
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps({**rec, "rows": res["rows"]}) + "\n")
        for r in res["rows"]:
            _append_csv(out / "val_log.csv", {"step": step, **r})
        print(f"val step {step}: best F1 {b.get('f1')} at t={b.get('threshold')} "
              f"(sens {b.get('sensitivity')}, prec {b.get('precision')}, FP/scan {b.get('fp_per_scan')})", flush=True)
        if b.get("f1") is not None and b["f1"] > best.get("f1", -1):
            best = {"f1": b["f1"], "step": step, "threshold": b["threshold"], "row": b}
            _save({"model": network.state_dict(), "step": step, "config": cfg, "best": best}, out / "best.pt")

    network.train()
    while True:
        # cosine decay over max_steps, or over the wall-time budget when that comes first;
        # rank 0 decides when to stop and where the schedule stands, the others follow
        stop = step >= max_steps or bool(deadline and time.time() > deadline)
        frac = step / max(1, max_steps)
        if deadline:
            frac = max(frac, (time.time() - t0) / (deadline - t0))
        if distributed:
            stop_f, frac = _broadcast_floats([float(stop), frac], device)
            stop = stop_f > 0.5
        if stop:
            break
        frac = min(frac, 1.0)
        if step % int(cfg["refresh_every"]) == 0:
            store.refresh()
        x, y, kinds = make_batch(store, cfg, rng, pyrng)
        lr = lr_min + 0.5 * (lr0 - lr_min) * (1 + np.cos(np.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        xt = torch.from_numpy(x).to(device)
        yt = torch.from_numpy(y.astype(np.int64)).to(device)
        logits = model(xt)
        loss = loss_fn(logits, yt, weight=balance(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(float(loss.detach()))
        if main_proc and step % int(cfg["log_every"]) == 0:
            row = {"step": step, "loss": round(float(np.mean(losses)), 6), "lr": lr,
                   "elapsed_s": round(time.time() - t0, 1), "cases": len(store)}
            losses = []
            _append_csv(out / "train_log.csv", row)
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps({"kind": "train", **row}) + "\n")
            print(f"step {step} loss {row['loss']:.4f} lr {lr:.2e} {row['elapsed_s']}s", flush=True)
        if main_proc and step % int(cfg["checkpoint_every"]) == 0:
            checkpoint(ckpt)
        if main_proc and int(cfg.get("keep_every", 0)) and step % int(cfg["keep_every"]) == 0:
            checkpoint(out / f"checkpoint_{step:06d}.pt")  # kept for average_checkpoints
        if main_proc and val_cases and step % int(cfg["val_every"]) == 0:
            run_validation()
    if main_proc:
        checkpoint(ckpt)
        if val_cases and (best.get("step") != step):
            run_validation()
        summary = {"steps": step, "wall_s": round(time.time() - t0, 1), "best": best}
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
        print(json.dumps(summary), flush=True)
    if distributed:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return {"steps": step, "best": best}


def main(argv=None):
    ap = argparse.ArgumentParser(description="Train a CMB detection network (see training/README in the README).")
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", help="output folder (overrides the config)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this wall time")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--init-from", help="'bundled' or a model folder: start from its weights (fine-tuning)")
    args = ap.parse_args(argv)
    cfg = effective_config(load_config(args.config, {"out": args.out, "max_steps": args.max_steps,
                                                     "seed": args.seed, "threads": args.threads}))
    train(cfg, resume=args.resume, max_minutes=args.max_minutes, init_from=args.init_from)


if __name__ == "__main__":
    main()
