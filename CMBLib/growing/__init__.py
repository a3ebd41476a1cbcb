"""Scribble-to-mask region growing with adaptive tolerance (see `engine`)."""
from .engine import DEFAULT_MODE, GrowResult, GrowSettings, grow_from_points, grow_from_scribbles
from .join_map import MODES

__all__ = ["DEFAULT_MODE", "MODES", "GrowResult", "GrowSettings", "grow_from_points", "grow_from_scribbles"]
