"""Static check of the CMB modules' Slicer calls against Testing/data/slicer_api.json.

Used by Testing/test_slicer_api_conformance.py (see its docstring for what is checked).
`check_module(files, ui_text, version)` checks one module (its .py files together, so a
node kept in `self.x` in one file is known where another file uses it) against one Slicer
release; `violations(source, version)` checks a snippet without a .ui file.

The class of an expression is inferred by a small flow-insensitive data flow over the AST:
from constructors (`slicer.vtkX()`, `qt.QTimer()`), scene calls naming a class
(`AddNewNodeByClass("vtkMRMLX")`), getters whose return class the snapshot records
(`GetSegmentation()` -> vtkSegmentation), `slicer.modules.x.logic()`, the .ui file (`self.ui.X`
and the node types of a node selector), parameter and attribute names (NAME_CLASSES), the
parameter node's annotations, `self.x` / `obj.x` assigned such values anywhere in the module,
and the module's own functions' return values.  A name assigned values of two classes gets
their common recorded base class, or no class.  Where the class is known, a method or
attribute must exist on it (or, for a class that may be a subclass, on one of its recorded
subclasses); where it is not, a CamelCase method must exist on some recorded class.
"""
import ast
import json
import re
import xml.etree.ElementTree as ET
from collections import namedtuple
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
API_FILE = REPO / "Testing" / "data" / "slicer_api.json"

# Methods of VTK base classes (vtkObject, vtkImageData, vtkAbstractArray, vtkDataSet...) that the
# modules call; VTK is not part of the snapshot (test_vtk_base_names_exist checks them against vtk).
VTK_BASE = {"GetMTime", "Modified", "AddObserver", "RemoveObserver", "UnRegister", "IsA", "GetClassName",
            "SetExtent", "GetExtent", "AllocateScalars", "GetPointData", "GetScalars", "GetDimensions",
            "InsertNextValue", "GetNumberOfValues", "SetName", "GetName", "DeepCopy", "SafeDownCast"}
# What PythonQt adds to every QObject (connect("signal(args)", callable), ...).
PYTHONQT = {"connect", "disconnect", "className", "delete", "help"}
# Parameter and attribute names that say the class of the node they hold (or a subclass of it).
NAME_CLASSES = {"segmentationNode": "vtkMRMLSegmentationNode", "volumeNode": "vtkMRMLScalarVolumeNode",
                "labelmapNode": "vtkMRMLLabelMapVolumeNode", "markupsNode": "vtkMRMLMarkupsNode",
                "tableNode": "vtkMRMLTableNode", "editorNode": "vtkMRMLSegmentEditorNode",
                "displayNode": "vtkMRMLDisplayNode", "segmentation": "vtkSegmentation", "segment": "vtkSegment",
                "editor": "qMRMLSegmentEditorWidget"}
# GetDisplayNode() of a displayable node (declared as returning vtkMRMLDisplayNode*).
DISPLAY_NODES = {"vtkMRMLSegmentationNode": "vtkMRMLSegmentationDisplayNode",
                 "vtkMRMLMarkupsNode": "vtkMRMLMarkupsDisplayNode",
                 "vtkMRMLLabelMapVolumeNode": "vtkMRMLLabelMapVolumeDisplayNode",
                 "vtkMRMLScalarVolumeNode": "vtkMRMLScalarVolumeDisplayNode"}
# slicer.util functions that return a node (Base/Python/slicer/util.py).
UTIL_RETURNS = {"loadVolume": "vtkMRMLScalarVolumeNode", "loadLabelVolume": "vtkMRMLLabelMapVolumeNode",
                "loadSegmentation": "vtkMRMLSegmentationNode", "loadMarkups": "vtkMRMLMarkupsNode",
                "addVolumeFromArray": "vtkMRMLScalarVolumeNode", "getNode": "vtkMRMLNode",
                "loadNodeFromFile": "vtkMRMLNode", "getFirstNodeByClassByName": "vtkMRMLNode"}
# Scene methods with a class-name argument: method -> (argument index, the node is of exactly that class).
CLASS_ARGUMENT = {"AddNewNodeByClass": (0, True), "AddNewNodeByClassWithID": (0, True), "CreateNodeByClass": (0, True),
                  "GetFirstNodeByClass": (0, False), "GetSingletonNode": (1, False), "GetNthNodeByClass": (1, False)}
