"""CMB detection: preprocessing, network, inference, candidates and the pipeline.

Importing this package imports nothing heavy (no torch, no scipy); the names below load
their module on first use, so the Slicer module can read model metadata cheaply.

    from CMBLib.detection import detect, load_model, write_outputs
    result = detect(volume, model="default", device="auto", sequence="SWI")

Modules: `model_io` (bundled models, checksums), `inference` (devices, sliding window),
`candidates` (components, sizes, shapes), `pipeline` (`detect`), `outputs` (files),
`preprocess` and `network` (shared with training).
"""
import importlib

_EXPORTS = {
    "DetectionResult": "pipeline", "detect": "pipeline", "find_candidates": "candidates",
    "default_model_name": "model_io", "list_models": "model_io", "load_model": "model_io",
    "save_model": "model_io", "write_outputs": "outputs", "records_to_findings": "outputs",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
