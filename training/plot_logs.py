"""Plot a training run's logs: loss against step, and validation F1 / sensitivity / FP per scan.

    python -m training.plot_logs training/runs/default [more runs ...] --out curves.png
"""
import argparse
import csv
from pathlib import Path


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def plot(runs, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    for run in runs:
        run = Path(run)
        if (run / "train_log.csv").exists():
            rows = read_csv(run / "train_log.csv")
            ax[0].plot([_num(r["step"]) for r in rows], [_num(r["loss"]) for r in rows], label=run.name)
        if (run / "val_log.csv").exists():
            rows = read_csv(run / "val_log.csv")
            best = {}
            for r in rows:  # best F1 at <= 2 FP/scan per validation step
                s = _num(r["step"])
                if _num(r["fp_per_scan"]) <= 2 and _num(r["f1"]) >= best.get(s, (-1, None))[0]:
                    best[s] = (_num(r["f1"]), r)
            steps = sorted(best)
            ax[1].plot(steps, [best[s][0] for s in steps], "o-", label=f"{run.name} F1")
            ax[1].plot(steps, [_num(best[s][1]["sensitivity"]) for s in steps], "x--", label=f"{run.name} sens.")
            ax[2].plot(steps, [_num(best[s][1]["fp_per_scan"]) for s in steps], "o-", label=run.name)
    ax[0].set(xlabel="step", ylabel="training loss", yscale="log")
    ax[1].set(xlabel="step", ylabel="validation (best at <= 2 FP/scan)", ylim=(0, 1))
    ax[2].set(xlabel="step", ylabel="FP per scan at that threshold")
    for a in ax:
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="Plot training / validation curves of one or more runs.")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", default="training_curves.png")
    args = ap.parse_args(argv)
    print(plot(args.runs, args.out))


if __name__ == "__main__":
    main()
