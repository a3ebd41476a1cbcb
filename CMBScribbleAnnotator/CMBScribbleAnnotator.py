"""CMBScribbleAnnotator: scribble CMBs, record BOMBS metadata, mark mimics, see each CMB's
grown mask when the brush is lifted, export a training-ready dataset.  Glue only: GUI in
Resources/UI/CMBScribbleAnnotator.ui (filled by `CMBScribbleAnnotatorLib.form`), state in a
parameter node, node work in `CMBScribbleAnnotatorLib.logic`, algorithms in CMBLib.  Shortcuts: docs/slicer.md."""
import json
import os
from typing import Annotated

import qt
import slicer
from CMBScribbleAnnotatorLib import form, nodes, report
from CMBScribbleAnnotatorLib.logic import AnnotatorLogic
from CMBScribbleAnnotatorLib.selftest import CMBScribbleAnnotatorTest  # noqa: F401 - found by Slicer's test runner
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from CMBLib.annotation import vocabulary as V

SETTINGS_RATER = "CMBScribbleAnnotator/Rater"
SETTINGS_DATASET = "CMBScribbleAnnotator/Dataset"


class CMBScribbleAnnotator(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CMB Scribble Annotator"
        self.parent.categories = ["Segmentation.CMB"]
        self.parent.dependencies = ["Segmentations", "Markups"]
        self.parent.contributors = ["CMB Slicer contributors"]
        self.parent.helpText = (
            "Annotate cerebral microbleeds with scribbles (one segment per CMB, smallest brush), "
            "record BOMBS metadata per CMB, place mimic landmarks, see the grown 3D mask when the brush is "
            "lifted, and export the study as a BIDS-derivatives dataset. Work is autosaved after every change.")
        self.parent.acknowledgementText = (
            "Annotation protocol after the scribble + BOMBS protocol of the CMB segmentation thesis "
            "(section IV.B).")


@parameterNodeWrapper
class CMBScribbleAnnotatorParameterNode:
    """Module state, saved with the scene."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    brushDiameter: Annotated[float, WithinRange(0.1, 10.0)] = 1.0
    liveMask: bool = True


class CMBScribbleAnnotatorWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.currentLabel = None
        self.shortcuts = form.Shortcuts()
        self._updating = False
        self._parameterNode = None
        self._guiTag = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CMBScribbleAnnotator.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        settings = qt.QSettings()
        self.logic = CMBScribbleAnnotatorLogic(rater=str(settings.value(SETTINGS_RATER, "")))
        self.artefactChecks = form.fill(self.ui)
        self.saveTimer = form.singleShotTimer(1000, self.autosaveNow)
        self.liveTimer = form.singleShotTimer(0, self.onStrokeEnded)     # coalesces the events of one stroke
        form.setupEditor(self.ui.editor)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.raterEdit.text = str(settings.value(SETTINGS_RATER, ""))
        self.ui.datasetButton.directory = str(settings.value(SETTINGS_DATASET, os.path.expanduser("~")))
        form.connect(self.ui, self)
        self.reportPanel = report.panel(self)     # "Save report", "Export DICOM SEG"
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self._setEnabled(False)
        self.initializeParameterNode()

    def onReload(self):
        """Reload the Lib packages too (a plain reload keeps their old code)."""
        import sys

        self.cleanup()
        for name in [n for n in sys.modules if n.split(".")[0] in ("CMBScribbleAnnotatorLib", "CMBLib")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    # --- module life cycle, parameter node, scene ----------------------------------------
    def enter(self):
        """Shortcuts work in the whole main window (the rater paints in the slice views)."""
        self.initializeParameterNode()
        self.ui.editor.installKeyboardShortcuts()
        self.shortcuts.clear()
        for key, (field, value) in V.SHORTCUTS.items():
            self.shortcuts.add(f"Alt+{key}", lambda f=field, v=value: self.onFieldEdited(f, v, refreshForm=True))
        self.shortcuts.add("Alt+N", lambda: self.stepFinding(+1))
        self.shortcuts.add("Alt+P", lambda: self.stepFinding(-1))
        if self.logic.volumeNode is not None:                # e.g. after CMBDetector's hand-over
            self._detach()
            self._showVolume(self.logic.volumeNode)
            self._attach(self.logic.volumeNode)

    def exit(self):
        self.ui.editor.setActiveEffect(None)
        self.ui.editor.uninstallKeyboardShortcuts()
        self.shortcuts.clear()
        self.flushAutosave()
        self.setParameterNode(None)

    def cleanup(self):
        self.shortcuts.clear()
        self.flushAutosave()
        self.removeObservers()

    def onSceneStartClose(self, caller, event):
        if caller is None:      # the scene is being destroyed (Slicer exits): cleanup() ran already
            return
        self.flushAutosave()
        self.liveTimer.stop()
        self.setParameterNode(None)
        self._detach()
        self.logic.clear()
        self.currentLabel = None
        self._setEnabled(False)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        saved = self._parameterNode.inputVolume            # a re-opened scene: offer its volume again
        if saved is not None and self.logic.volumeNode is None and self.ui.volumeSelector.currentNode() is None:
            self.ui.volumeSelector.setCurrentNode(saved)

    def setParameterNode(self, parameterNode):
        if self._parameterNode is not None and self._guiTag is not None:
            self._parameterNode.disconnectGui(self._guiTag)
            self._guiTag = None
        self._parameterNode = parameterNode
        if parameterNode is not None:
            self._guiTag = parameterNode.connectGui(self.ui)

    def _setEnabled(self, enabled):
        ui = self.ui
        for widget in (ui.table, ui.addButton, ui.deleteButton, ui.previousButton, ui.nextButton, ui.editor,
                       ui.generateAllButton, ui.generateSelectedButton, ui.exportButton, ui.toleranceSlider):
            widget.setEnabled(enabled)

    # --- volume and session --------------------------------------------------------------
    def onVolumeChanged(self, volumeNode):
        self.flushAutosave()
        self._detach()
        self.currentLabel = None
        if self._parameterNode is not None:
            self._parameterNode.inputVolume = volumeNode
        if volumeNode is None or not self.logic.ensureDependencies(slicer.util.confirmOkCancelDisplay):
            self._setEnabled(False)
            return
        if form.run(self.ui.statusLabel, lambda: self.logic.setVolume(volumeNode), busy=True) is None:
            return
        if self.logic.hasSavedSession():
            info = self.logic.savedSessionInfo()
            if slicer.util.confirmYesNoDisplay(
                    f"An autosaved annotation of this volume exists (saved {info.get('saved', '?')}). "
                    "Restore it?\n\nIf you answer No, the next change replaces it."):
                form.run(self.ui.statusLabel, self.logic.restore, "restored the autosaved annotation", busy=True)
        self._attach(volumeNode)

    def _showVolume(self, volumeNode):
        """Select `volumeNode` in the selector without starting a fresh annotation."""
        self.ui.volumeSelector.blockSignals(True)
        self.ui.volumeSelector.setCurrentNode(volumeNode)
        self.ui.volumeSelector.blockSignals(False)

    def _attach(self, volumeNode):
        """Point the editor, the mimic list and the form at the logic's current nodes."""
        self.ui.editor.setSegmentationNode(self.logic.scribblesNode)
        self.ui.editor.setSourceVolumeNode(volumeNode)
        self.ui.placeWidget.setCurrentNode(self.logic.mimicsNode)
        if getattr(self, "_brushFor", None) is not volumeNode:     # a new volume: brush of 1.5 voxels
            self._brushFor = volumeNode
            self.ui.brushSpin.value = 1.5 * min(volumeNode.GetSpacing()[:2])
        self.ui.subjectEdit.text = self.logic.document["study"].get("subject", "") or self.ui.subjectEdit.text
        segmentation = self.logic.scribblesNode.GetSegmentation()
        for event in (slicer.vtkSegmentation.SourceRepresentationModified, slicer.vtkSegmentation.SegmentAdded,
                      slicer.vtkSegmentation.SegmentRemoved):
            self.addObserver(segmentation, event, self.onScribblesModified)
        markups = self.logic.mimicsNode
        self.addObserver(markups, markups.PointPositionDefinedEvent, self.onMimicPlaced)
        for event in (markups.PointModifiedEvent, markups.PointRemovedEvent):
            self.addObserver(markups, event, self.scheduleAutosave)
        self._setEnabled(True)
        self.refreshAll()

    def _detach(self):
        """Stop observing the annotation nodes (the scene observers stay)."""
        for method in (self.onScribblesModified, self.onMimicPlaced, self.scheduleAutosave):
            self.removeObservers(method)

    def onRaterChanged(self):
        qt.QSettings().setValue(SETTINGS_RATER, self.ui.raterEdit.text)
        self.logic.rater = self.ui.raterEdit.text
        if self.logic.document is not None:
            self.logic.document["rater"] = self.ui.raterEdit.text
            self.scheduleAutosave()

    def scheduleAutosave(self, *_args):
        self.saveTimer.start()

    def flushAutosave(self):
        if self.saveTimer.isActive():
            self.saveTimer.stop()
            self.autosaveNow()

    def autosaveNow(self):
        if self.logic.document is None:
            return
        folder = form.run(self.ui.statusLabel, self.logic.autosave, showErrorAs="Autosave failed")
        if folder is not None:
            self.ui.statusLabel.text = f"Autosaved to {folder}"

    def onScribblesModified(self, *_args):
        if self._parameterNode is not None and self._parameterNode.liveMask:
            self.liveTimer.start()
        self.scheduleAutosave()

    def onStrokeEnded(self):
        """The brush was lifted: grow the live mask of the scribble that changed."""
        grown = form.run(self.ui.statusLabel, self.logic.liveGrow, showErrorAs="Live mask failed")
        if grown and self.currentLabel in grown:
            self._updating = True          # setting the slider must not count as the rater's choice
            try:
                form.showTolerance(self.ui, grown[self.currentLabel], grown[self.currentLabel].tolerance)
            finally:
                self._updating = False

    def onToleranceChanged(self, value):
        if not self._updating and self.currentLabel in self.logic.grown:
            form.run(self.ui.statusLabel, lambda: self.logic.showMask(self.currentLabel, value))
            self.scheduleAutosave()

    def onMimicPlaced(self, caller, _event):
        index = caller.GetNumberOfControlPoints() - 1
        if index >= 0:
            mimicType = self.ui.mimicType.currentData
            caller.SetNthControlPointLabel(index, mimicType)
            caller.SetNthControlPointDescription(index, json.dumps({"type": mimicType}))
        self.scheduleAutosave()

    # --- findings ------------------------------------------------------------------------
    def refreshAll(self):
        self._updating = True
        try:
            form.showTable(self.ui, self.logic.findings(), self.currentLabel)
            form.showFinding(self.ui, self._currentFinding())
            if self.logic.document is not None:
                form.showStudy(self.ui, self.logic.document["study"], self.artefactChecks)
            grown = self.logic.grown.get(self.currentLabel)
            form.showTolerance(self.ui, grown, self.logic.tolerances.get(self.currentLabel, grown and grown.tolerance))
        finally:
            self._updating = False

    def _currentFinding(self):
        return next((f for f in self.logic.findings() if f["label"] == self.currentLabel), None)

    def selectFinding(self, label):
        """Make `label` current: its segment gets the brush, the views centre on it."""
        self.currentLabel = label
        segmentId = nodes.segmentIdForLabel(self.logic.scribblesNode, label)
        if segmentId:
            self.ui.editor.setCurrentSegmentID(segmentId)
        centre = self.logic.findingCentre(label)
        if centre is not None:
            nodes.jumpTo(centre)
        self.refreshAll()

    def onTableSelection(self):
        rows = self.ui.table.selectionModel().selectedRows()
        if rows and not self._updating:
            self.selectFinding(self.logic.findings()[rows[0].row()]["label"])

    def stepFinding(self, step):
        labels = [f["label"] for f in self.logic.findings()]
        if labels:
            index = labels.index(self.currentLabel) + step if self.currentLabel in labels else 0
            self.selectFinding(labels[index % len(labels)])

    def onAddFinding(self):
        label = self.logic.addFinding()
        self.selectFinding(label)
        self.ui.editor.setActiveEffectByName("Paint")
        self.onBrushChanged(self.ui.brushSpin.value)
        self.scheduleAutosave()

    def onDeleteFinding(self):
        if self.currentLabel is None or not slicer.util.confirmYesNoDisplay(
                f"Delete CMB {self.currentLabel} with its scribble and mask?"):
            return
        self.logic.deleteFinding(self.currentLabel)
        self.currentLabel = None
        self.refreshAll()
        self.scheduleAutosave()

    def onBrushChanged(self, diameterMm):
        effect = self.ui.editor.effectByName("Paint")
        if effect is not None:
            # Common (not Paint-only) parameters, so Erase uses the same small brush.
            effect.setCommonParameter("BrushDiameterIsRelative", "0")
            effect.setCommonParameter("BrushAbsoluteDiameter", str(float(diameterMm)))
            effect.setCommonParameter("BrushSphere", "0")

    # --- metadata ------------------------------------------------------------------------
    def onFieldEdited(self, field, value, refreshForm=False):
        if self._updating or self.currentLabel is None:
            return
        if form.run(self.ui.statusLabel, lambda: self.logic.setField(self.currentLabel, field, value) or True) is None:
            return
        if refreshForm:
            self.refreshAll()
        else:
            self._updating = True
            form.showTable(self.ui, self.logic.findings(), self.currentLabel)
            self._updating = False
        self.scheduleAutosave()

    def onStudyEdited(self, field, value):
        if not self._updating and self.logic.document is not None:
            form.run(self.ui.statusLabel, lambda: self.logic.setStudyField(field, value))
            self.scheduleAutosave()

    # --- masks and dataset ---------------------------------------------------------------
    def onGenerate(self, selectedOnly):
        labels = [self.currentLabel] if selectedOnly and self.currentLabel is not None else None
        note = form.run(self.ui.statusLabel, lambda: self.logic.generateMasks(labels), "masks generated", busy=True)
        if note:
            self.ui.statusLabel.text = f"Masks generated ({note})"
        self.refreshAll()
        self.scheduleAutosave()

    def onExport(self):
        dataset = self.ui.datasetButton.directory
        qt.QSettings().setValue(SETTINGS_DATASET, dataset)
        files = form.run(self.ui.statusLabel, lambda: self.logic.exportStudy(dataset, self.ui.subjectEdit.text,
                                                         overwrite=self.ui.overwriteCheck.checked,
                                                         sequence=self.ui.sequenceCombo.currentText), busy=True)
        if files:
            self.ui.statusLabel.text = f"Exported to {files['annotation'].parent}"

    def onImport(self):
        """Import a subject; the open study keeps its observers and autosave if this fails."""
        dataset = self.ui.datasetButton.directory
        if not self.logic.ensureDependencies(slicer.util.confirmOkCancelDisplay):
            return
        self.flushAutosave()
        subject = self.ui.subjectEdit.text
        study = form.run(self.ui.statusLabel, lambda: self.logic.readStudy(dataset, subject), busy=True)
        if study is None:
            return
        self._detach()
        volumeNode = form.run(self.ui.statusLabel, lambda: self.logic.loadStudy(study), busy=True)
        if volumeNode is None:
            return
        slicer.util.setSliceViewerLayers(background=volumeNode, fit=True)
        self._showVolume(volumeNode)
        self.currentLabel = None
        self._attach(volumeNode)
        self.scheduleAutosave()
        self.ui.statusLabel.text = f"Imported sub-{self.logic.document['study'].get('subject', '')}"

class CMBScribbleAnnotatorLogic(ScriptedLoadableModuleLogic, AnnotatorLogic):
    """Module logic: `AnnotatorLogic` (node <-> CMBLib glue) registered as a Slicer logic.

    CMBDetector hands its candidates over with ``importDetectorFindings(segmentationNode,
    volumeNode, findings)`` of this logic (no widget involved); scripts can call
    ``addDetections(records, mask)`` with detection records.
    """

    def __init__(self, sessionRoot=None, rater="", growerFactory=None):
        ScriptedLoadableModuleLogic.__init__(self)
        AnnotatorLogic.__init__(self, sessionRoot=sessionRoot, rater=rater, growerFactory=growerFactory)

    def getParameterNode(self):
        return CMBScribbleAnnotatorParameterNode(super().getParameterNode())

    @staticmethod
    def ensureDependencies(ask):
        """One question, then pip; a failure is shown as one error message."""
        from CMBLib import dependencies

        return dependencies.ensure(
            "annotation", ask, slicer.util.pip_install,
            guard=lambda: slicer.util.tryWithErrorDisplay("Installing the Python packages for annotation failed.",
                                                          waitCursor=True))
