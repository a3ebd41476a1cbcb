"""CMBScribbleAnnotator's "Save report" and "Export DICOM SEG".

Both are made from the study as exported to the dataset (``cmb report --dataset DATASET
--subject ID``, issue 16): the rater's findings with certainty and review status.  The
buttons are CMBDetector's `ReportPanel` (``cmb report`` in a QProcess, the HTML opened in
the browser); Slicer puts every scripted module's folder on sys.path, so CMBDetectorLib is
importable when the extension's CMBDetector module is loaded.
"""
from pathlib import Path


def exported_source(dataset, subject, sequence) -> dict:
    """`cmb report` arguments for the exported subject; ValueError (one line) when the study
    has not been exported to `dataset` yet."""
    from CMBLib.annotation.dataset import subject_files, subject_label

    if not str(dataset or "").strip():
        raise ValueError("choose the dataset folder first")
    label = subject_label(subject)
    if not subject_files(dataset, label, sequence or "T2starw")["annotation"].is_file():
        raise ValueError(f"sub-{label} is not in {Path(dataset)}: export the study first (the report and the "
                         "DICOM SEG are made from the exported study; export again after changes)")
    return {"dataset": str(dataset), "subject": label}


def panel(widget):
    """Connect the two buttons of `widget` (CMBScribbleAnnotatorWidget); None when
    CMBDetectorLib is not importable (the buttons then say why)."""
    ui = widget.ui
    try:
        from CMBDetectorLib.panels import ReportPanel
    except ImportError:
        for button in (ui.saveReportButton, ui.exportSegButton):
            button.enabled = False
            button.toolTip = "Needs the CMB Detector module of this extension"
        return None
    return ReportPanel(ui, lambda: exported_source(ui.datasetButton.directory, ui.subjectEdit.text,
                                                   ui.sequenceCombo.currentText),
                       lambda: widget.logic.volumeNode, ui.statusLabel)
