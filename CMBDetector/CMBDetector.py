"""CMBDetector: one-click detection of cerebral microbleeds, and review of the candidates.

Thin glue over `CMBLib.detection` (see README "Detecting microbleeds"):

* Apply exports the selected volume to a temporary file and runs
  ``PythonSlicer -m CMBLib detect IMAGE --out DIR --progress-json ...`` in a separate
  process (`CMBDetectorLib.process.DetectionProcess`), so Slicer never freezes; a timer
  reads its JSON progress lines into the progress bar; Cancel kills the whole process tree.
* Results: a segmentation (one segment per CMB, named "CMB n: size (class), location"),
  a markups point list at the centres, and a table; selecting a row centres the slice
  views on the candidate.
* Review: A = accept, R = reject, N = next, P = previous (while "Review" is on).
  "Send to annotator" hands accepted candidates (and their masks) to
  CMBScribbleAnnotator (see `CMBDetectorLogic.handOver`).
* First use: torch is installed through the PyTorch extension and MONAI etc. with pip,
  only after the user agrees.
"""
import json
import logging
import os

import ctk
import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

SEQUENCES = [("T2*-GRE", "T2S"), ("SWI", "SWI"), ("QSM (CMBs bright)", "QSM")]
DEVICES = ["auto", "cuda", "mps", "cpu"]
# Python packages the detection process needs besides torch (import name -> pip requirement).
REQUIREMENTS = {"monai": "monai>=1.6,<1.7", "skimage": "scikit-image", "slicerio": "slicerio",
                "scipy": "scipy", "SimpleITK": "SimpleITK"}
HANDOVER_ATTRIBUTE = "CMBDetector.Findings"   # JSON list of annotation findings on the segmentation node
LABEL_TAG = "CMBDetector.Label"               # segment tag: the candidate's label in the detection mask
STATUS_TAG = "CMBDetector.ReviewStatus"       # segment tag: unreviewed / accepted / rejected
STATUS_COLORS = {"unreviewed": (1.0, 0.85, 0.1), "accepted": (0.1, 0.85, 0.2), "rejected": (0.5, 0.5, 0.5)}


