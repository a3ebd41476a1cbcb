"""Slicer's real MRML libraries (`slicer-core`, no Qt) set up as a module's `slicer` sees them.

`make_real_slicer()` builds a fresh MRML scene with the application logic and the logics of
the Colors, Volumes, Segmentations, Markups, SubjectHierarchy and Tables modules, and sets
`slicer.mrmlScene`, `slicer.modules.<name>.logic()` and a small `slicer.app`, as Slicer
does at start-up.  What needs Qt in Slicer (the core IO manager, `tempDirectory`, dialogs)
is replaced by the same operations done with storage nodes and module logics; nothing else
is faked.  The red / yellow / green slice nodes exist, so `JumpSlicesToLocation` moves them.

Needs Python >= 3.10 and `pip install slicer-core` (the `test` extra installs it there);
`available()` says whether it can be used and why not.
"""
import contextlib
import importlib.util
import sys
import tempfile
import types
from pathlib import Path

NEEDS = "slicer-core (Slicer's MRML libraries) needs Python >= 3.10; Slicer 5.8's Python 3.9 uses the fake"

# slicer.util functions replaced while the real backend is installed (they need Qt in Slicer)
_REPLACED = ("tempDirectory", "loadNodeFromFile", "saveNode", "exportNode", "tryWithErrorDisplay",
             "confirmOkCancelDisplay", "confirmYesNoDisplay", "errorDisplay", "infoDisplay", "warningDisplay",
             "delayDisplay", "mainWindow", "getModuleLogic", "pip_install")


def available():
    """(True, "") when slicer-core can be used here, else (False, the reason)."""
    if sys.version_info < (3, 10):
        return False, NEEDS
    if importlib.util.find_spec("slicer_core") is None:
        return False, "slicer-core is not installed (pip install -e '.[test]' installs it on Python >= 3.10)"
    return True, ""


