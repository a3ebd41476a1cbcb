"""The Slicer API the modules call exists in every supported Slicer (v5.8.1 and the newest
release), checked against Testing/data/slicer_api.json (written from Slicer's and CTK's source,
and Qt's through PyQt5 / PyQt6, by scripts/slicer_api_snapshot.py; re-run it for a new release).
The checker is Testing/slicer_api_check.py.

Checked in CMBDetector/ and CMBScribbleAnnotator/ (AST scan, each module's files together with
its Resources/UI/*.ui):
  * methods and attributes on objects whose class is inferred (nodes from AddNewNodeByClass,
    constructors, getters, node selectors of the .ui, parameter names, `self.x`, the parameter
    node; see slicer_api_check's docstring) must exist on that class, its Slicer / Qt bases and
    VTK's base classes; other CamelCase calls `obj.GetX(...)` on some recorded class;
  * `slicer.util.f` and its keyword arguments, `from slicer.util import X`, `slicer.parameterNodeWrapper`,
    `slicer.vtkX` / `slicer.qX` and their attributes, `slicer.mrmlScene.X`, `slicer.app.X`;
  * `slicer.modules.<name>` (a module of that release, or of this or the PyTorch extension),
    its methods, and `slicer.modules.<name>.logic().X` on that module's logic class; module
    names passed to slicer.util.getModuleLogic / selectModule... and module dependencies;
  * strings naming a vtkMRML* / vtkSlicer* class, in code and in the .ui's nodeTypes;
  * Qt signals in `connect("signal(args)", ...)` on the receiver's class (any recorded class
    when the receiver is unknown);
  * property keys of slicer.util.loadVolume / loadLabelVolume / loadSegmentation /
    loadNodeFromFile... against those the file type's reader reads;
  * `self.ui.X` / `ui.X` / getattr(ui, ...) against the .ui's object names, and `getattr(obj, "X")`
    like `obj.X`; every .ui widget class is one the snapshot records;
  * observer events, segment editor effect and parameter names, `slicer.dicomDatabase.x(...)`
    and "DICOM.*" attributes; keyboard shortcuts of both modules against Slicer's built-in ones.
Each kind of misspelling is shown to fail on a copy of the real module code (MISSPELLINGS).
"""
import ast

import pytest
from slicer_api_check import REPO, VTK_BASE, api, check_module, module_files, violations

MODULES = ["CMBDetector", "CMBScribbleAnnotator"]
VERSIONS = sorted(api()["versions"], key=lambda v: tuple(int(x) for x in v.lstrip("v").split(".")))


