"""CMB detection: preprocessing, network, inference, candidates and the pipeline.

Importing this package does not import torch; the heavy parts load on first use.

    from CMBLib.detection import detect, load_model, write_outputs
    result = detect(volume, model="default", device="auto", sequence="SWI")

Modules: `model_io` (bundled models, checksums), `inference` (devices, sliding window),
`candidates` (components, sizes, shapes), `pipeline` (`detect`), `outputs` (files),
`preprocess` and `network` (shared with training).
"""
from .candidates import find_candidates
from .model_io import default_model_name, list_models, load_model, save_model
from .outputs import write_outputs
from .pipeline import DetectionResult, detect

__all__ = ["DetectionResult", "default_model_name", "detect", "find_candidates", "list_models",
           "load_model", "save_model", "write_outputs"]
