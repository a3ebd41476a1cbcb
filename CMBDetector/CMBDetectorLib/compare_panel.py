"""Widget glue of CMBDetector's "Compare with prior" section (GUI in CMBDetector.ui, work in
`comparison.ComparisonLogic` and `CMBLib.compare.review`).

The current volume of the Detection section is the follow-up; the prior is chosen here.  Run
sends the comparison to the warm worker (progress bar, Cancel kills the worker); the table
lists new CMBs first, with the ARIA-H category above it; Accept / Reject decide on a new CMB,
selecting a row centres the views on it (follow-up and the aligned prior); the decisions and
the comparison's compare.json live in the parameter node (``compareReview``,
``compareResult``).  "Save comparison report" writes the reviewed report and opens it.
"""
import os

import qt
import slicer

from .comparison import ComparisonLogic
from .process import error_message
from .tasks import openInBrowser

HEADER = ["#", "class", "review", "diam. mm", "follow-up RAS mm", "note"]


class ComparePanel:
    def __init__(self, widget):
        self.widget, self.ui = widget, widget.ui
        self.logic = ComparisonLogic(widget.logic)
        self.logic.onEvent = self.onEvent
        ui = self.ui
        ui.compareTable.setColumnCount(len(HEADER))
        ui.compareTable.setHorizontalHeaderLabels(HEADER)
        ui.compareButton.connect("clicked(bool)", self.onRun)
        ui.compareCancelButton.connect("clicked(bool)", self.onCancel)
        ui.compareTable.connect("itemSelectionChanged()", self.onRowSelected)
        ui.compareAcceptButton.connect("clicked(bool)", lambda *_: self.onReview("accepted"))
        ui.compareRejectButton.connect("clicked(bool)", lambda *_: self.onReview("rejected"))
        ui.compareNextButton.connect("clicked(bool)", lambda *_: self.onReview("next"))
        ui.comparePreviousButton.connect("clicked(bool)", lambda *_: self.onReview("previous"))
        ui.compareSaveButton.connect("clicked(bool)", lambda *_: self.onSave())
        self.update()

    @property
    def parameters(self):
        return self.widget._parameterNode

    # --- run ----------------------------------------------------------------------------
    def onRun(self, *_):
        with slicer.util.tryWithErrorDisplay("The comparison could not start.", waitCursor=True):
            self.run()
        self.widget.updateButtons()

    def run(self):
        p = self.parameters
        if p is None:
            return None
        if p.inputVolume is None or p.priorVolume is None:
            raise ValueError("Select the current volume (Detection, above) and the prior volume.")
        model = self.widget.selectedModel()
        if not model or not self.widget.logic.ensureDependencies(slicer.util.confirmOkCancelDisplay):
            self.ui.compareStatusLabel.text = "Nothing was run."
            return None
        overwrite = False
        if p.outputFolder:
            out = ComparisonLogic.outputFolder(p.priorVolume, p.inputVolume, p.outputFolder)
            if os.path.exists(os.path.join(out, "compare.json")):
                if not slicer.util.confirmYesNoDisplay(f"A comparison exists in {out}. Replace it?"):
                    return None
                overwrite = True
        jobId = self.logic.start(p.priorVolume, p.inputVolume, outputDir=p.outputFolder or None, model=model,
                                 device=p.device, sequence=p.sequence, tolerance_mm=p.compareTolerance,
                                 overwrite=overwrite)
        self.ui.compareProgress.setValue(0)
        self.ui.compareStatusLabel.text = "Comparing: registration, then detection on both scans..."
        return jobId

    def onCancel(self, *_):
        self.logic.cancel()
        self.ui.compareStatusLabel.text = "Cancelling..."

    def onEvent(self, event):
        kind = event.get("event")
        if kind == "progress":
            self.ui.compareProgress.setValue(int(1000 * float(event.get("progress", 0))))
            self.ui.compareStatusLabel.text = str(event.get("message", ""))
        elif kind == "result" and event.get("kind") == "compare":
            with slicer.util.tryWithErrorDisplay("Could not load the comparison."):
                self.load(event["outputs"]["json"], nodes=True)
                self.ui.compareProgress.setValue(1000)
                self.ui.compareStatusLabel.text = " ".join(["Comparison done."] + list(event.get("warnings") or []))
        elif kind == "result":
            report = event.get("outputs", {}).get("report")
            self.ui.compareStatusLabel.text = f"Reviewed report written: {report}"
            openInBrowser(report)
        elif kind == "error":
            message = str(event.get("message"))
            if "exists; not overwritten" in message and "reviewed" in message and \
                    slicer.util.confirmYesNoDisplay(f"{message}\nReplace the reviewed report?"):
                self.onSave(overwrite=True)
                return
            self.ui.compareStatusLabel.text = f"No comparison: {message}"
        elif kind == "exit":
            self.ui.compareProgress.setValue(0)
            self.ui.compareStatusLabel.text = ("Cancelled." if event.get("cancelled") else
                                               f"The worker process ended: {error_message(event)}")
        self.widget.updateButtons()          # the detection's buttons too (one worker for both)

    # --- review -------------------------------------------------------------------------
    def load(self, compareJson, nodes=False):
        """The comparison into the table.  `nodes`: a fresh result (new decisions, the prior's
        transform and the points); else a restored one (the saved decisions, no new nodes)."""
        p = self.parameters
        self.logic.load(compareJson, p.priorVolume, p.inputVolume, "" if nodes else p.compareReview, nodes=nodes)
        self.saveState()
        self.fillTable()

    def restore(self):
        """Module entered / scene loaded: the saved comparison and decisions, without new nodes."""
        p = self.parameters
        if p is not None and p.compareResult and self.logic.review is None and os.path.isfile(p.compareResult):
            with slicer.util.tryWithErrorDisplay("Could not restore the comparison."):
                self.load(p.compareResult)

    def saveState(self):
        p = self.parameters
        if p is not None and self.logic.review is not None:
            p.compareResult = self.logic.compareJson
            p.compareReview = self.logic.reviewState()

    def fillTable(self):
        from CMBLib.compare.review import row_texts

        review = self.logic.review
        rows = review.rows if review is not None else []
        self.ui.compareSummaryLabel.text = self.logic.summary()
        self.ui.compareTable.blockSignals(True)
        try:
            self.ui.compareTable.setRowCount(len(rows))
            for r, row in enumerate(rows):
                for c, text in enumerate(row_texts(row, review.status.get(row["key"], ""))):
                    self.ui.compareTable.setItem(r, c, qt.QTableWidgetItem(text))
            if review is not None and review.current is not None:
                self.ui.compareTable.selectRow(review.index)
        finally:
            self.ui.compareTable.blockSignals(False)
        self.update()

    def onRowSelected(self):
        rows = self.ui.compareTable.selectionModel().selectedRows()
        if rows and self.logic.review is not None:
            self.logic.review.select(rows[0].row())
            self.logic.jumpTo(self.logic.review.current)
            self.saveState()

    def onReview(self, action):
        review = self.logic.review
        if review is None or review.current is None:
            return
        if action in ("accepted", "rejected"):
            if not self.logic.setStatus(action):
                self.ui.compareStatusLabel.text = "Only new CMBs take a decision."
        elif action == "next":
            review.next()
        else:
            review.previous()
        self.logic.jumpTo(review.current)
        self.saveState()
        self.fillTable()

    def onSave(self, overwrite=False):
        with slicer.util.tryWithErrorDisplay("The reviewed report could not be written."):
            self.logic.saveReport(self.onEvent, overwrite=overwrite)
            self.ui.compareStatusLabel.text = "Writing the reviewed report..."
        self.widget.updateButtons()

    def sceneClosed(self):
        self.logic.forget()
        self.fillTable()

    def update(self):
        busy = self.widget.logic.running
        has = self.logic.review is not None and bool(self.logic.review.rows)
        self.ui.compareButton.enabled = not busy and self.parameters is not None
        self.ui.compareCancelButton.enabled = self.logic.running
        for w in (self.ui.compareAcceptButton, self.ui.compareRejectButton, self.ui.compareNextButton,
                  self.ui.comparePreviousButton):
            w.enabled = has
        self.ui.compareSaveButton.enabled = self.logic.review is not None and not busy
