"""Slicer-side glue of the CMBScribbleAnnotator module: node conversions and the logic
that keeps the annotation document, the scribbles segmentation, the masks segmentation
and the mimic markups in step.  Algorithms live in CMBLib."""
