"""CMBLib: pure-Python algorithms for cerebral microbleeds (no Slicer, Qt or VTK imports).

Array convention: volumes are indexed [k, j, i]; world coordinates are RAS mm.
See `CMBLib.geometry` for the details.
"""
from .errors import CMBError

__version__ = "0.1.0"
__all__ = ["CMBError", "Volume", "__version__"]


def __getattr__(name):
    # `Volume` is imported on first use, so `cmb --help` does not pay for numpy.
    if name == "Volume":
        from .geometry import Volume

        return Volume
    raise AttributeError(f"module 'CMBLib' has no attribute {name!r}")
