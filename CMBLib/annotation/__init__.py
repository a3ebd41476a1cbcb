"""Annotation of CMBs: the document model (BOMBS metadata, mimics, study quality), its
JSON Schema, dataset export/import (BIDS derivatives), autosave sessions and the
hand-over of detector candidates."""
from .document import (
                       complete_document,
                       load_document,
                       new_document,
                       new_finding,
                       new_mimic,
                       new_other_finding,
                       save_document,
                       set_field,
                       validate_document,
)
from .vocabulary import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "complete_document", "load_document", "new_document", "new_finding",
           "new_mimic", "new_other_finding", "save_document", "set_field", "validate_document"]
