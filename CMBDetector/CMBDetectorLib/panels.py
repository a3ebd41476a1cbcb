"""Widget glue of the background tasks (GUI in the modules' .ui files, work in jobs / tasks).

* `ReportPanel`: "Save report" (``cmb report`` in the background, the HTML opened in the
  browser) and "Export DICOM SEG" (only for a volume from Slicer's DICOM database); both
  modules use it with their own source of findings.
* `ImprovePanel`: CMBDetector's "Improve the model from my annotations" (fine-tuning in
  the background: progress, loss / validation-F1 curves as text, Cancel; the new model
  is selected in the model list when it is done) and "Export accepted to dataset".
"""
import qt
import slicer

from .jobs import split_folders
from .tasks import ReportTask, dicomSourceFiles, ensureReportDependencies, openInBrowser

SEG_HELP = ("When the volume came from Slicer's DICOM database you can also export the segmentation with "
            "Slicer's own DICOM export (right-click it in the Data module, 'Export to DICOM...').")


class ReportPanel:
    """`source()` -> dict for `ReportTask.start` (detections= & image= & out=, or dataset= & subject=);
    `volume()` -> the volume node the findings are on."""

    def __init__(self, ui, source, volume, status, processFactory=None, python=None, ensure=None):
        self.ui, self.source, self.volume, self.status = ui, source, volume, status
        self.ensure = ensure or ensureReportDependencies      # ensure(seg) -> bool: consent, then pip
        self.task = ReportTask(processFactory, python)
        ui.saveReportButton.connect("clicked(bool)", lambda *_: self.run(seg=False))
        ui.exportSegButton.connect("clicked(bool)", lambda *_: self.run(seg=True))

    def run(self, seg, overwrite=False):
        try:
            source = self.source()
            if seg:
                dicomSourceFiles(self.volume())      # the one-line reason before any install question
            if not self.ensure(seg):
                self.status.text = "Nothing was written (the Python packages it needs are not installed)."
                return False
            if seg:
                folder = slicer.util.tempDirectory("CMBDicomSeries")
                source.pop("image", None)
                self.task.startSeg(lambda out, msg: self.done(out, msg, seg), self.volume(), folder,
                                   overwrite=overwrite, **source)
            else:
                self.task.start(lambda out, msg: self.done(out, msg, seg), overwrite=overwrite, **source)
        except (ValueError, RuntimeError) as exc:
            self.status.text = f"{'DICOM SEG' if seg else 'Report'}: {exc}"
            return False
        self.status.text = "Writing the DICOM SEG..." if seg else "Writing the report..."
        self.enable(False)
        return True

    def done(self, outputs, message, seg):
        self.enable(True)
        if not outputs and "exists" in message and slicer.util.confirmYesNoDisplay(f"{message}\nReplace it?"):
            self.run(seg, overwrite=True)
            return
        if seg:
            self.status.text = (f"DICOM SEG written: {outputs['seg']}" if outputs.get("seg") else
                                f"No DICOM SEG: {message}" + ("" if outputs else " " + SEG_HELP))
        elif outputs.get("report"):
            self.status.text = f"Report written: {outputs['report']}"
            openInBrowser(outputs["report"])
        else:
            self.status.text = f"No report: {message}"

    def enable(self, on):
        self.ui.saveReportButton.enabled = on
        self.ui.exportSegButton.enabled = on

    def cancel(self):
        self.task.cancel()


class ImprovePanel:
    """Fine-tuning and the one-step dataset export of CMBDetector (see module docstring)."""

    def __init__(self, widget):
        self.widget, self.ui, self.logic = widget, widget.ui, widget.logic
        ui = self.ui
        ui.addDatasetButton.connect("clicked(bool)", self.onAddDataset)
        ui.trainButton.connect("clicked(bool)", self.onTrain)
        ui.trainCancelButton.connect("clicked(bool)", self.onCancel)
        ui.exportAcceptedButton.connect("clicked(bool)", self.onExportAccepted)
        self.update()

    def onAddDataset(self, *_):
        folder = qt.QFileDialog.getExistingDirectory(None, "Exported annotation dataset")
        if folder:
            self.addDataset(folder)

    def addDataset(self, folder):
        folders = split_folders(self.ui.datasetsEdit.text)
        if folder not in folders:
            folders.append(folder)
        self.ui.datasetsEdit.text = "; ".join(folders)

    def onTrain(self, *_):
        with slicer.util.tryWithErrorDisplay("Fine-tuning could not start."):
            if not self.logic.ensureDependencies(slicer.util.confirmOkCancelDisplay):
                return
            model = self.widget.selectedModelInfo()
            init = model["path"] if model and model.get("source") == "user" else "bundled"
            self.logic.startTraining(split_folders(self.ui.datasetsEdit.text), self.ui.minutesSpin.value,
                                     init=init, onEvent=self.onEvent)
            self.ui.trainProgress.setValue(0)
            self.ui.trainCurves.setPlainText(f"Starting: the new model goes to {self.logic.trainingOut}")
        self.update()

    def onCancel(self, *_):
        self.logic.cancelTraining()
        self.ui.trainCurves.appendPlainText("Cancelling...")

    def onEvent(self, event):
        monitor = self.logic.monitor
        self.ui.trainProgress.setValue(int(1000 * monitor.progress))
        if event.get("event") == "exit":
            self.finished(event)
        elif event.get("event") != "log":
            self.ui.trainCurves.setPlainText("\n".join(filter(None, [monitor.message, monitor.text()])))
        self.update()

    def finished(self, event):
        monitor = self.logic.monitor
        if event["returncode"] == 0 and monitor.done:
            self.widget.fillModels(select=monitor.done.get("model_dir") or self.logic.trainingOut)
            note = "The new model is selected above; its card is shown under the selector."
        elif event["cancelled"] or event["returncode"] == 130:
            note = "Cancelled. Run again with the same datasets to continue from the last checkpoint."
        else:
            note = f"Fine-tuning failed: {monitor.error or event['message']}"
        self.ui.trainCurves.setPlainText("\n".join(filter(None, [monitor.text(), note])))

    def onExportAccepted(self, *_):
        with slicer.util.tryWithErrorDisplay("Export to the dataset failed."):
            target = slicer.util.getModuleLogic("CMBScribbleAnnotator")
            if not target.ensureDependencies(slicer.util.confirmOkCancelDisplay):
                return
            dataset = self.ui.exportDatasetPath.currentPath
            if not dataset:
                raise ValueError("choose the dataset folder to export to")
            files = self.logic.exportAccepted(target, dataset, self.ui.exportSubjectEdit.text,
                                              overwrite=self.ui.exportOverwriteCheck.checked)
            self.addDataset(dataset)
            self.widget.ui.statusLabel.text = (f"Exported to {files['annotation'].parent}; the dataset is listed "
                                               "under 'Improve the model'.")

    def update(self):
        running = self.logic.trainingRunning
        self.ui.trainButton.enabled = not running
        self.ui.trainCancelButton.enabled = running
