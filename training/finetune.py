"""Fine-tune a detection model on a site's annotated studies: thin entry point.

    python -m training.finetune DATASET [DATASET ...] --out MODEL_DIR [--minutes 8]

The implementation is `CMBLib.detection.finetune` (it ships with the Slicer extension,
which runs ``python -m CMBLib.detection.finetune``); see docs/finetuning.md.
"""
import sys

from CMBLib.detection.finetune import main

if __name__ == "__main__":
    sys.exit(main())
