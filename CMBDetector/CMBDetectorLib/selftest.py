"""Slicer self-test of CMBDetector (registered with slicer_add_python_unittest).

Writes only into temporary folders; installs nothing; builds no other module's widget
(the hand-over goes to a recording stand-in of the annotator's logic).
"""
import json
import os
import tempfile

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from .logic import ASIDE_COLOR, HANDOVER_ATTRIBUTE, STATUS_COLORS, STATUS_TAG, DetectorLogic


class _Target:
    """Records what the annotator's logic would receive."""

    def importDetectorFindings(self, segmentationNode, volumeNode, findings):
        self.received = (segmentationNode, volumeNode, findings)
        return {f["label"]: f["label"] for f in findings}


class _ReplayProcess:
    """Stands in for QtProcess: answers every job line with progress and a result."""

    def __init__(self, on_line, on_finished):
        self.on_line, self.on_finished = on_line, on_finished
        self.running, self.lines = False, []

    def start(self, command, env=None):
        self.command, self.running = command, True

    def write(self, text):
        job = json.loads(text)
        self.lines.append(job)
        self.on_line("out", json.dumps({"event": "progress", "id": job["id"], "progress": 0.5, "message": "half"}))
        outputs = {"json": os.path.join(job["out"], job["name"] + "_cmb.json")}
        self.on_line("out", json.dumps({"event": "result", "id": job["id"], "status": "ok", "outputs": outputs,
                                        "model_loads": 1, "timings": {"total": 0.1}}))

    def kill(self):
        self.running = False
        self.on_finished(-1)


class _TrainingProcess:
    """Stands in for QtProcess running `python -m CMBLib.detection.finetune --progress-json`:
    replays its JSON lines (docs/finetuning.md) and ends with exit code 0."""

    def __init__(self, on_line, on_finished):
        self.on_line, self.on_finished, self.running = on_line, on_finished, False

    def start(self, command, env=None):
        self.command, self.running = command, True
        out = command[command.index("--out") + 1]
        for event in ({"event": "progress", "progress": 0.5, "message": "training step 10"},
                      {"event": "train", "step": 10, "loss": 0.8}, {"event": "train", "step": 20, "loss": 0.4},
                      {"event": "val", "model": "finetuned", "step": 20, "f1": 0.5},
                      {"event": "done", "model_dir": out, "accepted": True, "threshold": 0.6}):
            self.on_line("out", json.dumps(event))
        self.running = False
        self.on_finished(0)

    def kill(self):
        self.running = False