class RealSlicer:
    """One scene with its logics; `install()` makes it `slicer.mrmlScene`, `uninstall()` undoes it."""

    LOGICS = (("volumes", "Volumes", "vtkSlicerVolumesLogic"),
              ("segmentations", "Segmentations", "vtkSlicerSegmentationsModuleLogic"),
              ("markups", "Markups", "vtkSlicerMarkupsLogic"),
              ("subjecthierarchy", "SubjectHierarchy", "vtkSlicerSubjectHierarchyModuleLogic"),
              ("tables", "Tables", "vtkSlicerTablesLogic"))

    def __init__(self, temp_root=None):
        import slicer
        import vtk

        self.slicer, self.vtk = slicer, vtk
        self.temp_root = Path(temp_root or tempfile.mkdtemp(prefix="cmb_real_slicer_"))
        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        colors = slicer.vtkSlicerColorLogic()
        colors.SetMRMLApplicationLogic(self.app_logic)
        colors.SetMRMLScene(self.scene)
        self.app_logic.SetModuleLogic("Colors", colors)
        self.logics = {"colors": colors}
        for key, name, class_name in self.LOGICS:
            logic = getattr(slicer, class_name)()
            logic.SetMRMLApplicationLogic(self.app_logic)
            logic.SetMRMLScene(self.scene)
            self.app_logic.SetModuleLogic(name, logic)
            self.logics[key] = logic
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(self.scene)
        for layout_name in ("Red", "Yellow", "Green"):
            self.scene.AddNode(self._slice_node(layout_name))
        self._saved = {}

    def _slice_node(self, layout_name):
        node = self.scene.CreateNodeByClass("vtkMRMLSliceNode")     # with the scene's orientation presets
        node.UnRegister(None)
        node.SetName(layout_name)
        node.SetLayoutName(layout_name)
        node.SetSingletonTag(layout_name)
        {"Red": node.SetOrientationToAxial, "Yellow": node.SetOrientationToSagittal,
         "Green": node.SetOrientationToCoronal}[layout_name]()
        return node

    # --- what Slicer's Qt application would provide ------------------------------------------
    def modules(self):
        names = {key: types.SimpleNamespace(logic=(lambda logic=logic: logic)) for key, logic in self.logics.items()}
        return types.SimpleNamespace(**names)

    def app(self):
        return types.SimpleNamespace(
            applicationLogic=lambda: self.app_logic, applicationDirPath=lambda: "", slicerHome="",
            temporaryPath=str(self.temp_root), setOverrideCursor=lambda *a: None,
            restoreOverrideCursor=lambda: None, processEvents=lambda *a: None)

    def util_replacements(self):
        slicer = self.slicer
        counter = iter(range(1, 1 << 30))

        def tempDirectory(key="__SlicerTemp__", tempDir=None, includeDateTime=True):
            folder = Path(tempDir or self.temp_root) / f"{key}-{next(counter)}"
            folder.mkdir(parents=True)
            return str(folder)

        def loadNodeFromFile(filename, filetype=None, properties=None, returnNode=False):
            properties = dict(properties or {})
            filename = str(filename)
            name = properties.get("name") or Path(filename).name.split(".")[0]
            if filetype == "SegmentationFile" or filename.endswith(".seg.nrrd"):
                node = self.logics["segmentations"].LoadSegmentationFromFile(filename, False, name)
            elif filetype == "MarkupsFile" or filename.endswith(".mrk.json"):
                node = self.scene.GetNodeByID(self.logics["markups"].LoadMarkups(filename, name))
            else:
                node = self.logics["volumes"].AddArchetypeVolume(filename, name,
                                                                 1 if properties.get("labelmap") else 0)
            if node is None:
                raise RuntimeError(f"Failed to load node from file: {filename}")
            return (True, node) if returnNode else node

        def writeNode(node, filename, properties=None):
            storage = node.CreateDefaultStorageNode()
            storage.SetFileName(str(filename))
            return bool(storage.WriteData(node))

        def getModuleLogic(module):
            return getattr(slicer.modules, str(module).lower()).logic()

        return {"tempDirectory": tempDirectory, "loadNodeFromFile": loadNodeFromFile, "saveNode": writeNode,
                "exportNode": lambda node, filename, properties=None, world=False: writeNode(node, filename),
                "tryWithErrorDisplay": lambda *a, **k: contextlib.nullcontext(),
                "confirmOkCancelDisplay": lambda *a, **k: True, "confirmYesNoDisplay": lambda *a, **k: True,
                "errorDisplay": lambda *a, **k: None, "infoDisplay": lambda *a, **k: None,
                "warningDisplay": lambda *a, **k: None, "delayDisplay": lambda *a, **k: None,
                "mainWindow": lambda: None, "getModuleLogic": getModuleLogic,
                "pip_install": _refuse_pip}

    # --- install / uninstall ------------------------------------------------------------------
    def install(self):
        """Make this scene Slicer's: `slicer.mrmlScene`, `slicer.modules`, `slicer.app`, the util stand-ins."""
        slicer = self.slicer
        for target, name in [(slicer, n) for n in ("mrmlScene", "modules", "app")] + \
                [(slicer.util, n) for n in _REPLACED] + [(slicer, n) for n in _REPLACED]:
            self._saved[(id(target), name)] = (target, name, getattr(target, name, _MISSING))
        slicer.mrmlScene, slicer.modules, slicer.app = self.scene, self.modules(), self.app()
        for name, function in self.util_replacements().items():
            setattr(slicer.util, name, function)
            setattr(slicer, name, function)     # slicer-core also exposes slicer.util's names on `slicer`
        return self

    def uninstall(self):
        """Undo `install` and empty the scene (observers of the caller must be removed first)."""
        for target, name, value in self._saved.values():
            if value is _MISSING:
                if hasattr(target, name):
                    delattr(target, name)
            else:
                setattr(target, name, value)
        self._saved.clear()
        self.scene.Clear(1)



_MISSING = object()


def _refuse_pip(*args, **kwargs):
    raise RuntimeError("tests never install packages")

