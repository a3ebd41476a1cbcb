"""Parts of the CMBDetector module that need neither Slicer nor Qt (tested with pytest)."""
from .process import DetectionProcess, build_detect_command, kill_process_tree
from .review import ReviewSession, segment_name

__all__ = ["DetectionProcess", "ReviewSession", "build_detect_command", "kill_process_tree", "segment_name"]
