"""Run Python code as on a machine where some packages are not installed.

    python scripts/without_modules.py SimpleITK,monai -m pytest -q Testing/test_detection_inference.py
    python scripts/without_modules.py SimpleITK,monai benchmarks/check_devices.py --out /tmp/check

The named top-level packages (comma-separated) become unfindable: `import SimpleITK` raises
ModuleNotFoundError and `importlib.util.find_spec("SimpleITK")` returns None, as where the
package is absent (the GPU machine of the device check has neither SimpleITK nor MONAI).
Then the rest of the command line runs as `python ...` would run it (a script, or `-m module`).
Child processes started by that code see the packages again.
"""
import os
import runpy
import sys


class _Hiding:
    """A meta-path finder wrapper that finds nothing for the hidden names."""

    def __init__(self, finder, hidden):
        self._finder, self._hidden = finder, hidden

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self._hidden:
            return None
        find = getattr(self._finder, "find_spec", None)
        return None if find is None else find(name, path, target)

    def __getattr__(self, attr):  # invalidate_caches, find_distributions, ...
        return getattr(self._finder, attr)


def hide(names) -> None:
    """Make the top-level packages `names` unimportable in this process."""
    hidden = frozenset(names)
    loaded = [m for m in sys.modules if m.split(".")[0] in hidden]
    if loaded:
        raise SystemExit(f"already imported, cannot hide: {', '.join(sorted(loaded))}")
    sys.meta_path[:] = [_Hiding(f, hidden) for f in sys.meta_path]


def main(argv) -> None:
    if len(argv) < 2 or (argv[1] == "-m" and len(argv) < 3):
        raise SystemExit(__doc__)
    hide(n.strip() for n in argv[0].split(",") if n.strip())
    if argv[1] == "-m":  # sys.path[0] as `python -m` sets it: the working folder, not scripts/
        sys.argv = [argv[2]] + argv[3:]
        sys.path[0] = os.getcwd()
        runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv[1:]
        sys.path[0] = os.path.dirname(os.path.abspath(argv[1]))
        runpy.run_path(argv[1], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
