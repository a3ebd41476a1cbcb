"""Filling and reading the annotator's widgets (declared in Resources/UI/CMBScribbleAnnotator.ui).

The choices come from `CMBLib.annotation.vocabulary`, so the .ui holds only the layout.
Functions take the `ui` object of `slicer.util.childWidgetVariables` and plain data;
they hold no state.
"""
import qt

from CMBLib.annotation import vocabulary as V

FORM_CHOICES = [("review_status", V.REVIEW_STATUSES), ("certainty", V.CERTAINTIES), ("size_class", V.SIZE_CLASSES),
                ("location", V.LOCATIONS), ("side", V.SIDES), ("cause", V.CAUSES)]
FORM_CHECKS = ("multiple", "problematic")
FORM_TEXTS = ("cause_other", "problem_reason", "comment")
STUDY_CHOICES = [("inclusion", V.INCLUSIONS), ("exclusion_reason", V.EXCLUSION_REASONS), ("quality", V.QUALITIES)]
TABLE_COLUMNS = [("label", "CMB"), ("review_status", "Review"), ("certainty", "Certainty"),
                 ("size_class", "Size"), ("location", "Location"), ("cause", "Cause")]


def combos(ui):
    return {field: getattr(ui, f"combo_{field}") for field, _ in FORM_CHOICES}


def checks(ui):
    return {field: getattr(ui, f"check_{field}") for field in FORM_CHECKS}


def texts(ui):
    return {field: getattr(ui, f"text_{field}") for field in FORM_TEXTS}


def studyCombos(ui):
    return {field: getattr(ui, f"study_{field}") for field, _ in STUDY_CHOICES}


def shortcutText():
    keys = ", ".join(f"Alt+{k}: {V.label(str(v))}" for k, (_f, v) in V.SHORTCUTS.items())
    return f"Shortcuts: {keys}; Alt+N / Alt+P: next / previous CMB."


def fill(ui):
    """Put the vocabulary into the combo boxes and check boxes; returns the artefact checks."""
    for field, values in FORM_CHOICES:
        combo = getattr(ui, f"combo_{field}")
        for value in values:
            combo.addItem(V.label(value), value)
    for field, values in STUDY_CHOICES:
        combo = getattr(ui, f"study_{field}")
        for value in values:
            combo.addItem(V.label(value) if value else "-", value)
    for value in V.MIMIC_TYPES:
        ui.mimicType.addItem(V.label(value), value)
    ui.sequenceCombo.addItems(list(V.SEQUENCES))
    ui.table.setColumnCount(len(TABLE_COLUMNS))
    ui.table.setHorizontalHeaderLabels([title for _, title in TABLE_COLUMNS])
    ui.table.horizontalHeader().setStretchLastSection(True)
    ui.shortcutHint.text = shortcutText()
    artefacts = {}
    for value in V.ARTEFACTS:
        check = qt.QCheckBox(V.label(value))
        ui.artefactsWidget.layout().addWidget(check)
        artefacts[value] = check
    return artefacts


def showTable(ui, findings, currentLabel):
    ui.table.setRowCount(len(findings))
    for row, finding in enumerate(findings):
        for column, (field, _title) in enumerate(TABLE_COLUMNS):
            value = finding.get(field)
            ui.table.setItem(row, column, qt.QTableWidgetItem(str(value) if field == "label" else V.label(str(value))))
        if finding["label"] == currentLabel:
            ui.table.selectRow(row)


def showFinding(ui, finding):
    """Show one finding's metadata (None: empty, disabled form)."""
    for field, combo in combos(ui).items():
        combo.setEnabled(finding is not None)
        if finding is not None:
            combo.setCurrentIndex(max(0, combo.findData(finding[field])))
    for field, check in checks(ui).items():
        check.setEnabled(finding is not None)
        check.checked = bool(finding and finding[field])
    for field, edit in texts(ui).items():
        edit.setEnabled(finding is not None)
        edit.text = finding.get(field, "") if finding else ""


def showStudy(ui, study, artefactChecks):
    for field, combo in studyCombos(ui).items():
        combo.setCurrentIndex(max(0, combo.findData(study[field])))
    for value, check in artefactChecks.items():
        check.checked = value in study["artefacts"]
    ui.studyComment.text = study.get("comment", "")
    ui.sequenceCombo.setCurrentIndex(max(0, ui.sequenceCombo.findText(study.get("sequence", "T2starw"))))


def showTolerance(ui, grown, tolerance):
    """Range and value of the tolerance slider for a live mask (None: disabled)."""
    ui.toleranceSlider.setEnabled(grown is not None)
    if grown is None:
        ui.toleranceInfo.text = ""
        return
    lo, hi = grown.tolerance_range()
    ui.toleranceSlider.minimum, ui.toleranceSlider.maximum = float(lo), float(hi)
    ui.toleranceSlider.singleStep = max((float(hi) - float(lo)) / 200.0, 1e-6)
    ui.toleranceSlider.value = float(tolerance)
    ui.toleranceInfo.text = f"{int(grown.mask(tolerance).sum())} voxels at tolerance {float(tolerance):.3g}"


