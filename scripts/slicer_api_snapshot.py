"""Write Testing/data/slicer_api.json: the Slicer API the CMB modules may call, per Slicer release.

Slicer cannot be installed where the tests run, so Testing/test_slicer_api_conformance.py
checks the module code against this snapshot of Slicer's own source.  For each tag
(default: v5.8.1, the oldest supported, and v5.12.3, the newest release) it records

  * classes: methods, VTK/Qt property accessors, enumerators (events, modes), Qt signals
    (normalised signatures as `connect()` takes them) and the return class of methods that
    return an object (`GetSegmentation` -> vtkSegmentation) of the MRML nodes, segmentation
    classes, logics and qMRML/qSlicer widgets the modules use, with their Slicer superclasses,
    and of the CTK widgets the .ui files use (read from CTK at the commit that Slicer's
    SuperBuild/External_CTK.cmake pins for that tag); each name is stored once, on the class
    that declares it, and "base" names the superclass (VTK and Qt bases outside);
  * class_names: every vtkMRML* / vtkSlicer* class (one header each) of the release;
  * modules: the modules that ship with it (loadable, scripted, CLI) and, for loadable ones,
    the class of `slicer.modules.<name>.logic()` (read from the module's createLogic());
  * io_properties: for each reader file type ("VolumeFile", "SegmentationFile"...), the keys
    of the properties dict its reader reads (what slicer.util.loadVolume(path, {...}) may pass);
  * slicer_util: the functions and classes of slicer.util, slicer_util_parameters: each
    function's parameter names; parameter_node_wrapper: the names of slicer.parameterNodeWrapper;
  * effects: segment editor effect names and their (common) parameter names;
  * shortcuts: built-in keys the modules must not take (main-window menu mnemonics and
    shortcuts, slice/3D view keys, segment editor keys);
  * dicom_database: the methods Slicer's own Python calls on `slicer.dicomDatabase` (a
    ctkDICOMDatabase from CTK, outside this snapshot: what Slicer itself relies on is what
    the modules may rely on); dicom_attributes: the "DICOM.*" node attributes Slicer's
    DICOM plugins set (e.g. "DICOM.instanceUIDs" on a scalar volume).

Besides, once for all releases, "qt": the methods, properties, enum values and signals of the Qt classes
the modules use (QPushButton, QComboBox, QTimer, QProcess...), the names that both Qt 5.15
(Slicer 5.8 - 5.12) and Qt 6 (Slicer 5.12 can be built with Qt 6.8) have, read from PyQt5
and PyQt6 (`pip install PyQt5 PyQt6` in any Python; without them the "qt" part of the
existing file is kept).

Usage (bare clones or source checkouts of Slicer and CTK, e.g. from `git clone --bare
https://github.com/Slicer/Slicer` and `git clone --bare https://github.com/commontk/CTK`):

    python scripts/slicer_api_snapshot.py --git-dir SLICER.git --ctk-git-dir CTK.git \\
        [--tags v5.8.1 v5.12.3] [--out Testing/data/slicer_api.json]
"""
import argparse
import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CLASSES = [
    "vtkMRMLScene", "vtkMRMLNode", "vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode",
    "vtkMRMLSegmentationNode", "vtkMRMLMarkupsFiducialNode", "vtkMRMLTableNode", "vtkMRMLSegmentEditorNode",
    "vtkMRMLScriptedModuleNode", "vtkMRMLColorTableNode", "vtkMRMLDisplayNode", "vtkSegmentation", "vtkSegment",
    "vtkMRMLSegmentationDisplayNode", "vtkMRMLMarkupsDisplayNode", "vtkMRMLScalarVolumeDisplayNode",
    "vtkMRMLLabelMapVolumeDisplayNode",
    "vtkOrientedImageData", "vtkSlicerSegmentationsModuleLogic", "vtkSlicerMarkupsLogic",
    "qMRMLSegmentEditorWidget", "qMRMLNodeComboBox", "qSlicerMarkupsPlaceWidget",
    "qSlicerSegmentEditorAbstractEffect", "qSlicerApplication", "qSlicerCoreApplication", "qMRMLWidget",
    "qSlicerAbstractModule", "qSlicerAbstractCoreModule",
]
# CTK widgets the .ui files use (CTK at the commit Slicer pins).
CTK_CLASSES = ["ctkCollapsibleButton", "ctkPathLineEdit", "ctkSliderWidget", "ctkDirectoryButton"]
# Qt classes the modules use: the .ui widgets, what the code constructs (qt.QTimer()...), their bases.
QT_CLASSES = {
    "QtCore": ["QObject", "QTimer", "QProcess", "QIODevice", "QSettings", "QItemSelectionModel", "QModelIndex",
               "QCoreApplication"],
    "QtGui": ["QShortcut", "QGuiApplication"],
    "QtWidgets": ["QWidget", "QFrame", "QLabel", "QAbstractButton", "QPushButton", "QCheckBox", "QComboBox",
                  "QAbstractSpinBox", "QSpinBox", "QDoubleSpinBox", "QLineEdit", "QProgressBar",
                  "QAbstractScrollArea", "QAbstractItemView", "QTableView", "QTableWidget", "QTableWidgetItem",
                  "QHeaderView", "QPlainTextEdit", "QApplication", "QShortcut"],
}
EFFECT_SOURCES = {  # effect name -> implementation file (parameters set with set(Common)ParameterDefault)
    "Paint": "qSlicerSegmentEditorPaintEffect.cxx",
    "Erase": "qSlicerSegmentEditorEraseEffect.cxx",
}
VIEW_KEY_FILES = ["vtkMRMLSliceIntersectionWidget.cxx", "vtkMRMLCameraWidget.cxx"]
NOT_METHODS = {"if", "for", "while", "switch", "return", "sizeof", "defined", "static_cast", "const_cast",
               "reinterpret_cast", "dynamic_cast", "Q_OBJECT", "Q_PROPERTY", "Q_ENUMS", "Q_ENUM", "Q_DECLARE_PRIVATE",
               "Q_DISABLE_COPY", "Q_SIGNALS", "Q_SLOTS", "QVTK_OBJECT", "vtkTypeMacro", "VTK_NEWINSTANCE"}
