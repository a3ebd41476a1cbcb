"""Slicer self-test of CMBScribbleAnnotator (registered with slicer_add_python_unittest).

Loads MRHead, paints a scribble, grows its mask (batch and live), fills metadata,
autosaves, restores, exports and re-imports.  Everything is written into a temporary
folder; nothing is installed (the test fails with a clear message when packages are
missing: open the module once and accept the installation).
"""
import os
import tempfile

import numpy as np
import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from CMBLib import dependencies
from CMBLib.errors import CMBError

from . import nodes
from .logic import AnnotatorLogic


class CMBScribbleAnnotatorTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_annotate_export_import()

    def test_annotate_export_import(self):
        import SampleData

        from CMBLib.annotation.document import validate_document

        missing = dependencies.plan("annotation")["pip"]
        self.assertEqual(missing, [], "open CMB Scribble Annotator once and accept the installation of "
                                      + ", ".join(missing))
        self.delayDisplay("Loading MRHead")
        volumeNode = SampleData.SampleDataLogic().downloadMRHead()
        work = tempfile.mkdtemp(prefix="cmb_annotator_test_")
        logic = AnnotatorLogic(sessionRoot=os.path.join(work, "sessions"), rater="selftest")
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
        self.assertEqual(sorted(map(tuple, nodes.segmentVoxels(logic.scribblesNode, segmentId))),
                         [(k, j, i - 1), (k, j, i), (k, j, i + 1)])

        self.delayDisplay("Live mask")
        grown = logic.liveGrow()
        self.assertIn(label, grown)
        live = logic.maskLabelmap().array
        self.assertTrue(np.all(live[scribble > 0] == 1))
        lo, hi = grown[label].tolerance_range()
        logic.showMask(label, lo)
        self.assertLessEqual(int((logic.maskLabelmap().array == 1).sum()), int((live == 1).sum()))

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
        restored = AnnotatorLogic(sessionRoot=os.path.join(work, "sessions"))
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
        from .report import exported_source  # what "Save report" / "Export DICOM SEG" report on

        self.assertEqual(exported_source(dataset, "sub-01", "T2starw"), {"dataset": dataset, "subject": "01"})
        with self.assertRaises(ValueError):
            exported_source(dataset, "02", "T2starw")   # not exported: one line, no process started
        reader = AnnotatorLogic(sessionRoot=os.path.join(work, "sessions2"))
        reader.importStudy(dataset, "01")
        self.assertEqual(reader.findings()[0]["location"], "thalamus")
        self.assertEqual(reader.document["mimics"][0]["type"], "cavernoma")
        np.testing.assert_array_equal(reader.maskLabelmap().array, mask)
        self.delayDisplay("Test passed")
