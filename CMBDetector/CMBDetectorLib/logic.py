"""CMBDetector's logic: the warm worker, results -> nodes, review state, hand-over.

No widget calls: the widget registers `onEvent` to hear the worker, and hands a target
logic to `handOver`.  The worker process comes from `processFactory` (default
`QtProcess`), so tests inject their own.
"""
import json
import logging
import os

import slicer
import vtk

from .jobs import CommandJob, TrainingMonitor, finetune_command, list_models, new_model_folder, user_models_dir
from .process import WorkerClient, default_threads, detection_job, worker_command
from .review import STATUSES, ReviewSession, aside_points, segment_name
from .tasks import slicerPython

HANDOVER_ATTRIBUTE = "CMBDetector.Findings"   # JSON list of annotation findings on the segmentation node
DETECTIONS_ATTRIBUTE = "CMBDetector.DetectionsFile"  # path of the NAME_cmb.json the candidates came from
RECORDS_ATTRIBUTE = "CMBDetector.Records"     # JSON detection records (the review survives a scene save)
LABEL_TAG = "CMBDetector.Label"               # segment tag: the candidate's label in the detection mask
STATUS_TAG = "CMBDetector.ReviewStatus"       # segment tag: unreviewed / accepted / rejected
STATUS_COLORS = {"unreviewed": (1.0, 0.85, 0.1), "accepted": (0.1, 0.85, 0.2), "rejected": (0.5, 0.5, 0.5)}
ASIDE_COLOR = (0.6, 0.6, 0.6)                 # grey points: candidates the location filter set aside
TABLE_COLUMNS = ["label", "status", "diameter_mm", "size_class", "max_probability", "location", "vessel_like",
                 "x_ras", "y_ras", "z_ras"]


def safeName(name):
    """A file-name-safe version of a node name."""
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)).strip("._")
    return keep or "input"