NOT_RETURNS = {"New", "NewInstance", "SafeDownCast", "CreateNodeInstance", "NewInstanceInternal"}


class Tree:
    def __init__(self, git_dir, tag):
        self.git_dir, self.tag = git_dir, tag
        out = subprocess.run(["git", "--git-dir", git_dir, "ls-tree", "-r", "--name-only", tag],
                             check=True, capture_output=True, text=True).stdout
        self.paths = [p for p in out.split("\n") if p]
        self.by_name = {}
        for p in self.paths:
            if "/Testing/" not in p:
                self.by_name.setdefault(p.rsplit("/", 1)[-1], p)

    def read(self, path):
        return subprocess.run(["git", "--git-dir", self.git_dir, "show", f"{self.tag}:{path}"],
                              check=True, capture_output=True, text=True).stdout

    def file(self, name):
        path = self.by_name.get(name)
        return self.read(path) if path else None


_TOKENS = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|/\*.*?\*/|//[^\n]*', re.S)


def _strip_comments(text):
    """C++ source without comments (string and character literals kept intact)."""
    return _TOKENS.sub(lambda m: " " if m.group(0).startswith("/") else m.group(0), text)


def _split_args(text):
    """Top-level comma-separated parts of an argument list."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "<([":
            depth += 1
        elif ch in ">)]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts]


def _arg_type(arg):
    """'const QString& text' -> 'QString', 'vtkMRMLNode* node' -> 'vtkMRMLNode*' (as QMetaObject
    normalises a signature)."""
    arg = re.sub(r"\bconst\b", " ", arg.split("=")[0]).strip()
    m = re.match(r"^(.*?[\s*&>])\s*([A-Za-z_]\w*)$", arg)
    if m and m.group(1).strip() and m.group(1).strip() not in ("unsigned", "signed", "long", "short"):
        arg = m.group(1)
    arg = re.sub(r"\s*&\s*", "", arg)
    arg = re.sub(r"\s*\*\s*", "*", arg)
    return re.sub(r"\s+", " ", arg).strip()


def signal_signatures(code):
    """Normalised signatures of the signals declared in a class header (one per number of
    arguments when some have default values, as moc makes them)."""
    out = set()
    pattern = r"\b(?:signals|Q_SIGNALS)\s*:(.*?)(?=\b(?:public|protected|private|signals|Q_SIGNALS)\b[^:]*:|\};)"
    for section in re.findall(pattern, code, flags=re.S):
        for name, args in re.findall(r"\bvoid\s+(\w+)\s*\(([^)]*)\)\s*;", section):
            parts = [a for a in _split_args(args) if a and a != "void"]
            required = sum("=" not in a for a in parts)
            for n in range(required, len(parts) + 1):
                out.add(f"{name}({','.join(_arg_type(a) for a in parts[:n])})")
    return out


def header_names(text, cls):
    """(methods, enumerators, superclass, signals, return classes) declared in a class header."""
    code = _strip_comments(text)
    methods = {m for m in re.findall(r"\b([A-Za-z_]\w*)\s*\(", code) if m not in NOT_METHODS}
    returns = {}
    for macro, name, *rest in re.findall(r"\b(vtk(?:Get|Set)\w*Macro|vtkBooleanMacro)\s*\(\s*(\w+)\s*(?:,\s*(\w+))?",
                                         code):
        if macro == "vtkBooleanMacro":
            methods |= {name + "On", name + "Off"}
        else:
            methods.add(("Get" if macro.startswith("vtkGet") else "Set") + name)
            if macro == "vtkGetObjectMacro" and rest and rest[0]:
                returns.setdefault("Get" + name, set()).add(rest[0])
    for kind, name in re.findall(r"\b((?:vtk|q|ctk|Q)[A-Z]\w*)\s*\*\s*([A-Za-z_]\w*)\s*\(", code):
        if name not in NOT_RETURNS and name != kind:
            returns.setdefault(name, set()).add(kind)
    for prop in re.findall(r"Q_PROPERTY\s*\(([^)]*)\)", code):
        words = prop.split()
        if len(words) >= 2:
            methods.add(words[1].lstrip("*&"))
        for key in ("READ", "WRITE", "NOTIFY"):
            if key in words and words.index(key) + 1 < len(words):
                methods.add(words[words.index(key) + 1])
    enumerators = set()
    for body in re.findall(r"\benum\b[^{;]*\{([^}]*)\}", code):
        enumerators |= set(re.findall(r"^\s*([A-Za-z_]\w*)\s*(?:=|,|$)", body, flags=re.M))
    base = re.search(rf"class\s+(?:\w+\s+)?{cls}\s*:\s*public\s+([\w:]+)", code)
    returns = {m: next(iter(k)) for m, k in returns.items() if len(k) == 1 and m in methods}
    return (methods - {cls, "~" + cls}, enumerators, base.group(1) if base else None, signal_signatures(code),
            returns)


def class_apis(trees, classes):
    """{class: own methods, enumerators, signals, returns, base} for `classes` and their
    superclasses found in `trees` (Slicer, then CTK); inherited names are resolved by the
    reader, so each name is stored once."""
    def find(name):
        return next((t.file(name) for t in trees if t.file(name) is not None), None)

    out, todo = {}, list(classes)
    while todo:
        cls = todo.pop()
        if cls in out:
            continue
        text = find(cls + ".h")
        if text is None:
            if cls in classes:
                raise SystemExit(f"{trees[0].tag}: {cls}.h not found")
            continue
        methods, enumerators, base, signals, returns = header_names(text, cls)
        out[cls] = {"methods": sorted(methods), "enumerators": sorted(enumerators), "base": base}
        if signals:
            out[cls]["signals"] = sorted(signals)
        if returns:
            out[cls]["returns"] = dict(sorted(returns.items()))
        if base and find(base + ".h") is not None:
            todo.append(base)
    return out


def python_defs(text):
    """Top-level functions and classes of a Python module."""
    return sorted(set(re.findall(r"^(?:def|class) ([A-Za-z_]\w*)\s*[(:]", text, flags=re.M)))


def python_parameters(text):
    """{function: [parameter names] + ["**"] when it takes **kwargs, ["*"] when *args} of a module."""
    import ast

    out = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef):
            a = node.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
            out[node.name] = names + (["*"] if a.vararg else []) + (["**"] if a.kwarg else [])
    return dict(sorted(out.items()))


def effect_parameters(tree):
    out = {}
    abstract = _strip_comments(tree.file("qSlicerSegmentEditorAbstractLabelEffect.cxx") or "")
    common = set(re.findall(r'setCommonParameterDefault\(\s*"(\w+)"', abstract))
    for name, source in EFFECT_SOURCES.items():
        text = _strip_comments(tree.file(source) or "")
        params = set(re.findall(r'set(?:Common)?ParameterDefault\(\s*"(\w+)"', text)) | common
        declared = re.findall(r'm_Name\s*=\s*(?:QString\()?\s*(?:QT_TR_NOOP\()?\s*"(\w+)"', text)
        out[name] = {"declared_name": declared[0] if declared else None, "parameters": sorted(params)}
    return out


def shortcuts(tree):
    import xml.etree.ElementTree as ET

    keys = set()
    ui = tree.file("qSlicerMainWindow.ui") or ""
    root = ET.fromstring(ui)
    for bar in root.iter("widget"):
        if bar.get("class") != "QMenuBar":
            continue
        for menu in bar.findall("widget"):          # top-level menus only: their mnemonics are global
            title = menu.find("property[@name='title']/string")
            m = re.search(r"&(\w)", title.text or "") if title is not None else None
            if m:
                keys.add(f"Alt+{m.group(1).upper()}")
    keys |= {s.text for s in root.iter("string") if s.text and re.fullmatch(r"(Ctrl|Alt|Shift)\+\S+", s.text)}
    main = _strip_comments(tree.file("qSlicerMainWindow.cxx") or "")
    keys |= set(re.findall(r'QKeySequence\("([^"]+)"\)', main))
    for name in VIEW_KEY_FILES:
        text = _strip_comments(tree.file(name) or "")
        pattern = r'SetKeyboardEventTranslation\([^,]+,\s*vtkEvent::(\w+)\s*,[^,]+,[^,]+,\s*"([^"]+)"'
        for modifier, key in re.findall(pattern, text):
            if len(key) == 1:
                prefix = {"NoModifier": "", "AnyModifier": "", "ControlModifier": "Ctrl+", "ShiftModifier": "Shift+",
                          "AltModifier": "Alt+"}.get(modifier, "")
                keys.add(prefix + (key.upper() if key.isalpha() else key))
    editor = _strip_comments(tree.file("qMRMLSegmentEditorWidget.cxx") or "")
    keys |= {"Shift+" + str(d) for d in range(10)} if "Shift+" in editor else set()
    keys |= {k[len("Qt::Key_"):] for k in re.findall(r"Qt::Key_[A-Z]\b", editor)}
    return sorted(keys)


def _grep(tree, pattern):
    """Distinct matches of an extended regex in the tag's Python files (git grep -o)."""
    out = subprocess.run(["git", "--git-dir", tree.git_dir, "grep", "-h", "-o", "-E", pattern, tree.tag, "--", "*.py"],
                         capture_output=True, text=True).stdout
    return sorted({line.split(":", 1)[-1] for line in out.split("\n") if line.strip()})