def singleShotTimer(msec, callback):
    timer = qt.QTimer()
    timer.setSingleShot(True)
    timer.setInterval(msec)
    timer.connect("timeout()", callback)
    return timer


def setupEditor(editor):
    """The embedded segment editor: its own editor node, Paint and Erase only, no selectors."""
    import slicer

    editorNode = slicer.mrmlScene.GetSingletonNode("CMBScribbleAnnotator", "vtkMRMLSegmentEditorNode")
    if editorNode is None:
        editorNode = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
        editorNode.UnRegister(None)
        editorNode.SetSingletonTag("CMBScribbleAnnotator")
        editorNode = slicer.mrmlScene.AddNode(editorNode)
    editor.setMaximumNumberOfUndoStates(30)
    editor.setMRMLScene(slicer.mrmlScene)
    editor.setMRMLSegmentEditorNode(editorNode)
    editor.setEffectNameOrder(["Paint", "Erase"])
    editor.unorderedEffectsVisible = False
    editor.setSegmentationNodeSelectorVisible(False)
    editor.setSourceVolumeNodeSelectorVisible(False)
    editor.setSwitchToSegmentationsButtonVisible(False)
    editor.setAddRemoveSegmentButtonsVisible(False)
    editor.setMaskingSectionVisible(False)


def connect(ui, w):
    """Wire the widgets of `ui` to the handlers of the module widget `w`."""
    ui.volumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", w.onVolumeChanged)
    ui.raterEdit.connect("editingFinished()", w.onRaterChanged)
    ui.table.connect("itemSelectionChanged()", w.onTableSelection)
    ui.addButton.connect("clicked()", w.onAddFinding)
    ui.deleteButton.connect("clicked()", w.onDeleteFinding)
    ui.previousButton.connect("clicked()", lambda: w.stepFinding(-1))
    ui.nextButton.connect("clicked()", lambda: w.stepFinding(+1))
    ui.brushSpin.connect("valueChanged(double)", w.onBrushChanged)
    ui.toleranceSlider.connect("valueChanged(double)", w.onToleranceChanged)
    for field, combo in combos(ui).items():
        combo.connect("currentIndexChanged(int)", lambda _i, f=field, c=combo: w.onFieldEdited(f, c.currentData))
    for field, check in checks(ui).items():
        check.connect("toggled(bool)", lambda value, f=field: w.onFieldEdited(f, bool(value)))
    for field, edit in texts(ui).items():
        edit.connect("editingFinished()", lambda f=field, e=edit: w.onFieldEdited(f, e.text))
    for field, combo in studyCombos(ui).items():
        combo.connect("currentIndexChanged(int)", lambda _i, f=field, c=combo: w.onStudyEdited(f, c.currentData))
    for check in w.artefactChecks.values():
        check.connect("toggled(bool)", lambda _v: w.onStudyEdited(
            "artefacts", [v for v, c in w.artefactChecks.items() if c.checked]))
    ui.studyComment.connect("editingFinished()", lambda: w.onStudyEdited("comment", ui.studyComment.text))
    ui.generateAllButton.connect("clicked()", lambda: w.onGenerate(selectedOnly=False))
    ui.generateSelectedButton.connect("clicked()", lambda: w.onGenerate(selectedOnly=True))
    ui.exportButton.connect("clicked()", w.onExport)
    ui.importButton.connect("clicked()", w.onImport)


class Shortcuts:
    """Main-window shortcuts that exist only while the module is shown."""

    def __init__(self):
        self.items = []

    def add(self, keys, callback):
        import slicer

        shortcut = qt.QShortcut(qt.QKeySequence(keys), slicer.util.mainWindow())
        shortcut.connect("activated()", callback)
        self.items.append(shortcut)

    def clear(self):
        for shortcut in self.items:
            shortcut.setEnabled(False)
            shortcut.setParent(None)
        self.items = []


def run(statusLabel, function, doneMessage=None, busy=False, showErrorAs="Error"):
    """Call `function`; any exception becomes one readable line in `statusLabel` (the
    traceback goes to the log); returns None then."""
    import logging

    import slicer

    from CMBLib.errors import CMBError

    if busy:
        slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
    try:
        result = function()
    except CMBError as exc:
        statusLabel.text = f"{showErrorAs}: {exc}"
        return None
    except Exception as exc:  # a bug or a Slicer error: one line here, the traceback in the log
        logging.exception("CMBScribbleAnnotator")
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        statusLabel.text = f"{showErrorAs}: {type(exc).__name__}: {first}"
        return None
    finally:
        if busy:
            slicer.app.restoreOverrideCursor()
    if doneMessage:
        statusLabel.text = doneMessage
    return result