class CMBDetector(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CMB Detector"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["CMB Slicer contributors"]
        self.parent.helpText = (
            "Detect cerebral microbleeds on SWI, T2*-GRE or QSM in one click, then review each candidate "
            "(A accept, R reject, N next, P previous). See the extension's README, section "
            "'Detecting microbleeds'.")
        self.parent.acknowledgementText = "Uses MONAI and PyTorch. Detection runs in a separate process."


#
# Widget
#


class CMBDetectorWidget(ScriptedLoadableModuleWidget):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None
        self.timer = None
        self.shortcuts = []

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = CMBDetectorLogic()
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.connect("timeout()", self.onPoll)

        inputs = ctk.ctkCollapsibleButton()
        inputs.text = "Detection"
        self.layout.addWidget(inputs)
        form = qt.QFormLayout(inputs)

        self.volumeSelector = slicer.qMRMLNodeComboBox()
        self.volumeSelector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        self.volumeSelector.addEnabled = False
        self.volumeSelector.removeEnabled = False
        self.volumeSelector.noneEnabled = False
        self.volumeSelector.setMRMLScene(slicer.mrmlScene)
        self.volumeSelector.setToolTip("SWI, T2*-GRE magnitude or QSM volume")
        form.addRow("Input volume:", self.volumeSelector)

        self.sequenceCombo = qt.QComboBox()
        for text, value in SEQUENCES:
            self.sequenceCombo.addItem(text, value)
        form.addRow("Sequence:", self.sequenceCombo)

        self.modelCombo = qt.QComboBox()
        self.modelCard = qt.QLabel()
        self.modelCard.wordWrap = True
        self.modelCard.setTextInteractionFlags(qt.Qt.TextSelectableByMouse)
        form.addRow("Model:", self.modelCombo)
        form.addRow("", self.modelCard)

        self.deviceCombo = qt.QComboBox()
        self.deviceCombo.addItems(DEVICES)
        form.addRow("Device:", self.deviceCombo)

        self.thresholdSpin = qt.QDoubleSpinBox()
        self.thresholdSpin.setRange(0.0, 0.99)
        self.thresholdSpin.setSingleStep(0.05)
        self.thresholdSpin.setSpecialValueText("model default")
        self.thresholdSpin.setValue(0.0)
        form.addRow("Threshold:", self.thresholdSpin)

        self.locationCheck = qt.QCheckBox("add anatomical location")
        form.addRow("", self.locationCheck)

        self.outputDir = ctk.ctkPathLineEdit()
        self.outputDir.filters = ctk.ctkPathLineEdit.Dirs
        self.outputDir.setToolTip("Optional folder to keep the mask, JSON and CSV; empty = temporary folder")
        form.addRow("Output folder:", self.outputDir)

        buttons = qt.QHBoxLayout()
        self.applyButton = qt.QPushButton("Apply")
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.enabled = False
        buttons.addWidget(self.applyButton)
        buttons.addWidget(self.cancelButton)
        form.addRow(buttons)
        self.progressBar = qt.QProgressBar()
        self.progressBar.setRange(0, 1000)
        self.progressBar.setValue(0)
        self.statusLabel = qt.QLabel("")
        self.statusLabel.wordWrap = True
        form.addRow(self.progressBar)
        form.addRow(self.statusLabel)

        results = ctk.ctkCollapsibleButton()
        results.text = "Candidates and review"
        self.layout.addWidget(results)
        rlayout = qt.QVBoxLayout(results)
        self.table = qt.QTableWidget()
        self.table.setColumnCount(7)
        self.table.setHorizontalHeaderLabels(["#", "status", "diam. mm", "class", "prob.", "location", "shape"])
        self.table.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        self.table.setSelectionMode(qt.QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(qt.QAbstractItemView.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        rlayout.addWidget(self.table)
        review = qt.QHBoxLayout()
        self.reviewCheck = qt.QCheckBox("Review (keys A / R / N / P)")
        self.acceptButton = qt.QPushButton("Accept")
        self.rejectButton = qt.QPushButton("Reject")
        self.nextButton = qt.QPushButton("Next")
        for w in (self.reviewCheck, self.acceptButton, self.rejectButton, self.nextButton):
            review.addWidget(w)
        rlayout.addLayout(review)
        self.handOverButton = qt.QPushButton("Send accepted to CMB Scribble Annotator")
        rlayout.addWidget(self.handOverButton)
        self.layout.addStretch(1)

        self.applyButton.connect("clicked(bool)", self.onApply)
        self.cancelButton.connect("clicked(bool)", self.onCancel)
        self.modelCombo.connect("currentIndexChanged(int)", self.updateModelCard)
        self.table.connect("itemSelectionChanged()", self.onRowSelected)
        self.reviewCheck.connect("toggled(bool)", self.setReviewMode)
        self.acceptButton.connect("clicked(bool)", lambda: self.onReview("accepted"))
        self.rejectButton.connect("clicked(bool)", lambda: self.onReview("rejected"))
        self.nextButton.connect("clicked(bool)", self.onNext)
        self.handOverButton.connect("clicked(bool)", self.onHandOver)
        self.fillModels()
        self.updateButtons()

    def cleanup(self):
        self.setReviewMode(False)
        if self.logic:
            self.logic.cancel()
        if self.timer:
            self.timer.stop()
        ScriptedLoadableModuleWidget.cleanup(self)

    def exit(self):
        self.setReviewMode(False)
        self.reviewCheck.checked = False

    # --- models -------------------------------------------------------------------------
    def fillModels(self):
        self.modelCombo.clear()
        self.models = self.logic.models()
        for m in self.models:
            self.modelCombo.addItem(f"{m['name']} {m.get('version', '')}", m["path"])
        self.modelCombo.addItem("Other model folder...", "")
        self.updateModelCard()

    def updateModelCard(self, *_):
        i = self.modelCombo.currentIndex
        if i < len(getattr(self, "models", [])):
            self.modelCard.text = modelCardText(self.models[i])
        elif not getattr(self, "models", []):
            self.modelCard.text = "No bundled model is installed; choose a model folder."
        else:
            self.modelCard.text = "A folder with model.json and weights.npz."

    def selectedModel(self):
        path = self.modelCombo.currentData
        if path:
            return path
        folder = qt.QFileDialog.getExistingDirectory(None, "Model folder (model.json + weights.npz)")
        return folder or None

    # --- run ----------------------------------------------------------------------------
    def onApply(self):
        volume = self.volumeSelector.currentNode()
        if volume is None:
            slicer.util.errorDisplay("Select an input volume first.")
            return
        model = self.selectedModel()
        if not model:
            return
        if not self.logic.ensureDependencies(ask=slicer.util.confirmOkCancelDisplay):
            self.statusLabel.text = "Detection needs PyTorch and MONAI; nothing was installed."
            return
        threshold = self.thresholdSpin.value if self.thresholdSpin.value > 0 else None
        try:
            self.logic.start(volume, model=model, device=self.deviceCombo.currentText,
                             threshold=threshold, sequence=self.sequenceCombo.currentData,
                             location=self.locationCheck.checked, outputDir=self.outputDir.currentPath or None)
        except Exception as exc:  # could not export or launch: say so, keep the GUI alive
            slicer.util.errorDisplay(f"Could not start detection: {exc}")
            return
        self.progressBar.setValue(0)
        self.statusLabel.text = "Starting detection..."
        self.timer.start()
        self.updateButtons()

    def onCancel(self):
        self.logic.cancel()
        self.statusLabel.text = "Cancelling..."

    def onPoll(self):
        for event in self.logic.poll():
            kind = event.get("event")
            if kind == "progress":
                self.progressBar.setValue(int(1000 * float(event.get("progress", 0))))
                self.statusLabel.text = str(event.get("message", ""))
            elif kind == "exit":
                self.timer.stop()
                self.onFinished(event)
        self.updateButtons()

    def onFinished(self, event):
        from CMBDetectorLib.process import error_message

        if event.get("cancelled"):
            self.statusLabel.text = "Cancelled."
            self.progressBar.setValue(0)
            return
        if event.get("returncode") != 0 or not self.logic.resultJson():
            msg = error_message(event)
            self.statusLabel.text = f"Detection failed: {msg}"
            slicer.util.errorDisplay(f"Detection failed: {msg}")
            return
        try:
            self.logic.loadResults(self.logic.resultJson(), self.logic.inputVolume)
        except Exception as exc:
            logging.exception("loading detection results failed")
            slicer.util.errorDisplay(f"Could not load the results: {exc}")
            return
        self.progressBar.setValue(1000)
        n = len(self.logic.session.records)
        warnings = self.logic.document.get("warnings") or []
        self.statusLabel.text = f"{n} candidate(s)." + (" " + " ".join(warnings) if warnings else "")
        self.fillTable()

    def updateButtons(self):
        running = self.logic.running
        self.applyButton.enabled = not running
        self.cancelButton.enabled = running
        has = self.logic.session is not None and bool(self.logic.session.records)
        for w in (self.reviewCheck, self.acceptButton, self.rejectButton, self.nextButton, self.handOverButton):
            w.enabled = has and not running

    # --- table and review ---------------------------------------------------------------
    def fillTable(self):
        session = self.logic.session
        self.table.blockSignals(True)
        self.table.setRowCount(len(session.records))
        for row, rec in enumerate(session.records):
            values = [str(rec["label"]), session.status[int(rec["label"])], f"{rec['diameter_mm']:.1f}",
                      rec["size_class"], f"{rec['max_probability']:.2f}", rec.get("location", ""),
                      "vessel-like" if rec.get("vessel_like") else ""]
            for col, text in enumerate(values):
                self.table.setItem(row, col, qt.QTableWidgetItem(text))
        self.table.blockSignals(False)
        if session.current is not None:
            self.table.selectRow(session.index)

    def onRowSelected(self):
        rows = self.table.selectionModel().selectedRows()
        if not rows or self.logic.session is None:
            return
        self.logic.session.select(rows[0].row())
        self.logic.jumpTo(self.logic.session.current)

    def onReview(self, status):
        if self.logic.session is None or self.logic.session.current is None:
            return
        self.logic.setStatus(self.logic.session.current, status)
        self.logic.session.mark(status)
        self.fillTable()

    def onNext(self):
        if self.logic.session is not None:
            self.logic.session.next()
            self.fillTable()

    def onPrevious(self):
        if self.logic.session is not None:
            self.logic.session.previous()
            self.fillTable()

    def setReviewMode(self, on):
        for s in self.shortcuts:
            s.setEnabled(False)
            s.deleteLater()
        self.shortcuts = []
        if not on:
            return
        for key, callback in (("A", lambda: self.onReview("accepted")), ("R", lambda: self.onReview("rejected")),
                              ("N", self.onNext), ("P", self.onPrevious)):
            shortcut = qt.QShortcut(qt.QKeySequence(key), slicer.util.mainWindow())
            shortcut.connect("activated()", callback)
            self.shortcuts.append(shortcut)
        self.fillTable()

    def onHandOver(self):
        try:
            message = self.logic.handOver()
        except Exception as exc:
            slicer.util.errorDisplay(f"Hand-over failed: {exc}")
            return
        slicer.util.infoDisplay(message)


def modelCardText(meta):
    """A short model card: version, intended input, grid, threshold, training data, measured performance."""
    metrics = meta.get("metrics") or {}
    perf = "; ".join(f"{k}: {v}" for k, v in metrics.items()) if isinstance(metrics, dict) else str(metrics)
    lines = [f"<b>{meta.get('name')}</b> version {meta.get('version')}",
             f"Intended input: {meta.get('intended_input', '')}",
             f"Model grid {' x '.join(str(s) for s in meta.get('spacing_mm', []))} mm, "
             f"threshold {meta.get('threshold')}, sizes {meta.get('min_diameter_mm')}-{meta.get('max_diameter_mm')} mm",
             f"Training data: {meta.get('training_data') or 'not stated'}",
             f"Measured performance: {perf or 'not measured'}"]
    return "<br>".join(lines)


#
# Logic
#


class CMBDetectorLogic(ScriptedLoadableModuleLogic):
    """Runs detection in a separate process and turns its outputs into Slicer nodes.

    `processFactory` makes the process object (default `DetectionProcess`); tests inject
    their own.  Nodes made by `loadResults`: segmentationNode, markupsNode, tableNode.
    """

    def __init__(self, processFactory=None):
        ScriptedLoadableModuleLogic.__init__(self)
        from CMBDetectorLib.process import DetectionProcess

        self.processFactory = processFactory or DetectionProcess
        self.process = None
        self.outputDir = None
        self.inputVolume = None
        self.imageName = "input"
        self.document = {}
        self.session = None
        self.segmentationNode = None
        self.markupsNode = None
        self.tableNode = None

    @staticmethod
    def models():
        from CMBLib.detection.model_io import list_models

        return list_models()

    @property
    def running(self):
        return self.process is not None and self.process.running

    # --- dependencies -------------------------------------------------------------------
    @staticmethod
    def missingPackages():
        import importlib.util

        missing = [req for name, req in REQUIREMENTS.items() if importlib.util.find_spec(name) is None]
        torch = importlib.util.find_spec("torch") is not None
        return torch, missing

    def ensureDependencies(self, ask):
        """Install torch (PyTorch extension) and the other packages after `ask(text)` returns True."""
        hasTorch, missing = self.missingPackages()
        if hasTorch and not missing:
            return True
        what = ([] if hasTorch else ["PyTorch (through the PyTorch extension)"]) + missing
        if not ask("CMB detection needs these Python packages, which are not installed yet:\n\n"
                   + "\n".join(what) + "\n\nInstall them now? This can take several minutes."):
            return False
        if not hasTorch:
            try:
                import PyTorchUtils
            except ImportError:
                slicer.util.errorDisplay("Install the 'PyTorch' extension from the Extensions Manager, "
                                         "restart Slicer, and press Apply again.")
                return False
            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                             torchVersionRequirement=">=2.0") is None:
                slicer.util.errorDisplay("PyTorch could not be installed.")
                return False
        for requirement in missing:  # one at a time: older Slicer passes the string to pip as one argument
            slicer.util.pip_install(requirement)
        return True

    # --- running ------------------------------------------------------------------------
    def start(self, volumeNode, model="default", device="auto", threshold=None, sequence="T2S",
              location=False, outputDir=None):
        """Export `volumeNode` and start `cmb detect` on it in a separate process."""
        from CMBDetectorLib.process import build_detect_command, python_slicer

        self.cancel()
        self.inputVolume = volumeNode
        self.outputDir = outputDir or slicer.util.tempDirectory("CMBDetector")
        os.makedirs(self.outputDir, exist_ok=True)
        self.imageName = safeName(volumeNode.GetName())
        image = os.path.join(self.outputDir, self.imageName + ".nrrd")
        slicer.util.exportNode(volumeNode, image)
        cmd = build_detect_command(python_slicer(), image, self.outputDir, model=model, device=device,
                                   threshold=threshold, sequence=sequence, location=location)
        logging.info("CMBDetector: %s", " ".join(cmd))
        self.process = self.processFactory()
        self.process.start(cmd)

    def poll(self):
        return self.process.poll() if self.process is not None else []

    def cancel(self):
        if self.process is not None:
            self.process.cancel()

    def resultJson(self):
        path = os.path.join(self.outputDir or "", f"{self.imageName}_cmb.json")
        return path if os.path.isfile(path) else None

    # --- results ------------------------------------------------------------------------
    def loadResults(self, jsonPath, volumeNode):
        """Segmentation (one segment per CMB), markups at the centres and a table from NAME_cmb.json."""
        from CMBDetectorLib.review import ReviewSession, segment_name

        from CMBLib.detection.outputs import read_detections

        self.document = read_detections(jsonPath)
        records = self.document["cmbs"]
        self.session = ReviewSession(records)
        base = volumeNode.GetName() if volumeNode else "CMB"
        maskPath = jsonPath[: -len("_cmb.json")] + "_cmb_mask.nii.gz"

        seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{base} CMB candidates")
        seg.CreateDefaultDisplayNodes()
        if volumeNode:
            seg.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        ids = vtk.vtkStringArray()
        for rec in records:
            segId = seg.GetSegmentation().AddEmptySegment(f"CMB_{rec['label']}", segment_name(rec),
                                                          STATUS_COLORS["unreviewed"])
            segment = seg.GetSegmentation().GetSegment(segId)
            segment.SetTag(LABEL_TAG, str(rec["label"]))
            segment.SetTag(STATUS_TAG, "unreviewed")
            ids.InsertNextValue(segId)
        if records:
            labelmap = slicer.util.loadLabelVolume(maskPath, {"show": False})
            slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, seg, ids)
            slicer.mrmlScene.RemoveNode(labelmap)
        seg.SetAttribute("CMBDetector.DetectionsFile", jsonPath)
        self.segmentationNode = seg

        points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"{base} CMB centres")
        for rec in records:
            n = points.AddControlPoint(list(rec["centre_ras"]), f"CMB {rec['label']}")
            points.SetNthControlPointDescription(n, segment_name(rec))
            points.SetNthControlPointLocked(n, True)
        self.markupsNode = points

        table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", f"{base} CMB table")
        columns = ["label", "status", "diameter_mm", "size_class", "max_probability", "location", "vessel_like",
                   "x_ras", "y_ras", "z_ras"]
        for name in columns:
            col = table.AddColumn()
            col.SetName(name)
        for rec in records:
            row = table.AddEmptyRow()
            values = [rec["label"], "unreviewed", rec["diameter_mm"], rec["size_class"], rec["max_probability"],
                      rec.get("location", ""), int(bool(rec.get("vessel_like")))] + list(rec["centre_ras"])
            for col, value in enumerate(values):
                table.SetCellText(row, col, str(value))
        self.tableNode = table
        return seg, points, table

    def jumpTo(self, record):
        """Centre all slice views on a candidate."""
        if record is None:
            return
        x, y, z = record["centre_ras"]
        slicer.modules.markups.logic().JumpSlicesToLocation(x, y, z, True)

    def setStatus(self, record, status):
        """Show a review decision on the segment (colour, tag) and in the table."""
        segId = f"CMB_{record['label']}"
        if self.segmentationNode is not None:
            segment = self.segmentationNode.GetSegmentation().GetSegment(segId)
            if segment is not None:
                segment.SetTag(STATUS_TAG, status)
                segment.SetColor(*STATUS_COLORS[status])
        if self.tableNode is not None:
            row = [r["label"] for r in self.session.records].index(record["label"])
            self.tableNode.SetCellText(row, 1, status)

    def handOver(self):
        """Give accepted candidates (with their masks) to CMBScribbleAnnotator.

        The hand-over is the segmentation node itself: its segments are the masks (tag
        ``CMBDetector.Label`` = label, ``CMBDetector.ReviewStatus``), and its attribute
        ``CMBDetector.Findings`` holds the findings as JSON (accepted -> "confirmed",
        unreviewed -> "proposed"; `CMBLib.detection.outputs.records_to_findings`).
        When the annotator module offers ``importDetectorFindings(segmentationNode,
        volumeNode, findings)`` it is called; otherwise the annotator reads the attribute.
        """
        if self.session is None or self.segmentationNode is None:
            raise ValueError("run detection first")
        findings = self.session.findings()
        self.segmentationNode.SetAttribute(HANDOVER_ATTRIBUTE, json.dumps(findings))
        accepted = sum(f["review_status"] == "confirmed" for f in findings)
        annotator = getattr(slicer.modules, "cmbscribbleannotator", None)
        if annotator is not None:
            widget = annotator.widgetRepresentation().self()
            target = getattr(widget, "importDetectorFindings", None) or getattr(
                getattr(widget, "logic", None), "importDetectorFindings", None)
            if target is not None:
                target(self.segmentationNode, self.inputVolume, findings)
                slicer.util.selectModule("CMBScribbleAnnotator")
                return f"{accepted} accepted candidate(s) sent to CMB Scribble Annotator."
        return (f"{accepted} accepted candidate(s) marked on '{self.segmentationNode.GetName()}'; "
                "open CMB Scribble Annotator and import the detector's segmentation.")


