"""Average the weights of several checkpoints of one run (stochastic weight averaging).

Checkpoints taken late in a run, at a low learning rate, lie in one basin; their mean
usually generalises better than any one of them and costs nothing at inference.
Floating-point tensors (weights and batch-norm running statistics) are averaged; integer
buffers (``num_batches_tracked``) are taken from the last checkpoint.  The output is a
checkpoint that `training.export_model` reads like any other.

    python -m training.average_checkpoints RUN/snap_a.pt RUN/snap_b.pt RUN/checkpoint.pt --out RUN/swa.pt
"""
import argparse
from pathlib import Path


def average(paths, out, overwrite: bool = False):
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
    out_state = {"model": mean, "config": states[-1]["config"], "step": states[-1].get("step", 0),
                 "averaged_from": [f"{Path(p).name} (step {s.get('step')})" for p, s in zip(paths, states)]}
    if Path(out).exists() and not overwrite:
        raise SystemExit(f"{out} exists; not overwritten (choose another --out or pass --force)")
    from CMBLib.io import atomic_path

    with atomic_path(out) as tmp:
        torch.save(out_state, tmp)
    return out_state


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--force", action="store_true", help="replace an existing --out")
    args = ap.parse_args(argv)
    st = average(args.checkpoints, args.out, overwrite=args.force)
    print(f"wrote {args.out}: mean of {', '.join(st['averaged_from'])}")


if __name__ == "__main__":
    main()