def dicom_api(tree):
    methods = {m.rsplit(".", 1)[1] for m in _grep(tree, r"slicer\.dicomDatabase\.[A-Za-z_]+\(")
               for m in [m.rstrip("(")]}
    attributes = {re.sub(r"^SetAttribute\(\s*", "", a).strip("\"'") for a in
                  _grep(tree, r"SetAttribute\(\s*[\"']DICOM\.[A-Za-z_.]+[\"']")}
    return sorted(methods), sorted(attributes)


def class_names(tree):
    """Every vtkMRML* / vtkSlicer* class of the release (one header each, tests left out)."""
    return sorted({p.rsplit("/", 1)[-1][:-2] for p in tree.paths
                   if re.search(r"/vtk(MRML|Slicer)\w+\.h$", p) and "/Testing/" not in p})


def modules(tree):
    """{module name: {"kind", "logic"}} of the modules that ship with the release; "logic" is the
    class `createLogic()` returns (loadable modules), vtkSlicerCLIModuleLogic (CLI) or the Python
    class name (scripted)."""
    out = {}
    for path in tree.paths:
        m = re.fullmatch(r"Modules/Loadable/(\w+)/qSlicer(\w+)Module\.cxx", path)
        if m:
            logic = re.search(r"::createLogic\(\)\s*\{[^}]*?return\s+(\w+)::New\(\)", _strip_comments(tree.read(path)))
            out[m.group(2)] = {"kind": "loadable", "logic": logic.group(1) if logic else None}
        m = re.fullmatch(r"Modules/Scripted/(\w+)/(\w+)\.py", path)
        if m and m.group(1) == m.group(2):
            out[m.group(1)] = {"kind": "scripted", "logic": m.group(1) + "Logic"}
        m = re.fullmatch(r"Modules/CLI/(\w+)/(\w+)\.xml", path)
        if m and m.group(1) == m.group(2):
            out[m.group(1)] = {"kind": "cli", "logic": "vtkSlicerCLIModuleLogic"}
    return dict(sorted(out.items()))


