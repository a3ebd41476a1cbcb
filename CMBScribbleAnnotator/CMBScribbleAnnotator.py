"""CMBScribbleAnnotator: scribble cerebral microbleeds, record BOMBS metadata, mark mimics,
grow masks and export a training-ready dataset.

Glue only: the annotation document, mask growing, sessions and dataset export are in
CMBLib (`CMBLib.annotation`); node conversions and the state kept in step with the
nodes are in `CMBScribbleAnnotatorLib`.
"""
import json
import os
import tempfile

import ctk
import numpy as np
import qt
import slicer
import vtk
from CMBScribbleAnnotatorLib import nodes
from CMBScribbleAnnotatorLib.logic import AnnotatorLogic
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from CMBLib.annotation import vocabulary as V
from CMBLib.errors import CMBError

FORM_CHOICES = [("review_status", "Review", V.REVIEW_STATUSES), ("certainty", "Certainty", V.CERTAINTIES),
                ("size_class", "Size", V.SIZE_CLASSES), ("location", "Location", V.LOCATIONS),
                ("side", "Side", V.SIDES), ("cause", "Possible cause", V.CAUSES)]
FORM_TEXTS = [("cause_other", "Other cause"), ("problem_reason", "Why problematic"), ("comment", "Comment")]
TABLE_COLUMNS = [("label", "CMB"), ("review_status", "Review"), ("certainty", "Certainty"),
                 ("size_class", "Size"), ("location", "Location"), ("cause", "Cause")]
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
            "record BOMBS metadata per CMB, place mimic landmarks, grow 3D masks from the scribbles "
            "and export the study as a BIDS-derivatives dataset. Work is autosaved after every change.")
        self.parent.acknowledgementText = (
            "Annotation protocol after the scribble + BOMBS protocol of the CMB segmentation thesis "
            "(section IV.B).")


# Python packages CMBLib needs that Slicer may not ship: import name -> pip name.
REQUIREMENTS = {"jsonschema": "jsonschema", "slicerio": "slicerio", "scipy": "scipy", "skimage": "scikit-image"}


def ensureDependencies(ask=True):
    """Install missing packages with pip after the user agrees; True when all are present."""
    import importlib.util

    missing = [pip for name, pip in REQUIREMENTS.items() if importlib.util.find_spec(name) is None]
    if not missing:
        return True
    if ask and not slicer.util.confirmOkCancelDisplay(
            f"CMB Scribble Annotator needs these Python packages: {', '.join(missing)}. Install them now?"):
        return False
    slicer.util.pip_install(missing)
    return True