# slicer.util loaders with a properties dict: function -> (reader file type, index of the properties argument).
LOADERS = {"loadVolume": ("VolumeFile", 1), "loadLabelVolume": ("VolumeFile", 1),
           "loadSegmentation": ("SegmentationFile", 1), "loadSequence": ("SequenceFile", 1),
           "loadScene": ("SceneFile", 1), "loadNodeFromFile": (None, 2), "loadNodesFromFile": (None, 2)}
# slicer.util functions taking a module name.
MODULE_NAME_CALLS = {"getModule", "getModuleLogic", "getModuleWidget", "getModuleGui", "selectModule"}
# Modules outside Slicer's own that the code may name: this extension's and the PyTorch extension's.
EXTRA_MODULES = {"CMBDetector", "CMBScribbleAnnotator", "PyTorchUtils"}
IGNORED_ROOTS = {"qt", "ctk", "vtk", "np", "numpy", "os", "json", "PyTorchUtils", "SampleData", "logging",
                 "sys", "math", "shutil", "subprocess", "tempfile", "Path", "psutil", "form"}
CLASS_STRING = re.compile(r"vtk(MRML|Slicer)[A-Za-z0-9_]+")

T = namedtuple("T", "cls exact node_types", defaults=(False, None))   # an inferred class
UNKNOWN = "unknown"          # a name assigned something of no known class (unlike a name never assigned)


@cache
def api():
    return json.loads(API_FILE.read_text(encoding="utf-8"))


def dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def const_strings(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def signature(text):
    return re.sub(r"\s+", "", text)


class Api:
    """The snapshot of one release, with Qt's classes, resolved through base classes."""

    def __init__(self, version):
        data = api()
        self.version, self.snap = version, data["versions"][version]
        self.classes = {**data["qt"]["classes"], **self.snap["classes"]}
        self.class_names = set(self.snap["class_names"]) | set(self.classes)
        self.modules = self.snap["modules"]
        self.module_names = set(self.modules) | EXTRA_MODULES
        # slicer.modules.<name lower-cased> (qSlicerLoadableModule.cxx, the module manager), and for a
        # scripted module <Name>Instance and its widget <Name>Widget (qSlicerScriptedLoadableModule(Widget).cxx)
        scripted = EXTRA_MODULES | {k for k, v in self.modules.items() if v["kind"] == "scripted"}
        self.module_attributes = {m.lower() for m in self.module_names} | {
            m + suffix for m in scripted for suffix in ("Instance", "Widget")}
        self._members, self._family = {}, {}
        slicer_classes = self.snap["classes"]
        self.union = set(VTK_BASE)
        for cls in slicer_classes:
            self.union |= self.members(cls)
        self.all_signals = {s for cls in self.classes for s in self.classes[cls].get("signals", [])}
        self.enums = {e for c in slicer_classes.values() for e in c["enumerators"]}
        effects = self.snap["effects"]
        self.effects = set(effects)
        self.effect_params = {p for info in effects.values() for p in info["parameters"]}

    def chain(self, cls):
        while cls in self.classes:
            yield cls
            cls = self.classes[cls]["base"]

    def members(self, cls):
        """Methods, properties and enumerators of `cls` and its recorded base classes."""
        if cls not in self._members:
            out = set()
            for c in self.chain(cls):
                out |= set(self.classes[c]["methods"]) | set(self.classes[c].get("enumerators", []))
                out |= {s.split("(")[0] for s in self.classes[c].get("signals", [])}   # timer.timeout.connect(f)
            out |= VTK_BASE if cls.startswith("vtk") else PYTHONQT
            self._members[cls] = out
        return self._members[cls]

    def family(self, cls):
        """`cls` and its recorded subclasses."""
        if cls not in self._family:
            self._family[cls] = [c for c in self.classes if cls in self.chain(c)]
        return self._family[cls]

    def allowed(self, t):
        """Names an object of inferred class `t` may have (None: class not recorded)."""
        if t.cls not in self.classes:
            return None
        if t.exact:
            return self.members(t.cls)
        return set().union(*(self.members(c) for c in self.family(t.cls)))

    def signals(self, t):
        classes = [t.cls] if t.exact else self.family(t.cls)
        out = {s for c in classes for cc in self.chain(c) for s in self.classes[cc].get("signals", [])}
        return out if out or any("signals" in self.classes[c] for c in classes) else None

    def returns(self, cls, method):
        for c in self.chain(cls):
            r = self.classes[c].get("returns", {}).get(method)
            if r:
                return r
        return None

    def common_base(self, a, b):
        if a is None or b is None or a == UNKNOWN or b == UNKNOWN:
            return UNKNOWN
        if a == b:
            return a
        if a.cls == b.cls:
            return T(a.cls, False, a.node_types)
        bases = list(self.chain(a.cls))
        return next((T(c, False) for c in self.chain(b.cls) if c in bases), UNKNOWN)

    def io_keys(self, file_type):
        props = self.snap["io_properties"]
        keys = props.get(file_type) if file_type else set().union(*map(set, props.values()))
        return set(keys or ())


def parse_ui(text):
    """{objectName: T(class, exact, node types)} of a Qt Designer file, and the root widget's class."""
    root = ET.fromstring(text)
    widgets = {}
    for w in root.iter("widget"):
        types = [s.text for p in w.findall("property[@name='nodeTypes']") for s in p.iter("string") if s.text]
        widgets[w.get("name")] = T(w.get("class"), True, tuple(types) or None)
    top = root.find("widget")
    return widgets, (top.get("class") if top is not None else None)


def is_ui(node):
    return (isinstance(node, ast.Name) and node.id == "ui") or (isinstance(node, ast.Attribute) and node.attr == "ui")


class Module:
    """What the check knows about one module's code: its .ui, its functions, its attributes."""

    def __init__(self, api_, trees, ui_text=None):
        self.api, self.trees = api_, trees
        self.ui, self.ui_root = parse_ui(ui_text) if ui_text else ({}, None)
        self.functions = {}          # name -> [(class name or None, FunctionDef)]
        self.annotations = {}        # parameter node attribute -> T
        for tree in trees.values():
            self._collect(tree, None)
        self.returns = {}            # (class or None, name) -> T or UNKNOWN
        self.self_attrs = {}         # (class, attr) -> T or UNKNOWN
        self.attrs = {}              # attr -> T or UNKNOWN (any object)
        self.envs = {}               # id(scope) -> its names' classes, once the tables are final
        for _ in range(4):           # types flow through attributes and returns: iterate to a fixed point
            returns, self_attrs, attrs, envs = {}, {}, dict(self.annotations), {}
            for tree in trees.values():
                for scope in scopes(tree):
                    envs[id(scope)] = scope.run(self, returns, self_attrs, attrs)
            if (returns, self_attrs, attrs) == (self.returns, self.self_attrs, self.attrs):
                self.envs = envs
                break
            self.returns, self.self_attrs, self.attrs = returns, self_attrs, attrs

    def _collect(self, tree, cls):
        for node in getattr(tree, "body", []):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions.setdefault(node.name, []).append((cls, node))
            elif isinstance(node, ast.ClassDef):
                if any("parameterNodeWrapper" in (dotted(d) or "") for d in node.decorator_list):
                    for item in node.body:
                        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                            ann = dotted(item.annotation) or ""
                            if ann.startswith("slicer.vtk"):
                                self.annotations[item.target.id] = T(ann.split(".")[1], False)
                self._collect(node, node.name)

    def function_return(self, cls, name, via_self):
        defs = self.functions.get(name, [])
        if via_self:
            mine = [d for d in defs if d[0] == cls]
            defs = mine or defs
        if len(defs) != 1:
            return None
        t = self.returns.get((defs[0][0], name))
        return None if t == UNKNOWN else t


class Scope:
    """One function, class body or module top level: its assignments give its names' classes."""

    def __init__(self, node, cls):
        self.node, self.cls = node, cls

    def statements(self):
        """Nodes of this scope in source order, nested functions and classes left out."""
        if getattr(self, "_statements", None) is None:
            self._statements = self._collect()
        return self._statements

    def flow(self):
        """The statements that bind names or return values."""
        if getattr(self, "_flow", None) is None:
            self._flow = [n for n in self.statements() if isinstance(n, (
                ast.Assign, ast.AnnAssign, ast.For, ast.comprehension, ast.With, ast.NamedExpr, ast.Return))]
        return self._flow

    def _collect(self):
        out = []
        body = self.node.body if isinstance(self.node, (ast.FunctionDef, ast.AsyncFunctionDef)) else [
            s for s in self.node.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        todo = list(body)
        while todo:
            n = todo.pop()
            out.append(n)
            for child in ast.iter_child_nodes(n):
                if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    todo.append(child)
        return sorted(out, key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))

    def env(self, module):
        env = {}
        if isinstance(self.node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = self.node.args
            for a in args.posonlyargs + args.args + args.kwonlyargs:
                env[a.arg] = T(NAME_CLASSES[a.arg], False) if a.arg in NAME_CLASSES else UNKNOWN
        for n in self.flow():
            if isinstance(n, (ast.Assign, ast.AnnAssign)) and n.value is not None:
                targets = n.targets if isinstance(n, ast.Assign) else [n.target]
                if isinstance(n.value, ast.Constant) and n.value.value is None:
                    continue
                t = None
                for target in targets:
                    if isinstance(target, ast.Name):
                        t = t or Infer(module, self.cls, env).infer(n.value) or UNKNOWN
                        env[target.id] = module.api.common_base(env[target.id], t) if target.id in env else t
                    elif isinstance(target, (ast.Tuple, ast.List)):
                        for e in target.elts:
                            if isinstance(e, ast.Name):
                                env[e.id] = UNKNOWN
            elif isinstance(n, (ast.For, ast.comprehension, ast.With, ast.NamedExpr)):
                for target in ([n.target] if not isinstance(n, ast.With) else
                               [i.optional_vars for i in n.items if i.optional_vars is not None]):
                    for e in ast.walk(target):
                        if isinstance(e, ast.Name):
                            env[e.id] = UNKNOWN
        return env

    def run(self, module, returns, self_attrs, attrs):
        """Record what this scope returns and assigns to attributes."""
        env = self.env(module)
        infer = Infer(module, self.cls, env)

        def merge(table, key, t):
            table[key] = module.api.common_base(table[key], t) if key in table else t

        for n in self.flow():
            if isinstance(n, ast.Return) and isinstance(self.node, ast.FunctionDef):
                if n.value is not None and not (isinstance(n.value, ast.Constant) and n.value.value is None):
                    merge(returns, (self.cls, self.node.name), infer.infer(n.value) or UNKNOWN)
            if isinstance(n, ast.Assign) and not (isinstance(n.value, ast.Constant) and n.value.value is None):
                for target in n.targets:
                    for e in (target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]):
                        if isinstance(e, ast.Attribute):
                            t = (infer.infer(n.value) if e is target else None) or UNKNOWN
                            if isinstance(e.value, ast.Name) and e.value.id == "self" and self.cls:
                                merge(self_attrs, (self.cls, e.attr), t)
                            merge(attrs, e.attr, t)
        return env

    def check(self, module, bad):
        env = module.envs.get(id(self)) or self.env(module)
        Checker(module, self.cls, env, bad).visit_all(self.statements())


@cache
def scopes(tree):
    """Scopes of a module: its top level, class bodies and every function (methods know their class)."""
    return list(_scopes(tree))


def _scopes(tree, cls=None):
    yield Scope(tree, cls)
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            yield from _scopes(node, node.name)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield Scope(node, cls)
            yield from _nested(node, cls)


def _nested(fn, cls):
    for node in ast.walk(fn):
        if node is not fn and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield Scope(node, cls)


class Infer:
    def __init__(self, module, cls, env):
        self.m, self.api, self.cls, self.env = module, module.api, cls, env

    def get(self, t):
        return None if t in (None, UNKNOWN) else t

    def infer(self, node):
        m, a = self.m, self.api
        if isinstance(node, ast.Name):
            return self.get(self.env.get(node.id))
        if isinstance(node, ast.Attribute):
            d = dotted(node)
            if d == "slicer.mrmlScene":
                return T("vtkMRMLScene", True)
            if d == "slicer.app":
                return T("qSlicerApplication", True)
            if d and re.fullmatch(r"slicer\.modules\.[a-z0-9_]+", d):
                return T("qSlicerAbstractModule", False)
            if is_ui(node.value) and node.attr in m.ui:
                return m.ui[node.attr]
            if isinstance(node.value, ast.Name) and node.value.id == "self" and (self.cls, node.attr) in m.self_attrs:
                return self.get(m.self_attrs[(self.cls, node.attr)])
            if node.attr in m.attrs:
                return self.get(m.attrs[node.attr])
            if node.attr in NAME_CLASSES:
                return T(NAME_CLASSES[node.attr], False)
            return None
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name):
                return m.function_return(None, f.id, False)
            if not isinstance(f, ast.Attribute):
                return None
            d = dotted(f) or ""
            parts = d.split(".")
            if len(parts) == 2 and parts[0] == "slicer" and parts[1].startswith(("vtk", "q")):
                return T(parts[1], True)
            if len(parts) == 2 and parts[0] == "qt" and parts[1] in a.classes:
                return T(parts[1], True)
            if d == "slicer.util.loadUI" and m.ui_root:
                return T(m.ui_root, True)
            if d.startswith("slicer.util.") and parts[-1] in UTIL_RETURNS:
                return T(UTIL_RETURNS[parts[-1]], False)
            if len(parts) == 4 and parts[:2] == ["slicer", "modules"] and parts[3] == "logic":
                module = next((k for k in a.modules if k.lower() == parts[2]), None)
                logic = a.modules[module]["logic"] if module else None
                return T(logic, False) if logic else None
            if f.attr in CLASS_ARGUMENT:
                index, exact = CLASS_ARGUMENT[f.attr]
                names = const_strings(node.args[index]) if len(node.args) > index else []
                if names:
                    return T(names[0], exact)
            if f.attr == "AddNode" and node.args:
                return self.infer(node.args[0])
            receiver = self.infer(f.value)
            if receiver is not None:
                if f.attr == "GetDisplayNode":
                    display = next((DISPLAY_NODES[c] for c in a.chain(receiver.cls) if c in DISPLAY_NODES), None)
                    if display:
                        return T(display, False)
                if f.attr == "currentNode" and receiver.node_types:
                    types = receiver.node_types
                    return T(types[0], False) if len(types) == 1 else T("vtkMRMLNode", False)
                r = a.returns(receiver.cls, f.attr)
                if r:
                    return T(r, False)
                return None
            via_self = isinstance(f.value, ast.Name) and f.value.id == "self"
            return m.function_return(self.cls, f.attr, via_self)
        return None