class CMBDetectorTest(ScriptedLoadableModuleTest):
    """Results -> nodes, review, hand-over through logic, worker round trip with a stand-in process."""

    def setUp(self):
        slicer.mrmlScene.Clear()
        self.folder = tempfile.mkdtemp(prefix="CMBDetectorTest_")

    def runTest(self):
        self.setUp()
        self.test_loadResultsAndReview()
        self.setUp()
        self.test_workerRoundTrip()
        self.setUp()
        self.test_trainingAndReportGlue()

    def _writeResults(self, folder, aside=0):
        """A synthetic volume and detection outputs for it, made with CMBLib (no torch needed);
        the last `aside` candidates are set aside as if they lay in the deep midline vein zone."""
        import numpy as np

        from CMBLib.detection.candidates import find_candidates
        from CMBLib.detection.outputs import write_outputs
        from CMBLib.detection.pipeline import DetectionResult, suppress_in_zones
        from CMBLib.geometry import Volume

        prob = np.zeros((20, 40, 40), np.float32)
        prob[10, 10:13, 10:13] = 0.9
        prob[5:8, 25:28, 25:29] = 0.7
        geom = Volume(prob, (0.9, 0.9, 3.0), (-18.0, -18.0, -30.0))
        labels, records, dropped = find_candidates(geom, 0.5)
        found = [{"mni_x": 0.0, "mni_y": -20.0, "mni_z": 10.0 if n >= len(records) - aside else 80.0}
                 for n in range(len(records))]     # z 80: outside the zone
        labels, records, suppressed = suppress_in_zones(labels, records, found, ("deep_midline_veins",))
        settings = {"model": "self-test", "model_version": "0", "threshold": 0.5, "device": "cpu"}
        result = DetectionResult(geom.with_array(labels), geom, records, settings, {"total": 0.0}, [], dropped,
                                 suppressed=suppressed)
        write_outputs(result, folder, "selftest")
        volumeNode = slicer.util.addVolumeFromArray((100 - 50 * prob).astype("float32"), name="selftest")
        volumeNode.SetSpacing(0.9, 0.9, 3.0)
        volumeNode.SetOrigin(-18.0, -18.0, -30.0)  # Slicer origin and directions are RAS, as in Volume
        return os.path.join(folder, "selftest_cmb.json"), volumeNode, records

    def test_loadResultsAndReview(self):
        self.delayDisplay("Loading detection results into nodes")
        jsonPath, volumeNode, records = self._writeResults(self.folder)
        logic = DetectorLogic()
        seg, points, table = logic.loadResults(jsonPath, volumeNode)
        self.assertEqual(seg.GetSegmentation().GetNumberOfSegments(), len(records))
        self.assertEqual(points.GetNumberOfControlPoints(), len(records))
        self.assertEqual(table.GetNumberOfRows(), len(records))
        self.assertIsNone(logic.asideNode)                   # nothing set aside: no second markups node
        first = seg.GetSegmentation().GetSegment("CMB_1")
        self.assertTrue(first.GetName().startswith("CMB 1: "))
        pos = [0.0, 0.0, 0.0]
        points.GetNthControlPointPosition(0, pos)
        for a, b in zip(pos, records[0]["centre_ras"]):
            self.assertAlmostEqual(a, b, places=2)
        logic.jumpTo(records[0])
        logic.setStatus(records[0], "accepted")
        self.assertTrue(first.HasTag(STATUS_TAG))
        for a, b in zip(first.GetColor(), STATUS_COLORS["accepted"]):
            self.assertAlmostEqual(a, b, places=3)
        self.assertEqual(table.GetCellText(0, 1), "accepted")
        self.assertEqual([f["review_status"] for f in logic.session.findings()], ["confirmed", "proposed"])

        self.delayDisplay("Review state survives a new logic (as after re-opening a saved scene)")
        state = logic.reviewState()
        again = DetectorLogic()
        self.assertTrue(again.restoreReview(seg, state))
        self.assertEqual(again.session.status[int(records[0]["label"])], "accepted")

        self.delayDisplay("Hand-over through logic")
        logic.run = {"volume": volumeNode}
        target = _Target()
        accepted, mapping = logic.handOver(target)
        self.assertEqual(accepted, 1)
        self.assertIs(target.received[1], volumeNode)
        self.assertEqual(len(json.loads(seg.GetAttribute(HANDOVER_ATTRIBUTE))), 2)

        self.delayDisplay("Candidates set aside by location are shown as locked grey points")
        folder = os.path.join(self.folder, "aside")
        os.makedirs(folder)
        jsonPath, volumeNode, kept = self._writeResults(folder, aside=1)
        logic.loadResults(jsonPath, volumeNode)
        aside = logic.document["suppressed_candidates"]
        self.assertEqual((len(kept), len(aside)), (1, 1))
        node = logic.asideNode
        self.assertEqual(node.GetName(), "selftest set aside (likely veins)")
        self.assertEqual(node.GetNumberOfControlPoints(), 1)
        self.assertTrue(node.GetNthControlPointLocked(0))
        self.assertTrue(node.GetNthControlPointDescription(0).startswith("set aside: deep_midline_veins zone"))
        node.GetNthControlPointPosition(0, pos)
        for a, b in zip(pos, aside[0]["centre_ras"]):
            self.assertAlmostEqual(a, b, places=2)
        for a, b in zip(node.GetDisplayNode().GetSelectedColor(), ASIDE_COLOR):
            self.assertAlmostEqual(a, b, places=3)

    def test_workerRoundTrip(self):
        self.delayDisplay("Warm worker glue")
        jsonPath, volumeNode, records = self._writeResults(self.folder)
        events = []
        logic = DetectorLogic(processFactory=_ReplayProcess, python="PythonSlicer")
        logic.onEvent = events.append
        self.assertTrue(logic.outputExists(volumeNode, self.folder))
        logic.start(volumeNode, model="self-test", outputDir=self.folder)
        self.assertEqual(logic.worker.process.command[1:4], ["-m", "CMBLib", "worker"])
        self.assertFalse(logic.worker.process.lines[0]["overwrite"])     # nothing replaced silently
        self.assertEqual([e["event"] for e in events], ["progress", "result"])
        self.assertEqual(logic.resultPath, jsonPath)
        self.assertFalse(logic.running)
        logic.start(volumeNode, model="self-test", outputDir=self.folder, overwrite=True)
        self.assertEqual(logic.worker.starts, 1)                           # the same warm process
        logic.cancel()
        self.assertEqual(events[-1]["event"], "exit")
        logic.shutdown()
        self.delayDisplay("Worker glue OK")

    def test_trainingAndReportGlue(self):
        self.delayDisplay("Fine-tuning job glue and DICOM SEG source check")
        from .tasks import dicomSourceFiles

        events = []
        logic = DetectorLogic(processFactory=_TrainingProcess, python="PythonSlicer")
        out = os.path.join(self.folder, "models", "new")
        command = logic.startTraining([self.folder], 2, onEvent=events.append, out=out)
        self.assertEqual(command[1:3], ["-m", "CMBLib.detection.finetune"])
        self.assertEqual(command[command.index("--out") + 1], out)
        self.assertEqual(events[-1]["event"], "exit")
        self.assertEqual(events[-1]["returncode"], 0)
        self.assertEqual(logic.monitor.loss, [(10, 0.8), (20, 0.4)])
        self.assertEqual(logic.monitor.done["model_dir"], out)
        self.assertFalse(logic.trainingRunning)
        volumeNode = slicer.util.addVolumeFromArray(__import__("numpy").zeros((2, 3, 4), "float32"), name="plain")
        with self.assertRaises(ValueError):              # not from the DICOM database: no SEG, one reason
            dicomSourceFiles(volumeNode)
        self.delayDisplay("Training and report glue OK")
