"""CMBDetector: one-click detection of cerebral microbleeds, and review of the candidates.

Glue only (see docs/slicer.md): the GUI is Resources/UI/CMBDetector.ui, the state is a
parameter node, the work is in CMBDetectorLib (`DetectorLogic`: the warm `cmb worker`
process driven by qt.QProcess, results -> nodes, review, hand-over) and CMBLib.
Review keys while "Review keys" is checked: A accept, X reject, N next, P previous.
"""
import logging
from typing import Annotated

import qt
import slicer
from CMBDetectorLib.logic import STATUS_COLORS, DetectorLogic
from CMBDetectorLib.selftest import CMBDetectorTest  # noqa: F401 - found by name by Slicer's test runner
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

SEQUENCES = ("T2S", "SWI", "QSM")
DEVICES = ("auto", "cuda", "mps", "cpu")
REVIEW_KEYS = (("A", "accepted"), ("X", "rejected"), ("N", "next"), ("P", "previous"))
TABLE_HEADER = ["#", "status", "diam. mm", "class", "prob.", "location", "shape"]


class CMBDetector(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CMB Detector"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["CMB Slicer contributors"]
        self.parent.helpText = (
            "Detect cerebral microbleeds on SWI, T2*-GRE or QSM in one click, then review each candidate "
            "(A accept, X reject, N next, P previous while 'Review keys' is checked). See docs/slicer.md.")
        self.parent.acknowledgementText = "Uses MONAI and PyTorch. Detection runs in a separate, warm process."


@parameterNodeWrapper
class CMBDetectorParameterNode:
    """Module state, saved with the scene: inputs, the candidates and their review."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    sequence: Annotated[str, Choice(list(SEQUENCES))] = "T2S"
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    threshold: float = 0.0
    location: bool = False
    candidateClassifier: bool = False    # off: the model's default (second stage off since cmb-default 0.3.2)
    nativeStage: bool = False            # off: the model's default first stage (docs/native_stage.md)
    locationFilter: bool = True          # on: the model's location filter; off: nothing set aside by location
    outputFolder: str = ""
    model: str = ""
    candidates: slicer.vtkMRMLSegmentationNode
    reviewState: str = ""
    priorVolume: slicer.vtkMRMLScalarVolumeNode     # "Compare with prior": the baseline; inputVolume = follow-up
    compareTolerance: float = 5.0
    compareResult: str = ""              # compare.json of the last comparison
    compareReview: str = ""              # decisions on its new CMBs (CMBLib.compare.review.CompareReview)


class CMBDetectorWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.models = []
        self.shortcuts = []
        self._parameterNode = None
        self._guiTag = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CMBDetector.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CMBDetectorLogic()
        self.logic.onEvent = self.onWorkerEvent
        self.ui.table.setColumnCount(len(TABLE_HEADER))
        self.ui.table.setHorizontalHeaderLabels(TABLE_HEADER)
        self.ui.table.horizontalHeader().setStretchLastSection(True)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.modelCombo.connect("currentIndexChanged(int)", self.updateModelCard)
        self.ui.outputPath.connect("currentPathChanged(QString)", lambda path: self._setParameter("outputFolder", path))
        self.ui.table.connect("itemSelectionChanged()", self.onRowSelected)
        self.ui.reviewCheck.connect("toggled(bool)", self.setReviewMode)
        self.ui.acceptButton.connect("clicked(bool)", lambda: self.onReview("accepted"))
        self.ui.rejectButton.connect("clicked(bool)", lambda: self.onReview("rejected"))
        self.ui.nextButton.connect("clicked(bool)", lambda: self.onReview("next"))
        self.ui.previousButton.connect("clicked(bool)", lambda: self.onReview("previous"))
        self.ui.handOverButton.connect("clicked(bool)", self.onHandOver)
        from CMBDetectorLib.compare_panel import ComparePanel
        from CMBDetectorLib.panels import ImprovePanel, ReportPanel

        self.improve = ImprovePanel(self)
        self.report = ReportPanel(self.ui, self.logic.reportSource, lambda: self.logic.reportVolume,
                                  self.ui.reportStatusLabel)
        self.fillModels()
        self.compare = ComparePanel(self)
        self.initializeParameterNode()

    def onReload(self):
        """Reload the Lib packages too (a plain reload keeps their old code)."""
        import sys

        if self.logic is not None:
            self.logic.shutdown()
        for name in [n for n in sys.modules if n.split(".")[0] in ("CMBDetectorLib", "CMBLib")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self):
        self.setReviewMode(False)
        self.removeObservers()
        if self.logic:
            self.logic.shutdown()
            self.logic.cancelTraining()      # only here: leaving the module or the scene keeps training
            self.report.cancel()
        ScriptedLoadableModuleWidget.cleanup(self)

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        """Leaving the module: keys off, GUI disconnected, warm worker stopped (frees its memory)."""
        self.setReviewMode(False)
        self.ui.reviewCheck.checked = False
        if not self.logic.running:
            self.logic.shutdown()
        self.setParameterNode(None)

    # --- parameter node and scene -------------------------------------------------------
    def onSceneStartClose(self, caller, event):
        if caller is None:      # the scene is being destroyed (Slicer exits): cleanup() ran already
            return
        self.setReviewMode(False)
        self.logic.cancel()
        self.logic.shutdown()
        self.setParameterNode(None)
        self.logic.session = self.logic.segmentationNode = self.logic.markupsNode = self.logic.tableNode = None
        self.logic.asideNode = None
        self.fillTable()
        self.compare.sceneClosed()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if p.candidates is not None and self.logic.session is None:
            self.logic.restoreReview(p.candidates, p.reviewState)
            self.fillTable()
        self.compare.restore()

    def setParameterNode(self, parameterNode):
        if self._parameterNode is not None and self._guiTag is not None:
            self._parameterNode.disconnectGui(self._guiTag)
            self._guiTag = None
        self._parameterNode = parameterNode
        if parameterNode is not None:
            self._guiTag = parameterNode.connectGui(self.ui)
            self.ui.outputPath.currentPath = parameterNode.outputFolder
            index = self.ui.modelCombo.findData(parameterNode.model) if parameterNode.model else -1
            if index >= 0:
                self.ui.modelCombo.setCurrentIndex(index)
        self.updateButtons()

    def _setParameter(self, name, value):
        if self._parameterNode is not None:
            setattr(self._parameterNode, name, value)

    def saveReview(self):
        if self._parameterNode is not None:
            self._parameterNode.candidates = self.logic.segmentationNode
            self._parameterNode.reviewState = self.logic.reviewState()

    # --- models -------------------------------------------------------------------------
    def fillModels(self, select=None):
        """Bundled and fine-tuned models; `select`: the folder to make current (a new model)."""
        from CMBDetectorLib.jobs import model_index, model_label
        from CMBDetectorLib.review import model_card_html

        self._cardHtml = model_card_html
        current = select or self.ui.modelCombo.currentData
        self.ui.modelCombo.blockSignals(True)
        self.ui.modelCombo.clear()
        self.models = self.logic.models()
        for m in self.models:
            self.ui.modelCombo.addItem(model_label(m), m["path"])
        self.ui.modelCombo.addItem("Other model folder...", "")
        self.ui.modelCombo.setCurrentIndex(max(model_index(self.models, current), 0))
        self.ui.modelCombo.blockSignals(False)
        self.updateModelCard()

    def selectedModelInfo(self):
        i = self.ui.modelCombo.currentIndex
        return self.models[i] if 0 <= i < len(self.models) else None

    def updateModelCard(self, *_):
        from CMBDetectorLib.jobs import classifier_available, native_available

        i = self.ui.modelCombo.currentIndex
        self.ui.candidateClassifierCheck.enabled = classifier_available(self.selectedModelInfo())
        self.ui.nativeStageCheck.enabled = native_available(self.selectedModelInfo())
        if 0 <= i < len(self.models):
            self._setParameter("model", self.models[i]["path"])
            self.ui.modelCard.text = self._cardHtml(self.models[i])
        else:
            self.ui.modelCard.text = ("No bundled model is installed; choose a model folder." if not self.models
                                      else "A folder with model.json and weights.npz.")

    def selectedModel(self):
        path = self.ui.modelCombo.currentData
        if path:
            return path
        return qt.QFileDialog.getExistingDirectory(None, "Model folder (model.json + weights.npz)") or None

    # --- run ----------------------------------------------------------------------------
    def onApply(self):
        with slicer.util.tryWithErrorDisplay("Detection could not start.", waitCursor=True):
            self._apply()

    def _apply(self):
        from CMBDetectorLib.jobs import first_stage_request, second_stage_request

        p = self._parameterNode
        volume = p.inputVolume
        if volume is None:
            raise ValueError("Select an input volume first.")
        model = self.selectedModel()
        if not model or not self.logic.ensureDependencies(slicer.util.confirmOkCancelDisplay):
            self.ui.statusLabel.text = "Nothing was run."
            return
        overwrite = False
        if self.logic.outputExists(volume, p.outputFolder):
            if not slicer.util.confirmYesNoDisplay(f"Detection results of '{volume.GetName()}' exist in "
                                                   f"{p.outputFolder}. Replace them?"):
                return
            overwrite = True
        cold = self.logic.worker is None or not self.logic.worker.alive
        self.logic.start(volume, model=model, device=p.device, threshold=p.threshold or None, sequence=p.sequence,
                         location=p.location, outputDir=p.outputFolder or None, overwrite=overwrite,
                         second_stage=second_stage_request(p.candidateClassifier, self.selectedModelInfo()),
                         location_filter=None if p.locationFilter else False,
                         first_stage=first_stage_request(p.nativeStage, self.selectedModelInfo()))
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.text = ("Starting the detection process (loads PyTorch and the model once)..."
                                    if cold else "Detecting...")
        self.updateButtons()

    def onCancel(self):
        self.logic.cancel()
        self.ui.statusLabel.text = "Cancelling..."

    def onWorkerEvent(self, event):
        kind = event.get("event")
        if kind == "progress":
            self.ui.progressBar.setValue(int(1000 * float(event.get("progress", 0))))
            self.ui.statusLabel.text = str(event.get("message", ""))
        elif kind == "result":
            self.onFinished(event)
        elif kind == "error":
            self.ui.statusLabel.text = f"Detection failed: {event.get('message')}"
            slicer.util.errorDisplay(f"Detection failed: {event.get('message')}")
        elif kind == "exit":
            from CMBDetectorLib.process import error_message

            self.ui.progressBar.setValue(0)
            self.ui.statusLabel.text = ("Cancelled." if event.get("cancelled") else
                                        f"The detection process ended: {error_message(event)}")
        self.updateButtons()

    def onFinished(self, event):
        with slicer.util.tryWithErrorDisplay("Could not load the detection results."):
            self.logic.loadResults(self.logic.resultPath, self.logic.run["volume"])
            self.saveReview()
            self.ui.progressBar.setValue(1000)
            t = event.get("timings", {})
            warnings = event.get("warnings") or []
            aside = len((self.logic.document or {}).get("suppressed_candidates") or [])
            self.ui.statusLabel.text = (f"{len(self.logic.session.records)} candidate(s) in {t.get('total', 0):.1f} s."
                                        + (f" {aside} set aside by location as likely veins: shown as grey"
                                           " 'set aside' points, not findings." if aside else "")
                                        + (" " + " ".join(warnings) if warnings else ""))
            self.fillTable()

    def updateButtons(self):
        running = self.logic.running
        self.ui.applyButton.enabled = not running and self._parameterNode is not None
        self.ui.cancelButton.enabled = running
        if getattr(self, "compare", None) is not None:
            self.compare.update()
        has = self.logic.session is not None and bool(self.logic.session.records)
        for w in (self.ui.reviewCheck, self.ui.acceptButton, self.ui.rejectButton, self.ui.nextButton,
                  self.ui.previousButton, self.ui.handOverButton):
            w.enabled = has

    # --- review -------------------------------------------------------------------------
    def fillTable(self):
        from CMBDetectorLib.review import table_row

        session = self.logic.session
        records = session.records if session else []
        self.ui.table.blockSignals(True)
        try:
            self.ui.table.setRowCount(len(records))
            for row, rec in enumerate(records):
                for col, text in enumerate(table_row(rec, session.status[int(rec["label"])])):
                    self.ui.table.setItem(row, col, qt.QTableWidgetItem(text))
                color = STATUS_COLORS[session.status[int(rec["label"])]]
                self.ui.table.item(row, 1).setBackground(qt.QColor.fromRgbF(*color))
            if session and session.current is not None:
                self.ui.table.selectRow(session.index)
        finally:
            self.ui.table.blockSignals(False)
        self.updateButtons()

    def onRowSelected(self):
        rows = self.ui.table.selectionModel().selectedRows()
        if rows and self.logic.session is not None:
            self.logic.session.select(rows[0].row())
            self.logic.jumpTo(self.logic.session.current)
            self.saveReview()

    def onReview(self, action):
        session = self.logic.session
        if session is None or session.current is None:
            return
        if action in ("accepted", "rejected"):
            self.logic.setStatus(session.current, action)
            session.next(unreviewed_only=True)
        elif action == "next":
            session.next()
        else:
            session.previous()
        self.logic.jumpTo(session.current)
        self.saveReview()
        self.fillTable()

    def setReviewMode(self, on):
        for s in self.shortcuts:
            s.setEnabled(False)
            s.setParent(None)
        self.shortcuts = []
        if not on:
            return
        for key, action in REVIEW_KEYS:
            shortcut = qt.QShortcut(qt.QKeySequence(key), slicer.util.mainWindow())
            shortcut.connect("activated()", lambda a=action: self.onReview(a))
            self.shortcuts.append(shortcut)

    def onHandOver(self):
        with slicer.util.tryWithErrorDisplay("Hand-over to CMB Scribble Annotator failed."):
            target = slicer.util.getModuleLogic("CMBScribbleAnnotator")
            if hasattr(target, "ensureDependencies") and not target.ensureDependencies(
                    slicer.util.confirmOkCancelDisplay):
                return
            accepted, _ = self.logic.handOver(target)
            slicer.util.selectModule("CMBScribbleAnnotator")
            logging.info("CMBDetector: %d accepted candidate(s) sent to CMB Scribble Annotator", accepted)


class CMBDetectorLogic(ScriptedLoadableModuleLogic, DetectorLogic):
    """Module logic: `DetectorLogic` registered as a Slicer logic, with the parameter node
    and the one consent dialog for the Python packages detection needs."""

    def __init__(self, processFactory=None, python=None):
        ScriptedLoadableModuleLogic.__init__(self)
        DetectorLogic.__init__(self, processFactory=processFactory, python=python)

    def getParameterNode(self):
        return CMBDetectorParameterNode(super().getParameterNode())

    @staticmethod
    def ensureDependencies(ask):
        """One question, then torch through the PyTorch extension only and the pip packages;
        a failure is shown as one error message.  True when everything is present."""
        from CMBLib import dependencies

        def torchLogic():
            try:
                import PyTorchUtils
            except ImportError:
                return None          # dependencies.install says how to get the PyTorch extension
            return PyTorchUtils.PyTorchUtilsLogic()

        return dependencies.ensure(
            "detection", ask, slicer.util.pip_install, torch_logic_factory=torchLogic,
            guard=lambda: slicer.util.tryWithErrorDisplay("Installing the Python packages for detection failed.",
                                                          waitCursor=True))