class Checker(Infer):
    """Reports the names one scope uses that the release does not have."""

    def __init__(self, module, cls, env, bad):
        super().__init__(module, cls, env)
        self.bad = bad

    def visit_all(self, nodes):
        self.called = {id(n.func) for n in nodes if isinstance(n, ast.Call)}
        self.dicts = {t.id: n.value for n in nodes if isinstance(n, ast.Assign) for t in n.targets
                      if isinstance(t, ast.Name) and isinstance(n.value, (ast.Dict, ast.Call))}
        lambdas = [n for n in nodes if isinstance(n, ast.Lambda)]
        shadow = {}
        for lam in lambdas:         # a lambda's parameters hide the scope's names of the same name
            names = {x.arg for x in lam.args.args + lam.args.kwonlyargs}
            for sub in ast.walk(lam.body):
                shadow.setdefault(id(sub), set()).update(names)
        for n in nodes:
            hidden = shadow.get(id(n))
            if hidden:
                saved, self.env = self.env, {k: v for k, v in self.env.items() if k not in hidden}
                self.visit(n)
                self.env = saved
            else:
                self.visit(n)

    def visit(self, n):
        if isinstance(n, ast.ImportFrom):
            self.import_from(n)
        elif isinstance(n, ast.Attribute):
            self.attribute(n, n.value, n.attr, called=id(n) in self.called)
        elif isinstance(n, ast.Call):
            self.call(n)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            self.string(n)
        elif isinstance(n, ast.Assign):
            for target in n.targets:
                if isinstance(target, ast.Attribute) and target.attr == "dependencies":
                    for name in const_strings(n.value):
                        if name not in self.api.module_names:
                            self.bad(n, f"module '{name}'")

    def import_from(self, n):
        snap = self.api.snap
        if n.module in ("slicer.util", "slicer.parameterNodeWrapper"):
            pool = snap["slicer_util"] if n.module == "slicer.util" else snap["parameter_node_wrapper"]
            for alias in n.names:
                if alias.name not in pool:
                    self.bad(n, f"{n.module}.{alias.name}")

    def string(self, n):
        if CLASS_STRING.fullmatch(n.value) and n.value not in self.api.class_names:
            self.bad(n, f"class name '{n.value}'")
        if n.value.startswith("DICOM.") and n.value not in self.api.snap["dicom_attributes"]:
            self.bad(n, f"DICOM attribute '{n.value}'")

    def attribute(self, n, value, attr, called):
        """`value.attr` (n: the node to report): dotted slicer names, .ui names, typed receivers."""
        a = self.api
        d = dotted(value)
        parts = (d + "." + attr).split(".") if d else []
        if parts[:1] == ["slicer"]:
            head = parts[1]
            if head == "util" and len(parts) == 3 and attr not in a.snap["slicer_util"]:
                return self.bad(n, f"slicer.util.{attr}")
            if head.startswith(("vtk", "qMRML", "qSlicer")) and len(parts) == 2 and head not in a.class_names:
                return self.bad(n, f"slicer.{head}")
            if head.startswith(("vtk", "qMRML", "qSlicer")) and len(parts) == 3 and head in a.classes:
                if attr not in a.members(head):
                    return self.bad(n, f"slicer.{head}.{attr}")
            if head == "modules" and len(parts) == 3 and attr not in a.module_attributes:
                return self.bad(n, f"slicer.modules.{attr}")
            if head == "dicomDatabase" and len(parts) == 3 and attr not in a.snap["dicom_database"]:
                return self.bad(n, f"slicer.dicomDatabase.{attr}")
        if is_ui(value) and self.m.ui and attr not in self.m.ui:
            return self.bad(n, f"ui.{attr}: no widget of that name in the .ui file")
        t = self.infer(value)
        allowed = a.allowed(t) if t else None
        if allowed is not None:
            if attr not in allowed:
                return self.bad(n, f"{t.cls}.{attr}" + ("()" if called else ""))
        elif attr.endswith("Event") and attr[:1].isupper() and parts[:1] not in (["qt"], ["vtk"]):
            if attr not in a.enums:
                return self.bad(n, f"event {attr}")
        elif called and attr[:1].isupper() and not attr.startswith(("Q", "Py")):
            root = d.split(".")[0] if d else None
            if root not in IGNORED_ROOTS and not (d or "").startswith(("slicer.vtk", "slicer.qMRML", "slicer.qSlicer")):
                if attr not in a.union and attr not in self.m.functions:
                    hint = (f" ({t.cls} is not recorded: add it to CLASSES in scripts/slicer_api_snapshot.py)"
                            if t and t.cls.startswith(("vtkMRML", "vtkSlicer", "vtkSegment")) else "")
                    return self.bad(n, f"method {attr}(){hint}")

    def call(self, n):
        a, f = self.api, n.func
        d = dotted(f) or ""
        name = d.rsplit(".", 1)[-1] if d.startswith("slicer.util.") else None
        if isinstance(f, ast.Name) and f.id == "getattr" and len(n.args) == 2:
            self.getattr_call(n)
        params = a.snap["slicer_util_parameters"].get(name)
        if params is not None:
            for k in n.keywords:
                if k.arg is not None and k.arg not in params and "**" not in params:
                    self.bad(n, f"slicer.util.{name}() has no parameter '{k.arg}'")
            positional = [p for p in params if p not in ("*", "**")]
            if "*" not in params and len(n.args) > len(positional) and not any(
                    isinstance(x, ast.Starred) for x in n.args):
                self.bad(n, f"slicer.util.{name}() takes at most {len(positional)} arguments")
        if name in LOADERS:
            self.loader(n, name)
        if name in MODULE_NAME_CALLS and n.args:
            for module in const_strings(n.args[0]):
                if module not in a.module_names:
                    self.bad(n, f"module '{module}'")
        if not isinstance(f, ast.Attribute):
            return
        attr = f.attr
        if attr == "connect" and n.args and const_strings(n.args[0]) and "(" in const_strings(n.args[0])[0]:
            sig = signature(const_strings(n.args[0])[0])
            t = self.infer(f.value)
            known = a.signals(t) if t else None
            if known is not None and sig not in known:
                self.bad(n, f"signal {t.cls}.{sig}")
            elif known is None and sig not in a.all_signals:
                self.bad(n, f"signal {sig}")
        if attr in ("setCommonParameter", "setParameter", "commonParameter", "parameter") and n.args:
            for value in const_strings(n.args[0]):
                if value not in a.effect_params:
                    self.bad(n, f"effect parameter '{value}'")
        if attr in ("effectByName", "setActiveEffectByName", "setEffectNameOrder") and n.args:
            for value in const_strings(n.args[0]):
                if value not in a.effects:
                    self.bad(n, f"effect '{value}'")
        event = n.args[0] if attr == "AddObserver" and n.args else (
            n.args[1] if attr in ("addObserver", "removeObserver") and len(n.args) > 1 else None)
        if isinstance(event, ast.Attribute) and (dotted(event) or "vtk").split(".")[0] not in ("vtk", "qt"):
            if event.attr not in a.enums:
                self.bad(n, f"event {event.attr}")

    def getattr_call(self, n):
        """getattr(obj, "Name") is obj.Name; getattr(ui, f"combo_{x}"): some widget's name starts so."""
        obj, key = n.args
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            self.attribute(n, obj, key.value, called=False)
        elif isinstance(key, ast.JoinedStr) and is_ui(obj) and self.m.ui:
            prefix = key.values[0].value if key.values and isinstance(key.values[0], ast.Constant) else ""
            if not any(w.startswith(prefix) for w in self.m.ui):
                self.bad(n, f"ui.{prefix}...: no widget of that name in the .ui file")

    def loader(self, n, name):
        file_type, index = LOADERS[name]
        if name.startswith("loadNode") and len(n.args) > 1 and const_strings(n.args[1]):
            file_type = const_strings(n.args[1])[0]
        props = n.args[index] if len(n.args) > index else next(
            (k.value for k in n.keywords if k.arg == "properties"), None)
        if isinstance(props, ast.Name):      # a dict assigned to a name in this scope
            props = self.dicts.get(props.id)
        keys = []
        if isinstance(props, ast.Dict):
            keys = [k.value for k in props.keys if isinstance(k, ast.Constant)]
        elif isinstance(props, ast.Call) and dotted(props.func) == "dict":
            keys = [k.arg for k in props.keywords if k.arg]
        known = self.api.io_keys(file_type) | {"fileName"}
        for key in keys:
            if key not in known:
                self.bad(n, f"{name} property '{key}' (read by {file_type or 'no'} reader)")