def safeName(name):
    """A file-name-safe version of a node name."""
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)).strip("._")
    return keep or "input"


#
# Test
#


class CMBDetectorTest(ScriptedLoadableModuleTest):
    """Slicer self-test of the glue: results -> nodes, review, hand-over, process round trip."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_loadResultsAndReview()
        self.setUp()
        self.test_processRoundTrip()

    def _writeResults(self, folder):
        """A synthetic volume and detection outputs for it, made with CMBLib (no torch needed)."""
        import numpy as np

        from CMBLib.detection.candidates import find_candidates
        from CMBLib.detection.outputs import write_outputs
        from CMBLib.detection.pipeline import DetectionResult
        from CMBLib.geometry import Volume

        prob = np.zeros((20, 40, 40), np.float32)
        prob[10, 10:13, 10:13] = 0.9
        prob[5:8, 25:28, 25:29] = 0.7
        geom = Volume(prob, (0.9, 0.9, 3.0), (-18.0, -18.0, -30.0))
        labels, records, dropped = find_candidates(geom, 0.5)
        settings = {"model": "self-test", "model_version": "0", "threshold": 0.5, "device": "cpu"}
        result = DetectionResult(geom.with_array(labels), geom, records, settings, {"total": 0.0}, [], dropped)
        write_outputs(result, folder, "selftest", overwrite=True)
        volumeNode = slicer.util.addVolumeFromArray((100 - 50 * prob).astype("float32"), name="selftest")
        volumeNode.SetSpacing(0.9, 0.9, 3.0)
        volumeNode.SetOrigin(-18.0, -18.0, -30.0)  # Slicer origin and directions are RAS, as in Volume
        return os.path.join(folder, "selftest_cmb.json"), volumeNode, records

    def test_loadResultsAndReview(self):
        self.delayDisplay("Loading detection results into nodes")
        folder = slicer.util.tempDirectory("CMBDetectorTest")
        jsonPath, volumeNode, records = self._writeResults(folder)
        logic = CMBDetectorLogic()
        seg, points, table = logic.loadResults(jsonPath, volumeNode)
        self.assertEqual(seg.GetSegmentation().GetNumberOfSegments(), len(records))
        self.assertEqual(points.GetNumberOfControlPoints(), len(records))
        self.assertEqual(table.GetNumberOfRows(), len(records))
        first = seg.GetSegmentation().GetSegment("CMB_1")
        self.assertTrue(first.GetName().startswith("CMB 1: "))
        pos = [0.0, 0.0, 0.0]
        points.GetNthControlPointPosition(0, pos)
        for a, b in zip(pos, records[0]["centre_ras"]):
            self.assertAlmostEqual(a, b, places=2)
        logic.jumpTo(records[0])
        logic.setStatus(records[0], "accepted")
        logic.session.mark("accepted")
        self.assertTrue(first.HasTag(STATUS_TAG))
        for a, b in zip(first.GetColor(), STATUS_COLORS["accepted"]):
            self.assertAlmostEqual(a, b, places=3)
        self.assertEqual(table.GetCellText(0, 1), "accepted")
        findings = logic.session.findings()
        self.assertEqual([f["review_status"] for f in findings], ["confirmed", "proposed"])
        logic.handOver()
        self.assertEqual(len(json.loads(seg.GetAttribute(HANDOVER_ATTRIBUTE))), 2)
        self.delayDisplay("Results and review OK")

    def test_processRoundTrip(self):
        """Start/poll/finish with a stand-in process that replays JSON progress lines."""
        self.delayDisplay("Process glue")
        folder = slicer.util.tempDirectory("CMBDetectorTest")
        jsonPath, volumeNode, records = self._writeResults(folder)

        class FakeProcess:
            running = False

            def start(self, command, env=None):
                self.command = command

            def poll(self):
                return [{"event": "progress", "progress": 0.5, "message": "half"},
                        {"event": "exit", "returncode": 0, "cancelled": False, "stderr": []}]

            def cancel(self):
                pass

        logic = CMBDetectorLogic(processFactory=FakeProcess)
        logic.start(volumeNode, model="self-test", outputDir=folder)
        self.assertIn("--progress-json", logic.process.command)
        events = logic.poll()
        self.assertEqual(events[-1]["event"], "exit")
        logic.imageName = "selftest"
        self.assertEqual(logic.resultJson(), jsonPath)
        self.delayDisplay("Process glue OK")