def test_snapshot_covers_the_oldest_and_a_newer_release():
    assert VERSIONS[0] == "v5.8.1" and len(VERSIONS) >= 2
    for version in VERSIONS:
        snap = api()["versions"][version]
        assert {"vtkMRMLSegmentationNode", "vtkMRMLMarkupsFiducialNode"} <= set(snap["class_names"])
        assert snap["modules"]["Segmentations"]["logic"] == "vtkSlicerSegmentationsModuleLogic"
        assert {"labelmap", "singleFile", "center", "discardOrientation", "autoWindowLevel", "show", "name",
                "colorNodeID", "fileNames"} <= set(snap["io_properties"]["VolumeFile"])
        assert "currentNodeChanged(vtkMRMLNode*)" in snap["classes"]["qMRMLNodeComboBox"]["signals"]
    assert "clicked(bool)" in api()["qt"]["classes"]["QAbstractButton"]["signals"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("module", MODULES)
def test_module_code_uses_only_existing_slicer_api(module, version):
    files, ui = module_files(REPO / module)
    found = check_module(files, ui, version)
    assert not found, "\n".join(found)


# name -> (file, text that occurs in it, misspelt text, the one violation reported).  Each kind of
# misspelling at least twice; the text must occur, so a changed module breaks this test loudly.
DET, ANN = "CMBDetector/CMBDetectorLib/", "CMBScribbleAnnotator/CMBScribbleAnnotatorLib/"
MISSPELLINGS = {
    # a real method, on an object of another class
    "wrong class: segmentation node": (DET + "logic.py", "seg.SetReferenceImageGeometryParameterFromVolumeNode(",
                                       "seg.SetAndObserveImageData(",
                                       "vtkMRMLSegmentationNode.SetAndObserveImageData()"),
    "wrong class: vtkSegmentation": (ANN + "nodes.py", "segmentation.SeparateSegmentLabelmap(segmentId)",
                                     "segmentation.RemoveAllControlPoints()",
                                     "vtkSegmentation.RemoveAllControlPoints()"),
    "wrong class: editor widget": (ANN + "form.py", "editor.setMaskingSectionVisible(False)",
                                   "editor.setCurrentNode(None)", "qMRMLSegmentEditorWidget.setCurrentNode()"),
    # slicer.modules.<name>, its methods, its logic's methods
    "module name": (DET + "logic.py", "slicer.modules.segmentations.logic()", "slicer.modules.segmentationss.logic()",
                    "slicer.modules.segmentationss"),
    "module name 2": (ANN + "nodes.py", "slicer.modules.markups.logic()", "slicer.modules.markup.logic()",
                      "slicer.modules.markup"),
    "module method": (DET + "logic.py", "slicer.modules.segmentations.logic()", "slicer.modules.segmentations.logicc()",
                      "qSlicerAbstractModule.logicc()"),
    "module logic method": (DET + "logic.py", ".logic().JumpSlicesToLocation(", ".logic().JumpSliceToLocation(",
                            "vtkSlicerMarkupsLogic.JumpSliceToLocation()"),
    "module logic method 2": (DET + "logic.py", ".logic().ImportLabelmapToSegmentationNode(",
                              ".logic().ImportLabelmapToSegmentation(",
                              "vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentation()"),
    "module name string": ("CMBDetector/CMBDetector.py", 'getModuleLogic("CMBScribbleAnnotator")',
                           'getModuleLogic("CMBScribleAnnotator")', "module 'CMBScribleAnnotator'"),
    "module dependency": ("CMBScribbleAnnotator/CMBScribbleAnnotator.py", '["Segmentations", "Markups"]',
                          '["Segmentations", "Markup"]', "module 'Markup'"),
    # class-name strings
    "class name": (DET + "logic.py", 'AddNewNodeByClass("vtkMRMLSegmentationNode"',
                   'AddNewNodeByClass("vtkMRMLSegmentationNod"', "class name 'vtkMRMLSegmentationNod'"),
    "class name 2": (ANN + "form.py", '"CMBScribbleAnnotator", "vtkMRMLSegmentEditorNode")',
                     '"CMBScribbleAnnotator", "vtkMRMLSegmentEditorNodes")', "class name 'vtkMRMLSegmentEditorNodes'"),
    "class name in .ui": ("CMBDetector/Resources/UI/CMBDetector.ui", "<string>vtkMRMLScalarVolumeNode</string>",
                          "<string>vtkMRMLScalarVolumNode</string>",
                          "volumeSelector nodeTypes: class name 'vtkMRMLScalarVolumNode'"),
    # Qt signals
    "signal": (ANN + "form.py", '"currentNodeChanged(vtkMRMLNode*)"', '"currentNodeChangd(vtkMRMLNode*)"',
               "signal qMRMLNodeComboBox.currentNodeChangd(vtkMRMLNode*)"),
    "signal arguments": (ANN + "form.py", 'brushSpin.connect("valueChanged(double)"',
                         'brushSpin.connect("valueChanged(int)"', "signal QDoubleSpinBox.valueChanged(int)"),
    "signal Qt 5 only": ("CMBDetector/CMBDetector.py", 'modelCombo.connect("currentIndexChanged(int)"',
                         'modelCombo.connect("currentIndexChanged(QString)"',
                         "signal QComboBox.currentIndexChanged(QString)"),
    "signal QTimer": (ANN + "form.py", 'timer.connect("timeout()"', 'timer.connect("timedOut()"',
                      "signal QTimer.timedOut()"),
    "signal QProcess": (DET + "process.py", '"finished(int,QProcess::ExitStatus)"',
                        '"finished(int,QProcess::ExitCode)"', "signal QProcess.finished(int,QProcess::ExitCode)"),
    # keyword arguments of slicer.util functions
    "keyword": ("CMBDetector/CMBDetector.py", '"Detection could not start.", waitCursor=True)',
                '"Detection could not start.", waitcursor=True)',
                "slicer.util.tryWithErrorDisplay() has no parameter 'waitcursor'"),
    "keyword 2": ("CMBScribbleAnnotator/CMBScribbleAnnotator.py",
                  "setSliceViewerLayers(background=volumeNode, fit=True)",
                  "setSliceViewerLayers(background=volumeNode, fitView=True)",
                  "slicer.util.setSliceViewerLayers() has no parameter 'fitView'"),
    # loader property keys
    "loader property": (DET + "logic.py", '{"show": False}', '{"shows": False}',
                        "loadLabelVolume property 'shows' (read by VolumeFile reader)"),
    "loader property 2": (DET + "logic.py", '{"show": False}', '{"show": False, "singlefile": True}',
                          "loadLabelVolume property 'singlefile' (read by VolumeFile reader)"),
    # aliases: names, self.x, function results holding a node of a known class
    "alias": (DET + "logic.py", "segment = seg.GetSegmentation().GetSegment(segId)",
              "segment = seg.GetSegment(segId)", "vtkMRMLSegmentationNode.GetSegment()"),
    "alias display node": (DET + "logic.py", "display.SetSelectedColor(", "display.SetSelectedColour(",
                           "vtkMRMLMarkupsDisplayNode.SetSelectedColour()"),
    "alias self.x": (DET + "logic.py", "self.tableNode.SetCellText(row, 1, status)",
                     "self.tableNode.SetCellTxt(row, 1, status)", "vtkMRMLTableNode.SetCellTxt()"),
    "alias self.x 2": (DET + "logic.py", "self.segmentationNode.GetSegmentation().GetSegment(segId)",
                       "self.segmentationNode.GetSegment(segId)", "vtkMRMLSegmentationNode.GetSegment()"),
    "alias function result": ("CMBScribbleAnnotator/CMBScribbleAnnotator.py", "self.saveTimer.start()",
                              "self.saveTimer.begin()", "QTimer.begin()"),
    "parameter name": ("CMBScribbleAnnotator/CMBScribbleAnnotator.py", "volumeNode.GetSpacing()",
                       "volumeNode.GetSpacings()", "vtkMRMLScalarVolumeNode.GetSpacings()"),
    # getattr(obj, "Name")
    "getattr": ("CMBScribbleAnnotator/CMBScribbleAnnotator.py", "self.ui.editor.setSourceVolumeNode(volumeNode)",
                'getattr(self.ui.editor, "setSourceVolumeNod")(volumeNode)',
                "qMRMLSegmentEditorWidget.setSourceVolumeNod"),
    "getattr slicer": (DET + "tasks.py", "fileForInstance = slicer.dicomDatabase.fileForInstance",
                       'fileForInstance = getattr(slicer.dicomDatabase, "fileForInstances")',
                       "slicer.dicomDatabase.fileForInstances"),
    "getattr ui": (ANN + "form.py", 'getattr(ui, f"combo_{field}")', 'getattr(ui, f"combos_{field}")',
                   "ui.combos_...: no widget of that name in the .ui file"),
    # .ui object names and the methods / properties of their classes
    "ui name": ("CMBDetector/CMBDetector.py", 'self.ui.statusLabel.text = "Cancelling..."',
                'self.ui.statusLabl.text = "Cancelling..."', "ui.statusLabl: no widget of that name in the .ui file"),
    "ui name 2": (ANN + "form.py", 'ui.raterEdit.connect(', 'ui.raterEdt.connect(',
                  "ui.raterEdt: no widget of that name in the .ui file"),
    "ui method": ("CMBDetector/CMBDetector.py", "self.ui.progressBar.setValue(0)", "self.ui.progressBar.setValues(0)",
                  "QProgressBar.setValues()"),
    "ui property": ("CMBDetector/CMBDetector.py", "self.ui.reviewCheck.checked = False",
                    "self.ui.reviewCheck.check = False", "QCheckBox.check"),
}


@pytest.mark.parametrize("name", sorted(MISSPELLINGS))
def test_a_misspelling_in_the_module_code_fails(name):
    path, text, misspelt, expected = MISSPELLINGS[name]
    module = path.split("/")[0]
    files, ui = module_files(REPO / module)
    source = ui if path.endswith(".ui") else files[path]
    assert text in source, f"{path} no longer contains {text!r}: update MISSPELLINGS"
    changed = source.replace(text, misspelt, 1)
    if path.endswith(".ui"):
        ui = changed
    else:
        files = {**files, path: changed}
    version = VERSIONS[-1]           # the newest release (both releases: test_a_wrong_name_fails)
    found = check_module(files, ui, version)
    assert len(found) == 1 and found[0].endswith(f": {expected} (Slicer {version})"), (expected, found)


def test_every_kind_of_misspelling_has_two_examples():
    kinds = [name.rstrip(" 0123456789").split(":")[0].split(" ")[0] for name in MISSPELLINGS]
    for kind in ("wrong", "module", "class", "signal", "keyword", "loader", "alias", "getattr", "ui"):
        assert kinds.count(kind) >= 2, kind


@pytest.mark.parametrize("version", VERSIONS)
def test_a_wrong_name_fails(version):
    good = ("import slicer\nfrom slicer.util import VTKObservationMixin\n"
            "seg = slicer.mrmlScene.AddNewNodeByClass('vtkMRMLSegmentationNode')\n"
            "seg.GetSegmentation().GetSegment('a').SetTag('k', 'v')\n"
            "slicer.util.arrayFromSegmentInternalBinaryLabelmap(seg, 'a')\n"
            "x = slicer.vtkSegmentation.SourceRepresentationModified\n"
            "v = slicer.util.loadVolume('a.nrrd', {'singleFile': True, 'show': False})\n"
            "s = slicer.util.loadSegmentation('a.seg.nrrd', {'autoOpacities': False})\n"
            "n = slicer.mrmlScene.GetFirstNodeByName('a')\n"
            "n.GetSegmentation()\n"
            "effect.setCommonParameter('BrushAbsoluteDiameter', '1')\n"
            "f = slicer.dicomDatabase.fileForInstance(v.GetAttribute('DICOM.instanceUIDs').split()[0])\n")
    assert violations(good, version) == []
    wrong = {"seg.GetSegmentaton()": "vtkMRMLSegmentationNode.GetSegmentaton()",
             "x.GetSegmentaton()": "method GetSegmentaton()",
             "slicer.util.arrayFromVolumee(v)": "slicer.util.arrayFromVolumee",
             "from slicer.util import tryWithErrorDisplays": "slicer.util.tryWithErrorDisplays",
             "e = slicer.vtkSegmentation.SourceRepresentationModifed":
                 "slicer.vtkSegmentation.SourceRepresentationModifed",
             "slicer.mrmlScene.AddNewNodeByClas('x')": "vtkMRMLScene.AddNewNodeByClas()",
             "n.GetSegmentaton()": "vtkMRMLNode.GetSegmentaton()",
             "s.SetSegmentationColour()": "vtkMRMLSegmentationNode.SetSegmentationColour()",
             "slicer.util.loadSegmentation('a', {'labelmap': True})":
                 "loadSegmentation property 'labelmap' (read by SegmentationFile reader)",
             "slicer.util.loadNodeFromFile('a', 'SegmentationFile', {'singleFile': True})":
                 "loadNodeFromFile property 'singleFile' (read by SegmentationFile reader)",
             "p = {'singelFile': 1}\nslicer.util.loadVolume('a', p)":
                 "loadVolume property 'singelFile' (read by VolumeFile reader)",
             "def f(editor):\n    editor.setSourceVolumeNodeSelectorVisble(False)":
                 "qMRMLSegmentEditorWidget.setSourceVolumeNodeSelectorVisble()",
             "effect.setCommonParameter('BrushDiameter', '1')": "effect parameter 'BrushDiameter'",
             "editor.setActiveEffectByName('Paintbrush')": "effect 'Paintbrush'",
             "slicer.qMRMLSegmentEditorWidgett()": "slicer.qMRMLSegmentEditorWidgett",
             "@parameterNodeWrapper\nclass P:\n    volume: slicer.vtkMRMLScalarVolumeNodee":
                 "slicer.vtkMRMLScalarVolumeNodee",
             "n.AddObserver(n.PointPositionDefinedEvnt, f)": "vtkMRMLNode.PointPositionDefinedEvnt",
             "q.AddObserver(q.PointPositionDefinedEvnt, f)": "event PointPositionDefinedEvnt",
             "slicer.dicomDatabase.fileForInstanceUID(u)": "slicer.dicomDatabase.fileForInstanceUID",
             "v.GetAttribute('DICOM.instanceUID')": "DICOM attribute 'DICOM.instanceUID'",
             "w.connect('currentNodeChangd(vtkMRMLNode*)', f)": "signal currentNodeChangd(vtkMRMLNode*)",
             "slicer.modules.segmentationss.logic()": "slicer.modules.segmentationss",
             "slicer.mrmlScene.GetNodesByClass('vtkMRMLSegmentationNod')": "class name 'vtkMRMLSegmentationNod'",
             "n.IsA('vtkMRMLMarkupsFiducialNod')": "class name 'vtkMRMLMarkupsFiducialNod'"}
    for code, message in wrong.items():
        found = violations(good + code + "\n", version)
        assert any(line.endswith(f": {message} (Slicer {version})") for line in found), (code, found)


def test_vtk_base_names_exist_in_vtk():
    core = pytest.importorskip("vtkmodules.vtkCommonCore")
    data = pytest.importorskip("vtkmodules.vtkCommonDataModel")
    classes = [data.vtkImageData, data.vtkPointData, core.vtkStringArray, core.vtkObject]
    missing = [name for name in VTK_BASE if not any(hasattr(c, name) for c in classes)]
    assert not missing


def module_shortcuts():
    """Every key sequence the two modules install."""
    import sys

    sys.path.insert(0, str(REPO / "CMBDetector"))
    from CMBLib.annotation import vocabulary as V

    keys = [f"Alt+{k}" for k in V.SHORTCUTS] + ["Alt+N", "Alt+P"]
    tree = ast.parse((REPO / "CMBDetector" / "CMBDetector.py").read_text(encoding="utf-8"))
    review = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "REVIEW_KEYS")
    keys += [pair.elts[0].value for pair in review.value.elts]
    return keys


@pytest.mark.parametrize("version", VERSIONS)
def test_shortcuts_collide_with_no_slicer_shortcut(version):
    builtin = {k.upper() for k in api()["versions"][version]["shortcuts"]}
    assert {"ALT+H", "ALT+F", "R"} <= builtin             # the snapshot knows the Help menu and the view keys
    keys = module_shortcuts()
    assert len(keys) == len(set(keys)), "a key is used twice"
    clashes = [k for k in keys if k.upper() in builtin]
    assert not clashes, f"shortcuts taken by Slicer {version}: {clashes}"


def test_docs_list_every_shortcut():
    text = (REPO / "docs" / "slicer.md").read_text(encoding="utf-8")
    for key in module_shortcuts():
        assert f"`{key}`" in text, f"{key} missing from docs/slicer.md"
