"""Scribble-to-mask region growing with adaptive tolerance (see `engine`, `interactive`)."""
from .engine import DEFAULT_MODE, GrowResult, GrowSettings, grow_from_points, grow_from_scribbles
from .interactive import Grower, GrownCMB
from .join_map import MODES

__all__ = ["DEFAULT_MODE", "MODES", "GrowResult", "GrowSettings", "Grower", "GrownCMB", "grow_from_points",
           "grow_from_scribbles"]
