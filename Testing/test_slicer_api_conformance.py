"""The Slicer API the modules call exists in every supported Slicer (v5.8.1 and the newest
release), checked against Testing/data/slicer_api.json (written from Slicer's source by
scripts/slicer_api_snapshot.py; re-run it for a new release).

Checked in CMBDetector/ and CMBScribbleAnnotator/ (AST scan):
  * `slicer.util.f(...)`, `from slicer.util import X`, `from slicer.parameterNodeWrapper import X`;
  * `slicer.vtkX` / `slicer.qX` classes, their attributes (`slicer.vtkSegmentation.SegmentAdded`)
    and `slicer.mrmlScene.X`, `slicer.app.X`;
  * every CamelCase method call `obj.GetX(...)` (VTK/MRML style): it must be a method of one
    of the recorded classes, or of VTK's base classes (VTK_BASE below, outside Slicer);
  * observer events: attributes named `...Event` and the event of every (add)Observer call;
  * camelCase calls on the Slicer widgets the modules hold (segment editor, node combo box,
    markups place widget, editor effect);
  * segment editor effect names and effect parameter names;
  * `slicer.dicomDatabase.x(...)` against the methods Slicer's own Python calls on it, and
    "DICOM.*" attribute names against those Slicer's DICOM plugins set;
  * keyboard shortcuts of both modules against Slicer's built-in ones.
"""
import ast
import json
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
API_FILE = REPO / "Testing" / "data" / "slicer_api.json"
MODULE_DIRS = [REPO / "CMBDetector", REPO / "CMBScribbleAnnotator"]

# Methods of VTK base classes (vtkObject, vtkImageData, vtkAbstractArray, vtkDataSet...)
# that the modules call; VTK is not part of the snapshot.
VTK_BASE = {"GetMTime", "Modified", "AddObserver", "RemoveObserver", "UnRegister", "IsA", "GetClassName",
            "SetExtent", "GetExtent", "AllocateScalars", "GetPointData", "GetScalars", "GetDimensions",
            "InsertNextValue", "SetName", "GetName", "DeepCopy"}
# Qt methods (QWidget, QObject, QApplication) called on Slicer widgets / slicer.app.
QT_BASE = {"setEnabled", "enabled", "setToolTip", "blockSignals", "connect", "disconnect", "setVisible", "show",
           "hide", "setParent", "property", "setProperty", "applicationDirPath", "setOverrideCursor",
           "restoreOverrideCursor", "processEvents", "findChildren", "layout", "isWidgetType"}
# Attribute names (last part of `x.y.name`) -> Slicer class of the widget the modules keep there.
WIDGETS = {"editor": "qMRMLSegmentEditorWidget", "volumeSelector": "qMRMLNodeComboBox",
           "placeWidget": "qSlicerMarkupsPlaceWidget", "effect": "qSlicerSegmentEditorAbstractEffect"}
IGNORED_ROOTS = {"qt", "ctk", "vtk", "np", "numpy", "os", "json", "PyTorchUtils", "SampleData", "logging",
                 "self", "sys", "math", "shutil", "subprocess", "tempfile", "Path", "psutil", "form"}


@cache
def api():
    return json.loads(API_FILE.read_text(encoding="utf-8"))


def resolved(version, cls):
    """Methods and enumerators of `cls` including its Slicer superclasses."""
    classes = api()["versions"][version]["classes"]
    methods, enums = set(), set()
    while cls in classes:
        methods |= set(classes[cls]["methods"])
        enums |= set(classes[cls]["enumerators"])
        cls = classes[cls]["base"]
    return methods, enums


@cache
def known(version):
    snap = api()["versions"][version]
    methods, enums = set(), set()
    for cls in snap["classes"]:
        m, e = resolved(version, cls)
        methods |= m
        enums |= e
    effects = {name for name, info in snap["effects"].items()}
    params = {p for info in snap["effects"].values() for p in info["parameters"]}
    return {"methods": methods | VTK_BASE, "enums": enums, "util": set(snap["slicer_util"]),
            "dicom": set(snap["dicom_database"]), "dicom_attributes": set(snap["dicom_attributes"]),
            "pnw": set(snap["parameter_node_wrapper"]), "effects": effects, "params": params}


def dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _const_strings(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def violations(source, version, where="<code>"):
    """Names in `source` that Slicer `version` does not have (one line each)."""
    k = known(version)
    classes = api()["versions"][version]["classes"]
    out = []

    def bad(node, text):
        out.append(f"{where}:{getattr(node, 'lineno', '?')}: {text} (Slicer {version})")

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in ("slicer.util", "slicer.parameterNodeWrapper"):
            pool = k["util"] if node.module == "slicer.util" else k["pnw"]
            for alias in node.names:
                if alias.name not in pool:
                    bad(node, f"{node.module}.{alias.name}")
        if isinstance(node, ast.Attribute):
            name = dotted(node)
            if name is None:
                continue
            parts = name.split(".")
            if parts[0] == "slicer" and len(parts) >= 2:
                head = parts[1]
                if head == "util" and len(parts) >= 3 and parts[2] not in k["util"]:
                    bad(node, f"slicer.util.{parts[2]}")
                elif head.startswith(("vtk", "qMRML", "qSlicer")):
                    if head not in classes:
                        bad(node, f"slicer.{head}")
                    elif len(parts) >= 3:
                        m, e = resolved(version, head)
                        if parts[2] not in m | e:
                            bad(node, f"slicer.{head}.{parts[2]}")
                elif head == "mrmlScene" and len(parts) >= 3:
                    m, e = resolved(version, "vtkMRMLScene")
                    if parts[2] not in m | e | VTK_BASE:
                        bad(node, f"slicer.mrmlScene.{parts[2]}")
                elif head == "dicomDatabase" and len(parts) >= 3 and parts[2] not in k["dicom"]:
                    bad(node, f"slicer.dicomDatabase.{parts[2]}")
                elif head == "app" and len(parts) >= 3:
                    m, _ = resolved(version, "qSlicerApplication")
                    if parts[2] not in m | QT_BASE:
                        bad(node, f"slicer.app.{parts[2]}")
            if node.attr.endswith("Event") and node.attr[:1].isupper() and parts[0] not in ("qt", "vtk"):
                if node.attr not in k["enums"]:
                    bad(node, f"event {node.attr}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("DICOM."):
            if node.value not in k["dicom_attributes"]:
                bad(node, f"DICOM attribute '{node.value}'")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr, receiver = node.func.attr, dotted(node.func.value)
            root = receiver.split(".")[0] if receiver else None
            if attr[:1].isupper() and root not in IGNORED_ROOTS - {"self"} and not (
                    receiver and receiver.startswith(("slicer.vtk", "slicer.qMRML", "slicer.qSlicer"))):
                if attr not in k["methods"] and not attr.startswith(("Q", "Py")):
                    bad(node, f"method {attr}()")
            last = receiver.split(".")[-1] if receiver else None
            if last in WIDGETS and attr[:1].islower():
                m, _ = resolved(version, WIDGETS[last])
                if attr not in m | QT_BASE:
                    bad(node, f"{WIDGETS[last]}.{attr}()")
            if attr in ("setCommonParameter", "setParameter", "commonParameter", "parameter") and node.args:
                for value in _const_strings(node.args[0]):
                    if value not in k["params"]:
                        bad(node, f"effect parameter '{value}'")
            event = node.args[0] if attr == "AddObserver" and node.args else (
                node.args[1] if attr in ("addObserver", "removeObserver") and len(node.args) > 1 else None)
            if isinstance(event, ast.Attribute) and (dotted(event) or "vtk").split(".")[0] not in ("vtk", "qt"):
                if event.attr not in k["enums"]:
                    bad(node, f"event {event.attr}")
            if attr in ("effectByName", "setActiveEffectByName", "setEffectNameOrder") and node.args:
                for value in _const_strings(node.args[0]):
                    if value not in k["effects"]:
                        bad(node, f"effect '{value}'")
    return out


VERSIONS = sorted(api()["versions"])


def test_snapshot_covers_the_oldest_and_a_newer_release():
    assert "v5.8.1" in VERSIONS and len(VERSIONS) >= 2


@pytest.mark.parametrize("version", VERSIONS)
def test_module_code_uses_only_existing_slicer_api(version):
    found = []
    for folder in MODULE_DIRS:
        for path in sorted(folder.rglob("*.py")):
            found += violations(path.read_text(encoding="utf-8"), version, str(path.relative_to(REPO)))
    assert not found, "\n".join(found)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_wrong_name_fails(version):
    good = ("import slicer\nfrom slicer.util import VTKObservationMixin\n"
            "seg = slicer.mrmlScene.AddNewNodeByClass('vtkMRMLSegmentationNode')\n"
            "seg.GetSegmentation().GetSegment('a').SetTag('k', 'v')\n"
            "slicer.util.arrayFromSegmentInternalBinaryLabelmap(seg, 'a')\n"
            "x = slicer.vtkSegmentation.SourceRepresentationModified\n"
            "self.ui.editor.setMRMLSegmentEditorNode(None)\n"
            "effect.setCommonParameter('BrushAbsoluteDiameter', '1')\n"
            "f = slicer.dicomDatabase.fileForInstance(v.GetAttribute('DICOM.instanceUIDs').split()[0])\n")
    assert violations(good, version) == []
    wrong = {"seg.GetSegmentaton()": "method GetSegmentaton()",
             "slicer.util.arrayFromVolumee(v)": "slicer.util.arrayFromVolumee",
             "from slicer.util import tryWithErrorDisplays": "slicer.util.tryWithErrorDisplays",
             "e = slicer.vtkSegmentation.SourceRepresentationModifed": "vtkSegmentation.SourceRepresentationModifed",
             "slicer.mrmlScene.AddNewNodeByClas('x')": "slicer.mrmlScene.AddNewNodeByClas",
             "self.ui.editor.setSourceVolumeNodeSelectorVisble(False)": "setSourceVolumeNodeSelectorVisble()",
             "effect.setCommonParameter('BrushDiameter', '1')": "effect parameter 'BrushDiameter'",
             "editor.setActiveEffectByName('Paintbrush')": "effect 'Paintbrush'",
             "slicer.qMRMLSegmentEditorWidgett()": "slicer.qMRMLSegmentEditorWidgett",
             "n.AddObserver(n.PointPositionDefinedEvnt, f)": "event PointPositionDefinedEvnt",
             "slicer.dicomDatabase.fileForInstanceUID(u)": "slicer.dicomDatabase.fileForInstanceUID",
             "v.GetAttribute('DICOM.instanceUID')": "DICOM attribute 'DICOM.instanceUID'"}
    for code, message in wrong.items():
        found = violations(code, version)
        assert any(message in line for line in found), (code, found)


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
