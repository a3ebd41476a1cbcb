"""CMBDetector's "Compare with prior": the comparison job, its results -> nodes, the review.

The current volume is the follow-up, the chosen prior the baseline.  The job runs in the
detector's warm worker (`cmb worker`, "kind": "compare"), so the GUI never waits and Cancel
kills it like a detection.  The result is laid out for reading: the prior is placed under a
linear transform (baseline RAS -> follow-up RAS, from compare.json) so that both volumes line
up in the slice views (follow-up in the background, prior in the foreground), and the CMBs
become locked points "new 1", "persisting 1", ... at their follow-up centres.  Decisions on
new CMBs (`CMBLib.compare.review.CompareReview`) are kept by the widget in the parameter node;
"Save comparison report" sends a "compare_review" job that writes the reviewed JSON / CSV /
HTML beside the automatic files.  No widget calls here.
"""
import os

import slicer
import vtk

from .logic import safeName
from .process import compare_job, compare_review_job

TRANSFORM_SUFFIX = "to follow-up (CMB compare)"


class ComparisonLogic:
    """One comparison at a time, through `detector` (a `DetectorLogic`: its warm worker)."""

    def __init__(self, detector):
        self.detector = detector
        self.onEvent = None          # callback(event) set by the widget
        self.run = None              # {"id", "out", "baseline", "followup", "prior", "volume"} of the last job
        self.compareJson = None
        self.document = None
        self.review = None           # CMBLib.compare.review.CompareReview
        self.markupsNode = None
        self.transformNode = None
        self.prior = self.volume = None

    @property
    def running(self):
        return self.run is not None and self.run.get("id") in self.detector.jobHandlers

    @staticmethod
    def outputFolder(priorNode, volumeNode, outputDir=None):
        """Where the comparison goes: OUTPUT/FOLLOWUP_vs_PRIOR_compare, or a temporary folder."""
        parent = outputDir or slicer.util.tempDirectory("CMBDetectorCompare")
        return os.path.join(parent, f"{safeName(volumeNode.GetName())}_vs_{safeName(priorNode.GetName())}_compare")

    @staticmethod
    def _export(volumeNode):
        path = os.path.join(slicer.util.tempDirectory("CMBDetectorInput"), safeName(volumeNode.GetName()) + ".nrrd")
        if not slicer.util.exportNode(volumeNode, path):
            raise RuntimeError(f"could not write {path}")
        return path

    def start(self, priorNode, volumeNode, outputDir=None, model="default", device="auto", sequence="T2S",
              tolerance_mm=5.0, overwrite=False):
        """Export both volumes and send the comparison to the warm worker; returns the job id."""
        if priorNode is None or volumeNode is None:
            raise ValueError("select the current volume (above) and the prior volume")
        if priorNode.GetID() == volumeNode.GetID():
            raise ValueError("the prior volume is the current volume; pick the earlier scan")
        out = self.outputFolder(priorNode, volumeNode, outputDir)
        baseline, followup = self._export(priorNode), self._export(volumeNode)
        job = compare_job("", baseline, followup, out, model=model, device=device, sequence=sequence,
                          tolerance_mm=tolerance_mm, overwrite=overwrite)
        self.run = {"out": out, "baseline": baseline, "followup": followup, "prior": priorNode, "volume": volumeNode}
        self.run["id"] = self.detector.submitJob(job, self._onJobEvent)
        return self.run["id"]

    def _onJobEvent(self, event):
        if event.get("event") == "result" and event.get("kind") == "compare":
            self.compareJson = event.get("outputs", {}).get("json")
        if self.onEvent is not None:
            self.onEvent(event)

    def cancel(self):
        if self.running:
            self.detector.cancel()

    # --- results ------------------------------------------------------------------------
    def load(self, compareJson, priorNode, volumeNode, state="", nodes=True):
        """Rows and review (decisions restored from `state`); with `nodes`, also the prior's
        transform, the slice view layers and the CMB points."""
        from CMBLib.compare.review import CompareReview, compare_rows, prior_to_followup, read_compare

        self.document = read_compare(compareJson)
        self.compareJson, self.prior, self.volume = compareJson, priorNode, volumeNode
        self.review = CompareReview(compare_rows(self.document))
        self.review.restore(state)
        if not nodes:
            return self.review
        if priorNode is not None:
            self.transformNode = self._alignPrior(priorNode, prior_to_followup(self.document))
        if volumeNode is not None and priorNode is not None:
            slicer.util.setSliceViewerLayers(background=volumeNode, foreground=priorNode, foregroundOpacity=0.5)
        self.markupsNode = self._points(volumeNode.GetName() if volumeNode is not None else "follow-up")
        return self.review

    @staticmethod
    def _alignPrior(priorNode, matrix):
        """The prior under a linear transform baseline RAS -> follow-up RAS (one per prior, reused)."""
        name = f"{priorNode.GetName()} {TRANSFORM_SUFFIX}"
        node = slicer.mrmlScene.GetFirstNodeByName(name)
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
        slicer.util.updateTransformMatrixFromArray(node, matrix)
        priorNode.SetAndObserveTransformNodeID(node.GetID())
        return node

    def _points(self, base):
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"{base} compared with prior")
        for row in self.review.rows:
            n = node.AddControlPoint(vtk.vtkVector3d(*row["centre_ras"]), row["key"])
            node.SetNthControlPointLocked(n, True)
            node.SetNthControlPointDescription(n, self._description(row))
        return node

    def _description(self, row):
        from CMBLib.compare.review import LABELS

        text = LABELS[row["cls"]]
        if row["reviewable"]:
            text += f" ({self.review.status[row['key']]})"
        return text + (f"; {row['flag']}" if row["flag"] else "")

    def jumpTo(self, row):
        """Centre the slice views on a CMB: the follow-up and the aligned prior at the same place."""
        if row is not None:
            x, y, z = row["centre_ras"]
            slicer.modules.markups.logic().JumpSlicesToLocation(x, y, z, True)

    def setStatus(self, status):
        """Decide on the current new CMB (then move to the next unreviewed one)."""
        if self.review is None:
            return False
        row, index = self.review.current, self.review.index
        if not self.review.mark(status):
            return False
        if self.markupsNode is not None:
            self.markupsNode.SetNthControlPointDescription(index, self._description(row))
        return True

    def reviewState(self):
        return self.review.to_json() if self.review is not None else ""

    def summary(self):
        """One line: the automatic and the reviewed new count with their ARIA-H categories."""
        if self.review is None:
            return ""
        doc, s = self.document, self.review.summary()
        counts = doc.get("counts") or {}
        return (f"ARIA-H {s['aria_h_category']}: {s['new_count']} new CMB(s) after review "
                f"(automatic: {doc.get('new_count', 0)}, {doc.get('aria_h_category', '')}; accepted {s['accepted']}, "
                f"rejected {s['rejected']}, to review {s['unreviewed']}). Persisting {counts.get('persisting', 0)}, "
                f"no longer seen {counts.get('no_longer_seen', 0)}.")

    def saveReport(self, handler, overwrite=False):
        """Send the "compare_review" job (reviewed JSON / CSV / HTML beside compare.json)."""
        if self.review is None or not self.compareJson:
            raise ValueError("run a comparison first")
        images = [None, None]
        for n, (key, node) in enumerate((("baseline", self.prior), ("followup", self.volume))):
            path = (self.document.get(key) or {}).get("image")
            if (not path or not os.path.isfile(path)) and node is not None:
                images[n] = self._export(node)       # the temporary copy is gone: export again
        job = compare_review_job("", self.compareJson, self.review.status, baseline=images[0], followup=images[1],
                                 overwrite=overwrite)
        return self.detector.submitJob(job, handler)

    def forget(self):
        """Scene close: the nodes went with the scene."""
        self.run = self.compareJson = self.document = self.review = None
        self.markupsNode = self.transformNode = self.prior = self.volume = None
