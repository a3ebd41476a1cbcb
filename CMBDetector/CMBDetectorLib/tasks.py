"""Background tasks shared by CMBDetector and CMBScribbleAnnotator: the reader's report,
the DICOM SEG and fine-tuning, each a `jobs.CommandJob` (a `cmb` command in a QProcess).

`ReportTask` is what both modules' "Save report" and "Export DICOM SEG" buttons call;
the annotator imports it from here (Slicer puts every scripted module's folder on
sys.path when it loads the module, so CMBDetectorLib is importable from the annotator).
"""
import os

import slicer

from .jobs import CommandJob, dicom_files, report_command, report_outputs, stage_files

DICOM_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"   # set by Slicer's DICOMScalarVolumePlugin (space-separated)


def slicerPython():
    """PythonSlicer next to this Slicer (never the GUI binary)."""
    from .process import python_slicer

    app = slicer.app
    return python_slicer([app.applicationDirPath(), os.path.join(app.slicerHome, "bin")])


def dicomSourceFiles(volumeNode, fileForInstance=None):
    """The DICOM files `volumeNode` was loaded from, through Slicer's DICOM database
    (as DICOMLib.DICOMUtils does).  Raises ValueError with the reason when there are none."""
    if volumeNode is None:
        raise ValueError("select a volume first")
    uids = volumeNode.GetAttribute(DICOM_UIDS_ATTRIBUTE)
    if uids and fileForInstance is None:
        if getattr(slicer, "dicomDatabase", None) is None:
            raise ValueError("Slicer's DICOM database is not open (open the DICOM module once)")
        fileForInstance = slicer.dicomDatabase.fileForInstance
    return dicom_files(uids, fileForInstance)


def ensureReportDependencies(seg=False):
    """The one consent dialog for what `cmb report` needs in Slicer's Python (matplotlib;
    pydicom and highdicom for a DICOM SEG); True when everything is present."""
    from CMBLib import dependencies

    what = "writing a DICOM SEG" if seg else "writing the report"
    return dependencies.ensure(
        "dicom" if seg else "report", slicer.util.confirmOkCancelDisplay, slicer.util.pip_install,
        guard=lambda: slicer.util.tryWithErrorDisplay(f"Installing the Python packages for {what} failed.",
                                                      waitCursor=True))


def openInBrowser(path):
    """Open a local file (the HTML report) in the system's web browser, as Slicer's
    ScriptedLoadableModule.py opens a module's source file."""
    import qt

    url = "file:///" + os.path.abspath(str(path)).replace("\\", "/").lstrip("/")
    return qt.QDesktopServices.openUrl(qt.QUrl(url, qt.QUrl.TolerantMode))


class ReportTask:
    """Run ``cmb report`` in the background; `onDone(outputs, message)` when it ended:
    outputs {'report': path, 'seg': path} on success, else {} and the one-line reason."""

    def __init__(self, processFactory=None, python=None):
        self.processFactory, self.python = processFactory, python
        self.job = None

    @property
    def running(self):
        return self.job is not None and self.job.running

    def start(self, onDone, detections=None, dataset=None, subject=None, image=None, out=None,
              dicomSeg=False, report=True, overwrite=False):
        if self.running:
            raise RuntimeError("a report is already being written")
        command = report_command(self.python or slicerPython(), detections=detections, dataset=dataset,
                                 subject=subject, image=image, out=out, dicom_seg=dicomSeg, report=report,
                                 overwrite=overwrite)

        def onEvent(event):
            if event.get("event") == "exit":
                ok = event["returncode"] == 0
                onDone(report_outputs(event["stdout"]) if ok else {}, "\n".join(event["stdout"][-3:]) if ok
                       else ("cancelled" if event["cancelled"] else event["message"]))

        kwargs = {} if self.processFactory is None else {"process_factory": self.processFactory}
        self.job = CommandJob(command, onEvent, **kwargs).start()
        return command

    def startSeg(self, onDone, volumeNode, stagingFolder, fileForInstance=None, **source):
        """DICOM SEG of `source` (detections= or dataset=, subject=) on the series `volumeNode`
        came from; the series' files are linked into `stagingFolder` for ``--image``."""
        files = dicomSourceFiles(volumeNode, fileForInstance)
        image = stage_files(files, stagingFolder)
        return self.start(onDone, image=str(image), dicomSeg=True, report=False, **source)

    def cancel(self):
        if self.job is not None:
            self.job.cancel()