class DetectorLogic:
    """Detection through one warm `cmb worker` process and the review of its candidates."""

    def __init__(self, processFactory=None, python=None):
        self.processFactory = processFactory
        self.python = python
        self.worker = None
        self._jobs = 0               # detection jobs sent (their ids are "slicer-1", "slicer-2", ...)
        self.onEvent = None          # callback(event) set by the widget
        self.run = None              # {"id", "outputDir", "name", "volume"} of the job in progress / last job
        self.resultPath = None
        self.document = {}
        self.session = None
        self.segmentationNode = None
        self.markupsNode = None
        self.asideNode = None        # points of the candidates set aside by location (None when none)
        self.tableNode = None
        self.training = None         # CommandJob of the fine-tuning run
        self.monitor = None          # its TrainingMonitor
        self.trainingOut = None
        self.unfinished = None       # (datasets, init) and model folder of a cancelled / failed run
        self.jobHandlers = {}        # job id -> callback(event) of jobs other than detection (comparison)

    @staticmethod
    def models():
        """Bundled and fine-tuned (user) models, through CMBLib.detection.registry when present."""
        return list_models()

    # --- "Improve the model from my annotations" ------------------------------------------
    @property
    def trainingRunning(self):
        return self.training is not None and self.training.running

    def startTraining(self, datasets, minutes, init="bundled", onEvent=None, out=None):
        """Fine-tune in a background process (`python -m CMBLib.detection.finetune`); the model
        goes to a new folder of the user models folder, where the model list finds it.  After a
        cancelled or failed run, the same datasets and parent reuse its folder name, so the
        fine-tuning continues from its last checkpoint (saved every minute)."""
        if self.trainingRunning:
            raise RuntimeError("a fine-tuning run is already running")
        key = (tuple(os.path.abspath(d) for d in datasets), str(init))
        if out is None and self.unfinished and self.unfinished[0] == key and not os.path.exists(self.unfinished[1]):
            out = self.unfinished[1]
        self.trainingOut = str(out or new_model_folder(user_models_dir()))
        command = finetune_command(self.python or slicerPython(), datasets, self.trainingOut, minutes, init=init,
                                   threads=default_threads())
        self.monitor = TrainingMonitor()

        def feed(event):
            self.monitor.feed(event)
            if event.get("event") == "exit":
                self.unfinished = None if event["returncode"] == 0 else (key, self.trainingOut)
            if onEvent is not None:
                onEvent(event)

        kwargs = {} if self.processFactory is None else {"process_factory": self.processFactory}
        self.training = CommandJob(command, feed, **kwargs).start()
        logging.info("CMBDetector fine-tuning: %s", " ".join(command))
        return command

    def cancelTraining(self):
        if self.training is not None:
            self.training.cancel()

    @property
    def reportVolume(self):
        return (self.run or {}).get("volume")

    def reportSource(self):
        """What ``cmb report`` needs for the last detection: its NAME_cmb.json, the image it ran
        on (exported again when the temporary copy is gone) and the output folder."""
        detections = self.resultPath or (self.segmentationNode.GetAttribute(DETECTIONS_ATTRIBUTE)
                                         if self.segmentationNode is not None else None)
        if not detections or not os.path.isfile(detections):
            raise ValueError("run detection first (the report is made from its NAME_cmb.json)")
        image = (self.run or {}).get("image")
        if not image or not os.path.isfile(image):
            volume = self.reportVolume
            if volume is None:
                raise ValueError("the image of these detections is not in the scene; run detection again")
            image = os.path.join(slicer.util.tempDirectory("CMBDetectorInput"), safeName(volume.GetName()) + ".nrrd")
            if not slicer.util.exportNode(volume, image):
                raise RuntimeError(f"could not write {image}")
        return {"detections": detections, "image": image, "out": os.path.dirname(detections)}

    def exportAccepted(self, target, dataset, subject, overwrite=False):
        """Accepted candidates (and unreviewed ones as 'proposed') into an annotation dataset in
        one step: hand-over to the annotator's logic `target`, then its `exportStudy`."""
        if self.session is None or not self.session.records_with("accepted"):
            raise ValueError("accept at least one candidate first")
        if not str(subject or "").strip():
            raise ValueError("type a subject id for the dataset")
        self.handOver(target)
        from CMBLib.annotation.dataset import sequence_name

        sequence = sequence_name((self.run or {}).get("sequence") or "T2S")   # T2S -> T2starw (the dataset's names)
        return target.exportStudy(dataset, subject, overwrite=overwrite, sequence=sequence)

    # --- the worker ---------------------------------------------------------------------
    @property
    def running(self):
        return self.worker is not None and self.worker.busy

    def _workerClient(self):
        if self.worker is None:
            kwargs = {} if self.processFactory is None else {"process_factory": self.processFactory}
            command = worker_command(self.python or slicerPython(), threads=default_threads())
            self.worker = WorkerClient(command, on_event=self._onWorkerEvent, **kwargs)
        return self.worker

    def outputExists(self, volumeNode, outputDir):
        from CMBLib.detection.outputs import output_paths

        return bool(outputDir) and output_paths(outputDir, safeName(volumeNode.GetName()))["json"].exists()

    def start(self, volumeNode, model="default", device="auto", threshold=None, sequence="T2S",
              location=False, outputDir=None, overwrite=False, second_stage=None, location_filter=None,
              first_stage=None):
        """Export `volumeNode` and send one job to the warm worker (started on first use).
        `second_stage`: None = the model's default, True / False = candidate classifier on / off;
        `location_filter` alike (False: nothing is set aside by location); `first_stage`: None =
        the model's default, "unet" or "unet+native"."""
        if self.running:
            raise RuntimeError("a detection is already running")
        name = safeName(volumeNode.GetName())
        outputDir = outputDir or slicer.util.tempDirectory("CMBDetector")
        os.makedirs(outputDir, exist_ok=True)
        inputDir = slicer.util.tempDirectory("CMBDetectorInput")
        image = os.path.join(inputDir, name + ".nrrd")
        if not slicer.util.exportNode(volumeNode, image):
            raise RuntimeError(f"could not write {image}")
        job = detection_job("", image, outputDir, name, model=model, device=device, threshold=threshold,
                            sequence=sequence, location=location, overwrite=overwrite, second_stage=second_stage,
                            location_filter=location_filter, first_stage=first_stage)
        self._jobs += 1
        job["id"] = f"slicer-{self._jobs}"     # known before submit: a worker may answer inside write()
        self.resultPath = None
        self.run = {"id": job["id"], "outputDir": outputDir, "name": name, "volume": volumeNode, "image": image,
                    "sequence": sequence}
        self._workerClient().submit(job)
        logging.info("CMBDetector job %s: %s", self.run["id"], json.dumps(job))
        return self.run["id"]

    def submitJob(self, job, handler):
        """Send another kind of job (a comparison) to the same warm worker; its events go to
        `handler` instead of `onEvent` until it ends.  Returns the job id."""
        if self.running:
            raise RuntimeError("the worker is busy (a detection or comparison is running)")
        self._jobs += 1
        job = dict(job, id=f"slicer-{self._jobs}")
        self.jobHandlers[job["id"]] = handler
        self._workerClient().submit(job)
        logging.info("CMBDetector job %s: %s", job["id"], json.dumps(job))
        return job["id"]

    def _onWorkerEvent(self, event):
        jobId = event.get("job") if event.get("event") == "exit" else event.get("id")
        handler = self.jobHandlers.get(jobId)
        if handler is not None:
            if event.get("event") in ("result", "error", "exit"):
                del self.jobHandlers[jobId]
            handler(event)
            return
        if event.get("event") == "result" and self.run and event.get("id") == self.run["id"]:
            self.resultPath = event.get("outputs", {}).get("json")
        if self.onEvent is not None:
            self.onEvent(event)

    def cancel(self):
        if self.worker is not None:
            self.worker.cancel()

    def shutdown(self):
        """Stop the worker (module cleanup / scene close)."""
        self.jobHandlers.clear()
        if self.worker is not None:
            self.worker.shutdown()
            self.worker = None

    # --- results ------------------------------------------------------------------------
    def loadResults(self, jsonPath, volumeNode):
        """Segmentation (one segment per CMB), markups at the centres and a table from NAME_cmb.json.

        Candidates the location filter set aside (``suppressed_candidates``: likely veins, not
        findings, not in the mask) become locked grey points of a second markups node,
        ``self.asideNode`` (None when there are none), so a reader can look at each one.
        Returns (segmentation, centres markups, table) as before."""
        from CMBLib.detection.outputs import read_detections

        self.document = read_detections(jsonPath)
        records = self.document["cmbs"]
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
            self._importMask(maskPath, seg, ids, [int(rec["label"]) for rec in records])
        seg.SetAttribute(DETECTIONS_ATTRIBUTE, jsonPath)
        seg.SetAttribute(RECORDS_ATTRIBUTE, json.dumps(records))
        self.segmentationNode = seg
        self.session = ReviewSession(records)

        points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"{base} CMB centres")
        for rec in records:
            n = points.AddControlPoint(vtk.vtkVector3d(*rec["centre_ras"]), f"CMB {rec['label']}")
            points.SetNthControlPointDescription(n, segment_name(rec))
            points.SetNthControlPointLocked(n, True)
        self.markupsNode = points

        table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", f"{base} CMB table")
        for name in TABLE_COLUMNS:
            table.AddColumn().SetName(name)
        for rec in records:
            row = table.AddEmptyRow()
            values = [rec["label"], "unreviewed", rec["diameter_mm"], rec["size_class"], rec["max_probability"],
                      rec.get("location", ""), int(bool(rec.get("vessel_like")))] + list(rec["centre_ras"])
            for col, value in enumerate(values):
                table.SetCellText(row, col, str(value))
        self.tableNode = table
        self.asideNode = self._asideNode(base)
        return seg, points, table

    @staticmethod
    def _importMask(maskPath, segmentationNode, ids, labels):
        """Label `labels[n]` of the mask file -> segment `ids[n]`.  Slicer puts label value v into
        ids[v - 1], so a mask whose labels are not 1..N is renumbered first (other labels are
        dropped); the temporary
        labelmap node and its display nodes leave the scene."""
        import numpy as np

        labelmap = slicer.util.loadLabelVolume(maskPath, {"show": False})
        try:
            voxels = slicer.util.arrayFromVolume(labelmap)
            if labels != list(range(1, len(labels) + 1)) or int(voxels.max()) > len(labels):
                lookup = np.zeros(max(int(voxels.max()), max(labels)) + 1, voxels.dtype)
                lookup[labels] = np.arange(1, len(labels) + 1)
                voxels[:] = lookup[voxels]
                slicer.util.arrayFromVolumeModified(labelmap)
            if not slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(
                    labelmap, segmentationNode, ids):
                raise RuntimeError(f"could not read the CMB masks of {maskPath}")
        finally:
            displayNodes = [labelmap.GetNthDisplayNode(n) for n in range(labelmap.GetNumberOfDisplayNodes())]
            for node in [labelmap] + [d for d in displayNodes if d is not None]:
                slicer.mrmlScene.RemoveNode(node)

    def _asideNode(self, base):
        """Locked grey points at the candidates set aside, each saying why; None when none."""
        aside = aside_points(self.document)
        if not aside:
            return None
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"{base} set aside (likely veins)")
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        if display is not None:
            display.SetSelectedColor(*ASIDE_COLOR)   # control points are drawn "selected" by default
            display.SetColor(*ASIDE_COLOR)
        for centre, label, description in aside:
            n = node.AddControlPoint(vtk.vtkVector3d(*centre), label)
            node.SetNthControlPointDescription(n, description)
            node.SetNthControlPointLocked(n, True)
        return node

    def reviewState(self):
        """{label: status} and the current index, as JSON (kept in the parameter node)."""
        if self.session is None:
            return ""
        return json.dumps({"status": {str(k): v for k, v in self.session.status.items()},
                           "index": self.session.index})

    def restoreReview(self, segmentationNode, state):
        """Rebuild the review from a segmentation made by `loadResults` and a saved `reviewState`."""
        text = segmentationNode.GetAttribute(RECORDS_ATTRIBUTE) if segmentationNode else None
        if not text:
            return False
        self.segmentationNode = segmentationNode
        self.session = ReviewSession(json.loads(text))
        try:
            saved = json.loads(state) if state else {}
        except ValueError:
            saved = {}
        for label, status in (saved.get("status") or {}).items():
            if int(label) in self.session.status and status in STATUSES:
                self.session.status[int(label)] = status
        self.session.select(saved.get("index", 0))
        return True

    def jumpTo(self, record):
        """Centre all slice views on a candidate."""
        if record is not None:
            x, y, z = record["centre_ras"]
            slicer.modules.markups.logic().JumpSlicesToLocation(x, y, z, True)

    def setStatus(self, record, status):
        """Record a review decision: session, segment (colour, tag) and table."""
        self.session.status[int(record["label"])] = status
        segId = f"CMB_{record['label']}"
        if self.segmentationNode is not None:
            segment = self.segmentationNode.GetSegmentation().GetSegment(segId)
            if segment is not None:
                segment.SetTag(STATUS_TAG, status)
                segment.SetColor(*STATUS_COLORS[status])
        if self.tableNode is not None:
            row = [r["label"] for r in self.session.records].index(record["label"])
            self.tableNode.SetCellText(row, 1, status)

    def handOver(self, target=None):
        """Give accepted candidates (with their masks) to the annotator.

        The segmentation carries the hand-over (attribute ``CMBDetector.Findings``: JSON
        findings, accepted -> "confirmed", unreviewed -> "proposed"; segments tagged
        ``CMBDetector.Label``).  `target`: an object with ``importDetectorFindings(
        segmentationNode, volumeNode, findings)`` (CMBScribbleAnnotator's logic); the
        widget passes it, tests pass one writing into a temporary folder.
        Returns (number accepted, what the target returned).
        """
        if self.session is None or self.segmentationNode is None:
            raise ValueError("run detection first")
        findings = self.session.findings()
        self.segmentationNode.SetAttribute(HANDOVER_ATTRIBUTE, json.dumps(findings))
        accepted = sum(f["review_status"] == "confirmed" for f in findings)
        result = None
        if target is not None:
            volume = self.run["volume"] if self.run else None
            result = target.importDetectorFindings(self.segmentationNode, volume, findings)
        return accepted, result