# --------------------------------------------------------------------------------------
class CMBScribbleAnnotatorWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.currentLabel = None
        self._updating = False

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        settings = qt.QSettings()
        self.logic = CMBScribbleAnnotatorLogic(rater=str(settings.value(SETTINGS_RATER, "")))
        self.saveTimer = qt.QTimer()
        self.saveTimer.setSingleShot(True)
        self.saveTimer.setInterval(1000)
        self.saveTimer.connect("timeout()", self.autosaveNow)
        self._setupInputs(settings)
        self._setupFindings()
        self._setupEditor()
        self._setupForm()
        self._setupMimics()
        self._setupStudy()
        self._setupOutput(settings)
        self.statusLabel = qt.QLabel("Select a volume to start.")
        self.statusLabel.wordWrap = True
        self.layout.addWidget(self.statusLabel)
        self.layout.addStretch(1)
        self.shortcuts = []
        self._setEnabled(False)

    # --- UI construction -----------------------------------------------------------------
    def _section(self, title, collapsed=False):
        button = ctk.ctkCollapsibleButton()
        button.text = title
        button.collapsed = collapsed
        self.layout.addWidget(button)
        return qt.QFormLayout(button)

    def _buttons(self, form, *titles):
        """A row of push buttons added to `form`; returns them."""
        row = qt.QHBoxLayout()
        buttons = [qt.QPushButton(title) for title in titles]
        for button in buttons:
            row.addWidget(button)
        form.addRow(row)
        return buttons

    def _setupInputs(self, settings):
        form = self._section("Study")
        self.volumeSelector = slicer.qMRMLNodeComboBox()
        self.volumeSelector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        self.volumeSelector.showChildNodeTypes = False   # no label maps
        self.volumeSelector.addEnabled = False
        self.volumeSelector.removeEnabled = False
        self.volumeSelector.noneEnabled = True
        self.volumeSelector.setMRMLScene(slicer.mrmlScene)
        self.volumeSelector.setToolTip("SWI / T2*-GRE / QSM volume to annotate")
        form.addRow("Volume:", self.volumeSelector)
        self.raterEdit = qt.QLineEdit(str(settings.value(SETTINGS_RATER, "")))
        self.raterEdit.setToolTip("Rater id recorded in the annotation")
        form.addRow("Rater:", self.raterEdit)
        self.volumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onVolumeChanged)
        self.raterEdit.connect("editingFinished()", self.onRaterChanged)

    def _setupFindings(self):
        form = self._section("Findings (CMBs)")
        self.table = qt.QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels([title for _, title in TABLE_COLUMNS])
        self.table.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        self.table.setSelectionMode(qt.QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(qt.QAbstractItemView.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setMinimumHeight(140)
        form.addRow(self.table)
        self.addButton, self.deleteButton, self.previousButton, self.nextButton = self._buttons(
            form, "Add CMB", "Delete CMB", "< Previous (Alt+P)", "Next (Alt+N) >")
        self.table.connect("itemSelectionChanged()", self.onTableSelection)
        self.addButton.connect("clicked()", self.onAddFinding)
        self.deleteButton.connect("clicked()", self.onDeleteFinding)
        self.previousButton.connect("clicked()", lambda: self.stepFinding(-1))
        self.nextButton.connect("clicked()", lambda: self.stepFinding(+1))

    def _setupEditor(self):
        form = self._section("Scribble (Paint / Erase, small brush)")
        editorNode = slicer.mrmlScene.GetSingletonNode("CMBScribbleAnnotator", "vtkMRMLSegmentEditorNode")
        if editorNode is None:
            editorNode = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            editorNode.UnRegister(None)
            editorNode.SetSingletonTag("CMBScribbleAnnotator")
            editorNode = slicer.mrmlScene.AddNode(editorNode)
        self.editor = slicer.qMRMLSegmentEditorWidget()
        self.editor.setMaximumNumberOfUndoStates(30)
        self.editor.setMRMLSegmentEditorNode(editorNode)
        self.editor.setMRMLScene(slicer.mrmlScene)
        self.editor.setEffectNameOrder(["Paint", "Erase"])
        self.editor.unorderedEffectsVisible = False
        self.editor.setSegmentationNodeSelectorVisible(False)
        self.editor.setSourceVolumeNodeSelectorVisible(False)
        self.editor.setSwitchToSegmentationsButtonVisible(False)
        self.editor.setAddRemoveSegmentButtonsVisible(False)
        self.editor.setMaskingSectionVisible(False)
        form.addRow(self.editor)
        self.brushSpin = qt.QDoubleSpinBox()
        self.brushSpin.setRange(0.1, 10.0)
        self.brushSpin.setSingleStep(0.1)
        self.brushSpin.setSuffix(" mm")
        self.brushSpin.setToolTip("Brush diameter; keep it smaller than the CMB (protocol: smallest brush)")
        form.addRow("Brush diameter:", self.brushSpin)
        self.brushSpin.connect("valueChanged(double)", self.onBrushChanged)

    def _setupForm(self):
        form = self._section("Metadata of the selected CMB")
        self.combos = {}
        for field, title, values in FORM_CHOICES:
            combo = qt.QComboBox()
            for value in values:
                combo.addItem(V.label(value), value)
            combo.connect("currentIndexChanged(int)", lambda _i, f=field: self.onComboChanged(f))
            self.combos[field] = combo
            form.addRow(f"{title}:", combo)
        self.checks = {}
        for field, title in (("multiple", "Multiple CMBs in this label (e.g. CAA)"),
                             ("problematic", "Problematic")):
            check = qt.QCheckBox(title)
            check.connect("toggled(bool)", lambda value, f=field: self.onFieldEdited(f, bool(value)))
            self.checks[field] = check
            form.addRow(check)
        self.texts = {}
        for field, title in FORM_TEXTS:
            edit = qt.QLineEdit()
            edit.connect("editingFinished()", lambda f=field: self.onFieldEdited(f, self.texts[f].text))
            self.texts[field] = edit
            form.addRow(f"{title}:", edit)
        keys = ", ".join(f"Alt+{k}: {V.label(str(v))}" for k, (_f, v) in V.SHORTCUTS.items())
        hint = qt.QLabel(f"Shortcuts: {keys}; Alt+N / Alt+P: next / previous CMB.")
        hint.wordWrap = True
        form.addRow(hint)
        self.generateAllButton, self.generateSelectedButton = self._buttons(
            form, "Generate masks (all)", "Generate mask (selected)")
        self.generateAllButton.connect("clicked()", lambda: self.onGenerate(selectedOnly=False))
        self.generateSelectedButton.connect("clicked()", lambda: self.onGenerate(selectedOnly=True))

    def _setupMimics(self):
        form = self._section("Mimics (landmarks)", collapsed=True)
        self.mimicType = qt.QComboBox()
        for value in V.MIMIC_TYPES:
            self.mimicType.addItem(V.label(value), value)
        form.addRow("Type of the next mimic:", self.mimicType)
        self.placeWidget = slicer.qSlicerMarkupsPlaceWidget()
        self.placeWidget.setMRMLScene(slicer.mrmlScene)
        self.placeWidget.setPlaceModePersistency(False)
        form.addRow("Place:", self.placeWidget)

    def _setupStudy(self):
        form = self._section("Study quality", collapsed=True)
        self.studyCombos = {}
        for field, title, values in (("inclusion", "Include", V.INCLUSIONS),
                                     ("exclusion_reason", "Exclusion reason", V.EXCLUSION_REASONS),
                                     ("quality", "Image quality", V.QUALITIES)):
            combo = qt.QComboBox()
            for value in values:
                combo.addItem(V.label(value) if value else "-", value)
            combo.connect("currentIndexChanged(int)", lambda _i, f=field: self.onStudyCombo(f))
            self.studyCombos[field] = combo
            form.addRow(f"{title}:", combo)
        self.artefactChecks = {}
        row = qt.QHBoxLayout()
        for value in V.ARTEFACTS:
            check = qt.QCheckBox(V.label(value))
            check.connect("toggled(bool)", lambda _v: self.onArtefacts())
            self.artefactChecks[value] = check
            row.addWidget(check)
        form.addRow("Artefacts:", row)
        self.studyComment = qt.QLineEdit()
        self.studyComment.connect("editingFinished()", lambda: self.onStudyEdited("comment", self.studyComment.text))
        form.addRow("Comment:", self.studyComment)

    def _setupOutput(self, settings):
        form = self._section("Export")
        self.datasetButton = ctk.ctkDirectoryButton()
        self.datasetButton.directory = str(settings.value(SETTINGS_DATASET, os.path.expanduser("~")))
        form.addRow("Dataset folder:", self.datasetButton)
        self.subjectEdit = qt.QLineEdit()
        self.subjectEdit.setToolTip("Subject id: letters and digits only")
        form.addRow("Subject:", self.subjectEdit)
        self.sequenceCombo = qt.QComboBox()
        self.sequenceCombo.addItems(list(V.SEQUENCES))
        form.addRow("Sequence:", self.sequenceCombo)
        self.overwriteCheck = qt.QCheckBox("Replace the subject if it exists")
        form.addRow(self.overwriteCheck)
        self.exportButton, self.importButton = self._buttons(form, "Export study", "Import study")
        self.exportButton.connect("clicked()", self.onExport)
        self.importButton.connect("clicked()", self.onImport)

    def enter(self):
        """Shortcuts work in the whole main window (the rater paints in the slice views)."""
        self.editor.installKeyboardShortcuts()
        self._uninstallShortcuts()
        for key, (field, value) in V.SHORTCUTS.items():
            self._shortcut(f"Alt+{key}", lambda f=field, v=value: self.onFieldEdited(f, v, refreshForm=True))
        self._shortcut("Alt+N", lambda: self.stepFinding(+1))
        self._shortcut("Alt+P", lambda: self.stepFinding(-1))

    def exit(self):
        self.editor.setActiveEffect(None)
        self.editor.uninstallKeyboardShortcuts()
        self._uninstallShortcuts()

    def _shortcut(self, keys, callback):
        shortcut = qt.QShortcut(qt.QKeySequence(keys), slicer.util.mainWindow())
        shortcut.connect("activated()", callback)
        self.shortcuts.append(shortcut)

    def _uninstallShortcuts(self):
        for shortcut in self.shortcuts:
            shortcut.setEnabled(False)
            shortcut.setParent(None)
        self.shortcuts = []

    def _setEnabled(self, enabled):
        for widget in (self.table, self.addButton, self.deleteButton, self.previousButton, self.nextButton,
                       self.editor, self.generateAllButton, self.generateSelectedButton, self.exportButton):
            widget.setEnabled(enabled)

    # --- volume and session --------------------------------------------------------------
    def onVolumeChanged(self, volumeNode):
        if self.saveTimer.isActive():       # the previous volume's last change
            self.saveTimer.stop()
            self.autosaveNow()
        self.removeObservers()
        self.currentLabel = None
        if volumeNode is None or not ensureDependencies(ask=True):
            self._setEnabled(False)
            return
        self.logic.setVolume(volumeNode)
        if self.logic.hasSavedSession():
            info = self.logic.savedSessionInfo()
            if slicer.util.confirmYesNoDisplay(
                    f"An autosaved annotation of this volume exists (saved {info.get('saved', '?')}). "
                    "Restore it?\n\nIf you answer No, the next change replaces it."):
                self._run(self.logic.restore, "restored the autosaved annotation")
        self._attach(volumeNode)

    def _attach(self, volumeNode):
        """Point the editor, the mimic list and the form at the logic's current nodes."""
        self.editor.setSegmentationNode(self.logic.scribblesNode)
        self.editor.setSourceVolumeNode(volumeNode)
        self.placeWidget.setCurrentNode(self.logic.mimicsNode)
        self.brushSpin.value = 1.5 * min(volumeNode.GetSpacing()[:2])
        self.subjectEdit.text = self.logic.document["study"].get("subject", "") or self.subjectEdit.text
        self._observeNodes()
        self._setEnabled(True)
        self.refreshAll()

    def _observeNodes(self):
        segmentation = self.logic.scribblesNode.GetSegmentation()
        for event in (slicer.vtkSegmentation.SourceRepresentationModified, slicer.vtkSegmentation.SegmentAdded,
                      slicer.vtkSegmentation.SegmentRemoved):
            self.addObserver(segmentation, event, self.onScribblesModified)
        markups = self.logic.mimicsNode
        self.addObserver(markups, markups.PointPositionDefinedEvent, self.onMimicPlaced)
        for event in (markups.PointModifiedEvent, markups.PointRemovedEvent):
            self.addObserver(markups, event, lambda *_a: self.scheduleAutosave())

    def onRaterChanged(self):
        qt.QSettings().setValue(SETTINGS_RATER, self.raterEdit.text)
        self.logic.rater = self.raterEdit.text
        if self.logic.document is not None:
            self.logic.document["rater"] = self.raterEdit.text
            self.scheduleAutosave()

    def scheduleAutosave(self):
        self.saveTimer.start()

    def autosaveNow(self):
        if self.logic.document is None:
            return
        try:
            folder = self.logic.autosave()
            self.statusLabel.text = f"Autosaved to {folder}"
        except CMBError as exc:
            self.statusLabel.text = f"Autosave failed: {exc}"

    def onScribblesModified(self, *_args):
        self.scheduleAutosave()

    def onMimicPlaced(self, caller, _event):
        index = caller.GetNumberOfControlPoints() - 1
        if index >= 0:
            mimicType = self.mimicType.currentData
            caller.SetNthControlPointLabel(index, mimicType)
            caller.SetNthControlPointDescription(index, json.dumps({"type": mimicType}))
        self.scheduleAutosave()

    # --- findings ------------------------------------------------------------------------
    def refreshAll(self):
        self._refreshTable()
        self._refreshForm()
        self._refreshStudy()

    def _refreshTable(self):
        self._updating = True
        try:
            findings = self.logic.findings()
            self.table.setRowCount(len(findings))
            for row, finding in enumerate(findings):
                for column, (field, _title) in enumerate(TABLE_COLUMNS):
                    value = finding.get(field)
                    text = str(value) if field == "label" else V.label(str(value))
                    self.table.setItem(row, column, qt.QTableWidgetItem(text))
                if finding["label"] == self.currentLabel:
                    self.table.selectRow(row)
        finally:
            self._updating = False

    def _refreshForm(self):
        finding = self._currentFinding()
        self._updating = True
        try:
            for field, combo in self.combos.items():
                combo.setEnabled(finding is not None)
                if finding is not None:
                    combo.setCurrentIndex(max(0, combo.findData(finding[field])))
            for field, check in self.checks.items():
                check.setEnabled(finding is not None)
                check.checked = bool(finding and finding[field])
            for field, edit in self.texts.items():
                edit.setEnabled(finding is not None)
                edit.text = finding.get(field, "") if finding else ""
        finally:
            self._updating = False

    def _refreshStudy(self):
        study = self.logic.document["study"] if self.logic.document else None
        if study is None:
            return
        self._updating = True
        try:
            for field, combo in self.studyCombos.items():
                combo.setCurrentIndex(max(0, combo.findData(study[field])))
            for value, check in self.artefactChecks.items():
                check.checked = value in study["artefacts"]
            self.studyComment.text = study.get("comment", "")
            index = self.sequenceCombo.findText(study.get("sequence", "T2starw"))
            self.sequenceCombo.setCurrentIndex(max(0, index))
        finally:
            self._updating = False

    def _currentFinding(self):
        for finding in self.logic.findings():
            if finding["label"] == self.currentLabel:
                return finding
        return None

    def selectFinding(self, label):
        """Make `label` current: its segment gets the brush, the views centre on it."""
        self.currentLabel = label
        segmentId = nodes.segmentIdForLabel(self.logic.scribblesNode, label)
        if segmentId:
            self.editor.setCurrentSegmentID(segmentId)
        centre = self.logic.findingCentre(label)
        if centre is not None:
            nodes.jumpTo(centre)
        self._refreshTable()
        self._refreshForm()

    def onTableSelection(self):
        if self._updating:
            return
        rows = self.table.selectionModel().selectedRows()
        if rows:
            self.selectFinding(self.logic.findings()[rows[0].row()]["label"])

    def stepFinding(self, step):
        labels = [f["label"] for f in self.logic.findings()]
        if not labels:
            return
        index = labels.index(self.currentLabel) + step if self.currentLabel in labels else 0
        self.selectFinding(labels[index % len(labels)])

    def onAddFinding(self):
        label = self.logic.addFinding()
        self.selectFinding(label)
        self.editor.setActiveEffectByName("Paint")
        self.onBrushChanged(self.brushSpin.value)
        self.scheduleAutosave()

    def onDeleteFinding(self):
        if self.currentLabel is None:
            return
        if not slicer.util.confirmYesNoDisplay(f"Delete CMB {self.currentLabel} with its scribble and mask?"):
            return
        self.logic.deleteFinding(self.currentLabel)
        self.currentLabel = None
        self.refreshAll()
        self.scheduleAutosave()

    def onBrushChanged(self, diameterMm):
        effect = self.editor.effectByName("Paint")
        if effect is not None:
            # Common (not Paint-only) parameters, so Erase uses the same small brush.
            effect.setCommonParameter("BrushDiameterIsRelative", "0")
            effect.setCommonParameter("BrushAbsoluteDiameter", str(float(diameterMm)))
            effect.setCommonParameter("BrushSphere", "0")

    # --- metadata ------------------------------------------------------------------------
    def onComboChanged(self, field):
        if not self._updating:
            self.onFieldEdited(field, self.combos[field].currentData)

    def onFieldEdited(self, field, value, refreshForm=False):
        if self._updating or self.currentLabel is None:
            return
        try:
            self.logic.setField(self.currentLabel, field, value)
        except CMBError as exc:
            self.statusLabel.text = str(exc)
            return
        self._refreshTable()
        if refreshForm:
            self._refreshForm()
        self.scheduleAutosave()

    def onStudyCombo(self, field):
        if not self._updating:
            self.onStudyEdited(field, self.studyCombos[field].currentData)

    def onArtefacts(self):
        if not self._updating:
            self.onStudyEdited("artefacts", [v for v, c in self.artefactChecks.items() if c.checked])

    def onStudyEdited(self, field, value):
        if self._updating or self.logic.document is None:
            return
        self._run(lambda: self.logic.setStudyField(field, value))
        self.scheduleAutosave()

    # --- detector hand-over ----------------------------------------------------------------
    def importDetectorFindings(self, segmentationNode, volumeNode, findings):
        """Called by CMBDetector: its candidates become findings ('confirmed' / 'proposed')."""
        if self.logic.volumeNode is not volumeNode:
            self.volumeSelector.setCurrentNode(volumeNode)     # offers to restore a saved session
        mapping = self._run(lambda: self.logic.importDetectorFindings(segmentationNode, volumeNode, findings),
                            None, busy=True)
        if mapping is not None:
            self._attach(volumeNode)
            self.statusLabel.text = f"{len(mapping)} CMB candidate(s) received from CMBDetector"
            self.scheduleAutosave()
        return mapping

    # --- masks and dataset ---------------------------------------------------------------
    def onGenerate(self, selectedOnly):
        labels = [self.currentLabel] if selectedOnly and self.currentLabel is not None else None
        note = self._run(lambda: self.logic.generateMasks(labels), "masks generated", busy=True)
        if note:
            self.statusLabel.text = f"Masks generated ({note})"
        self.refreshAll()
        self.scheduleAutosave()

    def onExport(self):
        dataset = self.datasetButton.directory
        qt.QSettings().setValue(SETTINGS_DATASET, dataset)
        files = self._run(lambda: self.logic.exportStudy(dataset, self.subjectEdit.text,
                                                         overwrite=self.overwriteCheck.checked,
                                                         sequence=self.sequenceCombo.currentText),
                          None, busy=True)
        if files:
            self.statusLabel.text = f"Exported to {files['annotation'].parent}"

    def onImport(self):
        dataset = self.datasetButton.directory
        if not ensureDependencies(ask=True):
            return
        self.removeObservers()
        volumeNode = self._run(lambda: self.logic.importStudy(dataset, self.subjectEdit.text), None, busy=True)
        if volumeNode is None:
            return
        slicer.util.setSliceViewerLayers(background=volumeNode, fit=True)
        self.volumeSelector.blockSignals(True)      # keep the imported annotation (no fresh start)
        self.volumeSelector.setCurrentNode(volumeNode)
        self.volumeSelector.blockSignals(False)
        self.currentLabel = None
        self._attach(volumeNode)
        self.scheduleAutosave()
        self.statusLabel.text = f"Imported sub-{self.logic.document['study'].get('subject', '')}"

    def _run(self, function, doneMessage=None, busy=False):
        """Call `function`; show CMBError messages in the status line instead of raising."""
        if busy:
            qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            result = function()
        except CMBError as exc:
            self.statusLabel.text = f"Error: {exc}"
            return None
        finally:
            if busy:
                qt.QApplication.restoreOverrideCursor()
        if doneMessage:
            self.statusLabel.text = doneMessage
        return result

    def cleanup(self):
        self._uninstallShortcuts()
        self.removeObservers()
        if self.saveTimer.isActive():
            self.saveTimer.stop()
            self.autosaveNow()


# --------------------------------------------------------------------------------------
class CMBScribbleAnnotatorLogic(ScriptedLoadableModuleLogic, AnnotatorLogic):
    """Module logic: `AnnotatorLogic` (node <-> CMBLib glue) registered as a Slicer logic.

    CMBDetector hands its candidates over with the widget's (or this logic's)
    ``importDetectorFindings(segmentationNode, volumeNode, findings)``; scripts can call
    ``addDetections(records, mask)`` with detection records.  New findings keep the
    status they arrive with ('proposed' for unreviewed candidates).
    """

    def __init__(self, sessionRoot=None, rater=""):
        ScriptedLoadableModuleLogic.__init__(self)
        AnnotatorLogic.__init__(self, sessionRoot=sessionRoot, rater=rater)


# --------------------------------------------------------------------------------------
class CMBScribbleAnnotatorTest(ScriptedLoadableModuleTest):
    """Load MRHead, paint a scribble, grow its mask, fill metadata, autosave, export, re-import."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_annotate_export_import()

    def test_annotate_export_import(self):
        import SampleData

        from CMBLib.annotation.document import validate_document

        self.assertTrue(ensureDependencies(ask=False))
        self.delayDisplay("Loading MRHead")
        volumeNode = SampleData.SampleDataLogic().downloadMRHead()
        work = tempfile.mkdtemp(prefix="cmb_annotator_test_")
        logic = CMBScribbleAnnotatorLogic(sessionRoot=os.path.join(work, "sessions"), rater="selftest")
        logic.setVolume(volumeNode)

        self.delayDisplay("Painting a scribble")
        label = logic.addFinding()
        self.assertEqual(label, 1)
        array = slicer.util.arrayFromVolume(volumeNode)
        k, j, i = (n // 2 for n in array.shape)
        scribble = np.zeros(array.shape, np.uint8)
        scribble[k, j, i - 1:i + 2] = 1
        segmentId = nodes.segmentIdForLabel(logic.scribblesNode, label)
        slicer.util.updateSegmentBinaryLabelmapFromArray(scribble, logic.scribblesNode, segmentId, volumeNode)
        self.assertEqual(int(np.count_nonzero(logic.scribbleLabelmap().array == 1)), 3)

        self.delayDisplay("Generating the mask")
        logic.generateMasks()
        mask = logic.maskLabelmap().array
        self.assertTrue(np.all(mask[scribble > 0] == 1))
        finding = logic.findings()[0]
        self.assertIsNotNone(finding["mask"])
        self.assertIn(finding["size_class_suggested"], ("<5mm", "5-10mm", ">10mm"))

        self.delayDisplay("Filling metadata")
        logic.setField(label, "certainty", "uncertain")
        logic.setField(label, "location", "thalamus")
        logic.setField(label, "review_status", "confirmed")
        with self.assertRaises(CMBError):
            logic.setField(label, "cause", "not-a-cause")
        logic.mimicsNode.AddControlPoint(vtk.vtkVector3d(10.0, 20.0, 30.0), "cavernoma")
        validate_document(logic.document)

        self.delayDisplay("Autosave and restore")
        logic.autosave()
        self.assertTrue(logic.hasSavedSession())
        restored = CMBScribbleAnnotatorLogic(sessionRoot=os.path.join(work, "sessions"))
        restored.setVolume(volumeNode)
        self.assertTrue(restored.hasSavedSession())
        restored.restore()
        self.assertEqual(restored.findings()[0]["certainty"], "uncertain")
        np.testing.assert_array_equal(restored.scribbleLabelmap().array, logic.scribbleLabelmap().array)

        self.delayDisplay("Exporting and re-importing")
        dataset = os.path.join(work, "dataset")
        files = restored.exportStudy(dataset, "01", sequence="T2starw")
        self.assertTrue(files["mask"].is_file() and files["segmentation"].is_file())
        with self.assertRaises(CMBError):
            restored.exportStudy(dataset, "01")          # never overwritten silently
        reader = CMBScribbleAnnotatorLogic(sessionRoot=os.path.join(work, "sessions2"))
        reader.importStudy(dataset, "01")
        self.assertEqual(reader.findings()[0]["location"], "thalamus")
        self.assertEqual(reader.document["mimics"][0]["type"], "cavernoma")
        np.testing.assert_array_equal(reader.maskLabelmap().array, mask)
        self.delayDisplay("Test passed")
