"""The fine-tuning gate on reviewed studies: does a run that learnt nothing get kept?

    python benchmarks/check_finetune_gate.py [--studies 8] [--lr 0 1e-4] [--max-steps 40] [--work DIR]

Builds `--studies` reviewed studies of `bench_finetune.py`'s domain (vein-rich T2*-like
phantom, small faint CMBs; the bundled model's false detections rejected, flow voids marked
as mimics), then fine-tunes the bundled model on them once per `--lr` with the default
three-way split (validation 0.25, test 0.25).  For each run it prints the gate's verdict,
the outcome sentence, whether the written weights file is the parent's byte for byte, and
the validation / test rows of both models.  With ``--lr 0`` the weights cannot change: the
run must keep the parent (verdict "identical", or "not_better" first).
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=8, help="reviewed studies (default 8: 4 + 2 + 2)")
    ap.add_argument("--lr", type=float, nargs="+", default=[0.0], help="learning rates, one run each (default 0)")
    ap.add_argument("--max-steps", type=int, default=40)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="folder for the dataset and the models (default: temporary)")
    args = ap.parse_args(argv)
    import torch
    from bench_finetune import domain_study, export_reviewed

    from CMBLib.detection.finetune import main as finetune_main
    from CMBLib.detection.model_io import MODELS_DIR, load_model, sha256_file

    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="check-finetune-gate-"))
    dataset = work / "dataset"
    if not dataset.is_dir():
        bundled = load_model("default")
        for s in range(args.studies):
            print(f"exporting study {s}: {export_reviewed(dataset, f'{s:02d}', domain_study(s), bundled)}",
                  flush=True)
    parent_sha = sha256_file(MODELS_DIR / "cmb-default" / "weights.npz")
    for lr in args.lr:
        out = work / f"model-lr{lr:g}"
        rc = finetune_main([str(dataset), "--out", str(out), "--overwrite", "--lr", str(lr), "--minutes",
                            str(args.minutes), "--max-steps", str(args.max_steps), "--threads", str(args.threads),
                            "--device", "cpu"])
        if rc:
            print(f"lr {lr:g}: fine-tuning failed (exit {rc})")
            return rc
        meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
        ft = meta["finetune"]
        print(json.dumps({"lr": lr, "verdict": ft["verdict"], "accepted": ft["accepted"], "steps": ft["steps"],
                          "threshold": meta["threshold"],
                          "weights_are_the_parents": sha256_file(out / "weights.npz") == parent_sha,
                          "identical_to_parent": ft["gate"]["identical_to_parent"],
                          "split": [len(ft["train_subjects"]), len(ft["val_subjects"]), len(ft["test_subjects"])],
                          "validation": {k: ft["validation"][k] for k in ("parent_shipped", "parent_best",
                                                                         "finetuned_best")},
                          "test": {k: ft["test"][k] for k in ("parent", "finetuned")}}, indent=1))
        print(f"outcome: {ft['outcome']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
