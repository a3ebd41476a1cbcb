"""CMBDetector's library: `process` (QProcess runner, warm worker client; no Slicer import),
`review` (review state, names, model card; no Slicer import), `logic` (nodes; Slicer) and
`selftest` (the Slicer self-test)."""