def io_properties(tree):
    """{reader file type: keys of the loading properties its reader reads}."""
    out = {}
    for path in tree.paths:
        if not re.search(r"/qSlicer\w*Reader\.cxx$", path) or "/Testing/" in path:
            continue
        code = _strip_comments(tree.read(path))
        kind = re.search(r"::fileType\(\)\s*const\s*\{\s*return\s+(?:QString\()?\s*\"(\w+)\"", code)
        if kind:
            keys = set(re.findall(r'properties\s*(?:\[|\.value\(|\.contains\()\s*"(\w+)"', code))
            out.setdefault(kind.group(1), set()).update(keys)
    return {k: sorted(v) for k, v in sorted(out.items())}


def ctk_commit(tree):
    """The CTK commit Slicer's superbuild pins for this tag."""
    text = tree.read("SuperBuild/External_CTK.cmake")
    m = re.search(r'Slicer_\$\{proj\}_GIT_TAG\s*"([0-9a-f]{40})"', text)
    if not m:
        raise SystemExit(f"{tree.tag}: no CTK commit in SuperBuild/External_CTK.cmake")
    return m.group(1)


def snapshot(git_dir, tag, ctk_git_dir):
    tree = Tree(git_dir, tag)
    ctk = ctk_commit(tree)
    classes = class_apis([tree, Tree(ctk_git_dir, ctk)], CLASSES + CTK_CLASSES)
    util_text = tree.read("Base/Python/slicer/util.py")
    util = python_defs(util_text)
    pnw_dir = "Base/Python/slicer/parameterNodeWrapper/"
    pnw = tree.read(pnw_dir + "__init__.py")
    pnw_names = set(re.findall(r"\b([A-Za-z_]\w*)\b", " ".join(re.findall(r"import\s*\(([^)]*)\)", pnw, re.S))))
    for sub in re.findall(r"^from \.(\w+) import \*", pnw, re.M):      # names in each submodule's __all__
        all_list = re.search(r"__all__\s*=\s*\[([^\]]*)\]", tree.read(pnw_dir + sub + ".py"), re.S)
        if all_list:
            pnw_names |= set(re.findall(r"[\"']([A-Za-z_]\w*)[\"']", all_list.group(1)))
    dicom_methods, dicom_attributes = dicom_api(tree)
    commit = subprocess.run(["git", "--git-dir", git_dir, "rev-parse", tag + "^{commit}"], check=True,
                            capture_output=True, text=True).stdout.strip()
    return {"commit": commit, "ctk_commit": ctk, "classes": classes, "class_names": class_names(tree),
            "modules": modules(tree), "io_properties": io_properties(tree), "slicer_util": util,
            "slicer_util_parameters": python_parameters(util_text),
            "parameter_node_wrapper": sorted(pnw_names), "effects": effect_parameters(tree),
            "shortcuts": shortcuts(tree), "dicom_database": dicom_methods, "dicom_attributes": dicom_attributes}


