"""Fine-tune a detection model on a site's own annotated studies ("learn from the rater").

    python -m training.finetune DATASET [DATASET ...] --out MODEL_DIR [--minutes 8]
    python -m CMBLib.detection.finetune ...          (the same; what Slicer runs)

The core lives in CMBLib (like the rest of `CMBLib.detection`, it needs torch) so that the
installed Slicer extension can run it; ``training/finetune.py`` is a thin entry point.
This module is the command line; the work is split by responsibility:

* `finetune_data`: reading the datasets (what is a CMB, a hard negative, unknown) and the
  split by subject into fine-tuning, validation and test studies;
* `finetune_batches`: studies on the model grid, patch batches, the loss;
* `finetune_gate`: scoring through `cmb detect`'s steps and the keep-or-reject rule;
* `finetune_run`: the run (time budget, training loop, checkpoint, progress events);
* `finetune_folder`: the model folder (model.json, weights, model card).

What a run does, in order (every step within ``--minutes`` of wall time):

1. reads the datasets; refuses too few CMBs;
2. splits by subject into fine-tuning, validation and test studies;
3. scores the parent on the validation studies as `cmb detect` runs it, at every
   threshold, and picks its threshold by the rule every model gets;
4. trains from the parent's weights on patches (CMB / hard negative / background), low
   learning rate, batch-norm statistics frozen, validating now and then;
5. decides (the gate, `finetune_gate`): the best fine-tuned state, at its own threshold,
   must differ from the parent, beat the parent at the parent's re-chosen threshold on
   validation, and beat it again on the test studies; without test studies the run says
   "not enough studies to judge" and keeps the parent (unless ``--accept-unconfirmed``);
6. writes the model folder: the fine-tuned weights when kept, else the parent's weights
   file and threshold unchanged (the card says why).

``--progress-json`` prints one JSON object per line on stdout (see docs/finetuning.md).
"""
import argparse
import signal
import sys
import time
from pathlib import Path

from ..errors import CMBError
from .finetune_run import DEFAULTS, MIN_CMBS, Reporter, finetune


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
    p.add_argument("--val-fraction", type=float, default=DEFAULTS["val_fraction"],
                   help="share of subjects for validation: each model's threshold and the best fine-tuned state are "
                        "chosen on them (default 0.25)")
    p.add_argument("--test-fraction", type=float, default=DEFAULTS["test_fraction"],
                   help="share of subjects for test: the decision is confirmed on them; nothing is trained or "
                        "tuned on them (default 0.25; 0: none, then the run cannot judge)")
    p.add_argument("--accept-unconfirmed", action="store_true",
                   help="with too few studies for a test split, keep fine-tuned weights that beat the parent on "
                        "validation alone (default: keep the parent; 'not enough studies to judge')")
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
