"""Average the weights of several checkpoints of one run (stochastic weight averaging).

Checkpoints taken late in a run, at a low learning rate, lie in one basin; their mean
usually generalises better than any one of them and costs nothing at inference.
Floating-point tensors (weights and batch-norm running statistics) are averaged; integer
buffers (``num_batches_tracked``) are taken from the last checkpoint.  The output is a
checkpoint that `training.export_model` reads like any other.

The mean of batch-norm running statistics is not the statistics of the averaged network;
``--bn-batches N`` re-estimates them (torch.optim.swa_utils.update_bn, the SWA paper's last
step) on N training batches drawn as in training, from the run's own configuration and cache.
On cmb-default 0.3.2's weights it did not help (docs/detector.md, "An instance-balanced loss").

    python -m training.average_checkpoints RUN/a.pt RUN/b.pt RUN/checkpoint.pt --out RUN/swa.pt [--bn-batches 200]
"""
import argparse
from pathlib import Path


def update_batch_norm(model_state: dict, cfg: dict, n_batches: int, seed: int = 12345) -> dict:
    """Batch-norm running statistics of the network `model_state` re-estimated on `n_batches`
    training batches (the run's config `cfg`: network, cache folders, patch sampling).
    Returns a new state dict; the weights are unchanged."""
    import random

    import numpy as np
    import torch

    from CMBLib.detection.network import build_network

    from .datasets import CaseStore, case_groups
    from .train import make_batch

    net = build_network(cfg["network"])
    net.load_state_dict(model_state)
    train_dirs, _ = case_groups(cfg, cfg["spacing_mm"])
    store = CaseStore(train_dirs, max_in_memory=int(cfg.get("max_in_memory", 48)), spacing=cfg["spacing_mm"])
    rng, pyrng = np.random.default_rng(seed), random.Random(seed)

    def batches():
        for n in range(int(n_batches)):
            if n and n % int(cfg.get("refresh_every", 200)) == 0:
                store.refresh()
            x, _, _ = make_batch(store, cfg, rng, pyrng)
            yield torch.from_numpy(x)

    with torch.no_grad():
        torch.optim.swa_utils.update_bn(batches(), net)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def average(paths, out, overwrite: bool = False, bn_batches: int = 0):
    import torch

    if len(paths) < 2:
        raise SystemExit("give at least two checkpoints to average")
    states = [torch.load(p, map_location="cpu", weights_only=False) for p in paths]
    keys = states[-1]["model"].keys()
    for p, s in zip(paths, states):
        if s["model"].keys() != keys:
            raise SystemExit(f"{p}: different network (its weights do not match {paths[-1]})")
    mean = {}
    for k in keys:
        ts = [s["model"][k] for s in states]
        mean[k] = torch.stack([t.float() for t in ts]).mean(0).to(ts[-1].dtype) if ts[-1].is_floating_point() \
            else ts[-1].clone()
    if Path(out).exists() and not overwrite:
        raise SystemExit(f"{out} exists; not overwritten (choose another --out or pass --force)")
    cfg = states[-1]["config"]
    if bn_batches:
        mean = update_batch_norm(mean, cfg, bn_batches)
    out_state = {"model": mean, "config": cfg, "step": states[-1].get("step", 0),
                 "averaged_from": [f"{Path(p).name} (step {s.get('step')})" for p, s in zip(paths, states)],
                 "bn_batches": int(bn_batches)}
    from CMBLib.io import atomic_path

    with atomic_path(out) as tmp:
        torch.save(out_state, tmp)
    return out_state


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--force", action="store_true", help="replace an existing --out")
    ap.add_argument("--bn-batches", type=int, default=0,
                    help="re-estimate batch-norm statistics on this many training batches (0: keep the mean)")
    args = ap.parse_args(argv)
    st = average(args.checkpoints, args.out, overwrite=args.force, bn_batches=args.bn_batches)
    bn = f"; batch norm re-estimated on {args.bn_batches} batches" if args.bn_batches else ""
    print(f"wrote {args.out}: mean of {', '.join(st['averaged_from'])}{bn}")


if __name__ == "__main__":
    main()