def _qt_flat(module, name):
    """(flattened public names (methods, properties, enum values), signals, direct base) of a PyQt class."""
    cls = getattr(module, name)
    names = {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n, None))}
    enums = {n for n in dir(cls) if not n.startswith("_") and not callable(getattr(cls, n, None))}
    signals, base = set(), None
    meta = getattr(cls, "staticMetaObject", None)
    if meta is not None:
        for i in range(meta.propertyCount()):
            names.add(meta.property(i).name())
        for i in range(meta.methodCount()):
            method = meta.method(i)
            signature = bytes(method.methodSignature()).decode()
            if getattr(method.methodType(), "value", method.methodType()) == 1:      # QMetaMethod::Signal
                signals.add(signature)
        if meta.superClass() is not None:
            base = meta.superClass().className()
    else:
        base = next((b.__name__ for b in cls.__mro__[1:] if b.__module__.startswith(("PyQt5", "PyQt6"))), None)
    return names, enums, signals, base


def qt_api():
    """Qt classes the modules use: the names and signals both Qt 5 and Qt 6 have, each stored on
    the class that declares it (the class's names less its base's)."""
    import importlib

    flat = {}
    versions = []
    for binding in ("PyQt5", "PyQt6"):
        core = importlib.import_module(binding + ".QtCore")
        versions.append(f"{binding} {core.PYQT_VERSION_STR} (Qt {core.QT_VERSION_STR})")
        for module, names in QT_CLASSES.items():
            mod = importlib.import_module(f"{binding}.{module}")
            for name in names:
                if hasattr(mod, name):
                    flat.setdefault(name, {})[binding] = _qt_flat(mod, name)
    out = {}
    for name, per in flat.items():
        if len(per) != 2:
            continue
        (n5, e5, s5, b5), (n6, _, s6, b6) = per["PyQt5"], per["PyQt6"]
        # enum values: PythonQt gives them unscoped on the class (QAbstractItemView.SelectRows) with
        # Qt 5 and 6, as PyQt5 does (PyQt6 scopes them: QAbstractItemView.SelectionBehavior.SelectRows)
        out[name] = {"methods": (n5 & n6) | e5, "signals": s5 & s6, "base": b5 if b5 == b6 else None}
    for info in out.values():             # keep only what the base classes do not have
        info["methods"] -= _inherited(out, info["base"], "methods")
        info["signals"] -= _inherited(out, info["base"], "signals")
    return {"source": "names both " + " and ".join(versions) + " have (scripts/slicer_api_snapshot.py qt_api)",
            "classes": {k: {"methods": sorted(v["methods"]), "signals": sorted(v["signals"]), "base": v["base"]}
                        for k, v in sorted(out.items())}}