@cache
def get_api(version):
    return Api(version)


def check_module(files, ui_text, version):
    """Violations of one module: `files` {where: source} of its .py files, `ui_text` its .ui file."""
    a = get_api(version)
    trees = {where: parse(source) for where, source in files.items()}
    module = Module(a, trees, ui_text)
    out = []
    for where, tree in trees.items():
        def bad(node, text, where=where):
            out.append(f"{where}:{getattr(node, 'lineno', '?')}: {text} (Slicer {version})")

        for scope in scopes(tree):
            scope.check(module, bad)
    if ui_text:
        widgets, _ = parse_ui(ui_text)
        for name, t in widgets.items():
            if t.cls not in a.classes:
                out.append(f".ui: widget {name} is a {t.cls}, a class the snapshot does not record (Slicer {version})")
            for node_type in t.node_types or ():
                if node_type not in a.class_names:
                    out.append(f".ui: {name} nodeTypes: class name '{node_type}' (Slicer {version})")
    return out


@cache
def parse(source):
    return ast.parse(source)


def violations(source, version, where="<code>"):
    """Names in the snippet `source` that Slicer `version` does not have (no .ui file)."""
    return check_module({where: source}, None, version)


def module_files(folder):
    """{path relative to the repository: source} of a module folder's Python files, and its .ui text."""
    files = {str(p.relative_to(REPO)): p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*.py"))}
    ui = next(iter(sorted((folder / "Resources" / "UI").glob("*.ui"))), None)
    return files, ui.read_text(encoding="utf-8") if ui else None
