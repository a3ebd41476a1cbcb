"""`python -m CMBLib ...` is the same as `cmb ...` (used by Slicer's PythonSlicer)."""
import sys

from .cli import main

sys.exit(main())