def _inherited(classes, name, key):
    out = set()
    while name in classes:
        out |= set(classes[name][key])
        name = classes[name]["base"]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--git-dir", required=True, help="Slicer source: a bare clone or the .git folder")
    parser.add_argument("--ctk-git-dir", required=True, help="CTK source: a bare clone or the .git folder")
    parser.add_argument("--tags", nargs="+", default=["v5.8.1", "v5.12.3"])
    parser.add_argument("--out", default=str(ROOT / "Testing" / "data" / "slicer_api.json"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        qt = qt_api()
    except ImportError:
        qt = json.loads(out.read_text(encoding="utf-8"))["qt"]
        print("PyQt5 / PyQt6 not importable: the Qt part of the existing file is kept")
    data = {"source": "https://github.com/Slicer/Slicer", "classes_recorded": CLASSES + CTK_CLASSES, "qt": qt,
            "versions": {tag: snapshot(args.git_dir, tag, args.ctk_git_dir) for tag in args.tags}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
    for tag, snap in data["versions"].items():
        n = sum(len(c["methods"]) for c in snap["classes"].values())
        print(f"{tag} ({snap['commit'][:10]}, CTK {snap['ctk_commit'][:10]}): {len(snap['classes'])} classes, "
              f"{n} method names, {len(snap['class_names'])} class names, {len(snap['modules'])} modules, "
              f"{len(snap['slicer_util'])} slicer.util functions, effects {sorted(snap['effects'])}, "
              f"{len(snap['shortcuts'])} built-in shortcuts")
    print(f"Qt: {len(qt['classes'])} classes ({qt['source']})")
    print(f"wrote {out} ({out.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    main()
