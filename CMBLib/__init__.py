"""CMBLib: pure-Python algorithms for cerebral microbleeds (no Slicer, Qt or VTK imports).

Array convention: volumes are indexed [k, j, i]; world coordinates are RAS mm.
See `CMBLib.geometry` for the details.
"""
from .errors import CMBError
from .geometry import Volume

__version__ = "0.1.0"
__all__ = ["CMBError", "Volume", "__version__"]
