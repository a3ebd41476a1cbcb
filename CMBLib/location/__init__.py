"""Anatomical location of CMBs in MARS / BOMBS regions (atlas or user labels)."""
from .locate import Locator, locate_points, locate_volume_points, registration_for
from .regions import CATEGORIES, REGION_NAMES, category_of

__all__ = ["Locator", "locate_points", "locate_volume_points", "registration_for", "REGION_NAMES", "CATEGORIES",
           "category_of"]
