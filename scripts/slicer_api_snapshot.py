"""Write Testing/data/slicer_api.json: the Slicer API the CMB modules may call, per Slicer release.

Slicer cannot be installed where the tests run, so Testing/test_slicer_api_conformance.py
checks the module code against this snapshot of Slicer's own source.  For each tag
(default: v5.8.1, the oldest supported, and the newest release) it records

  * classes: methods, VTK/Qt property accessors and enumerators (events, modes) of the
    MRML nodes, segmentation classes, logics and qMRML/qSlicer widgets the modules use,
    with the methods of their Slicer superclasses; superclasses outside Slicer (VTK, Qt,
    CTK) are named in "external_base";
  * slicer_util: the functions of slicer.util; parameter_node_wrapper: the names of
    slicer.parameterNodeWrapper;
  * effects: segment editor effect names and their (common) parameter names;
  * shortcuts: built-in keys the modules must not take (main-window menu mnemonics and
    shortcuts, slice/3D view keys, segment editor keys);
  * dicom_database: the methods Slicer's own Python calls on `slicer.dicomDatabase` (a
    ctkDICOMDatabase from CTK, outside this snapshot: what Slicer itself relies on is what
    the modules may rely on); dicom_attributes: the "DICOM.*" node attributes Slicer's
    DICOM plugins set (e.g. "DICOM.instanceUIDs" on a scalar volume).

Usage (a Slicer source checkout or a bare clone, e.g. from `git clone --bare
https://github.com/Slicer/Slicer`):

    python scripts/slicer_api_snapshot.py --git-dir SLICER.git [--tags v5.8.1 v5.10.0] \\
        [--out Testing/data/slicer_api.json]
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
    "vtkOrientedImageData", "vtkSlicerSegmentationsModuleLogic", "vtkSlicerMarkupsLogic",
    "qMRMLSegmentEditorWidget", "qMRMLNodeComboBox", "qSlicerMarkupsPlaceWidget",
    "qSlicerSegmentEditorAbstractEffect", "qSlicerApplication", "qSlicerCoreApplication", "qMRMLWidget",
]
EFFECT_SOURCES = {  # effect name -> implementation file (parameters set with set(Common)ParameterDefault)
    "Paint": "qSlicerSegmentEditorPaintEffect.cxx",
    "Erase": "qSlicerSegmentEditorEraseEffect.cxx",
}
VIEW_KEY_FILES = ["vtkMRMLSliceIntersectionWidget.cxx", "vtkMRMLCameraWidget.cxx"]
NOT_METHODS = {"if", "for", "while", "switch", "return", "sizeof", "defined", "static_cast", "const_cast",
               "reinterpret_cast", "dynamic_cast", "Q_OBJECT", "Q_PROPERTY", "Q_ENUMS", "Q_ENUM", "Q_DECLARE_PRIVATE",
               "Q_DISABLE_COPY", "Q_SIGNALS", "Q_SLOTS", "QVTK_OBJECT", "vtkTypeMacro", "VTK_NEWINSTANCE"}


class Tree:
    def __init__(self, git_dir, tag):
        self.git_dir, self.tag = git_dir, tag
        out = subprocess.run(["git", "--git-dir", git_dir, "ls-tree", "-r", "--name-only", tag],
                             check=True, capture_output=True, text=True).stdout
        self.paths = out.split("\n")
        self.by_name = {}
        for p in self.paths:
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


def header_names(text, cls):
    """(methods, enumerators, superclass) declared in a class header."""
    code = _strip_comments(text)
    methods = {m for m in re.findall(r"\b([A-Za-z_]\w*)\s*\(", code) if m not in NOT_METHODS}
    for macro, name in re.findall(r"\b(vtk(?:Get|Set)\w*Macro|vtkBooleanMacro)\s*\(\s*(\w+)", code):
        if macro == "vtkBooleanMacro":
            methods |= {name + "On", name + "Off"}
        else:
            methods.add(("Get" if macro.startswith("vtkGet") else "Set") + name)
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
    return methods - {cls, "~" + cls}, enumerators, base.group(1) if base else None


def class_apis(tree, classes):
    """{class: own methods, own enumerators, base} for `classes` and their Slicer superclasses
    (inherited names are resolved by the reader, so each name is stored once)."""
    out, todo = {}, list(classes)
    while todo:
        cls = todo.pop()
        if cls in out:
            continue
        text = tree.file(cls + ".h")
        if text is None:
            if cls in classes:
                raise SystemExit(f"{tree.tag}: {cls}.h not found")
            continue
        methods, enumerators, base = header_names(text, cls)
        out[cls] = {"methods": sorted(methods), "enumerators": sorted(enumerators), "base": base}
        if base and tree.file(base + ".h") is not None:
            todo.append(base)
    return out


def python_defs(text):
    """Top-level functions and classes of a Python module."""
    return sorted(set(re.findall(r"^(?:def|class) ([A-Za-z_]\w*)\s*[(:]", text, flags=re.M)))


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


def snapshot(git_dir, tag):
    tree = Tree(git_dir, tag)
    classes = class_apis(tree, CLASSES)
    util = python_defs(tree.read("Base/Python/slicer/util.py"))
    pnw_dir = "Base/Python/slicer/parameterNodeWrapper/"
    pnw = tree.read(pnw_dir + "__init__.py")
    pnw_names = set(re.findall(r"\b([A-Za-z_]\w*)\b", " ".join(re.findall(r"import\s*\(([^)]*)\)", pnw, re.S))))
    for sub in re.findall(r"^from \.(\w+) import \*", pnw, re.M):      # names in each submodule's __all__
        all_list = re.search(r"__all__\s*=\s*\[([^\]]*)\]", tree.read(pnw_dir + sub + ".py"), re.S)
        if all_list:
            pnw_names |= set(re.findall(r"[\"']([A-Za-z_]\w*)[\"']", all_list.group(1)))
    dicom_methods, dicom_attributes = dicom_api(tree)
    return {"classes": classes, "slicer_util": util, "parameter_node_wrapper": sorted(pnw_names),
            "effects": effect_parameters(tree), "shortcuts": shortcuts(tree), "dicom_database": dicom_methods,
            "dicom_attributes": dicom_attributes}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--git-dir", required=True, help="Slicer source: a bare clone or the .git folder")
    parser.add_argument("--tags", nargs="+", default=["v5.8.1", "v5.10.0"])
    parser.add_argument("--out", default=str(ROOT / "Testing" / "data" / "slicer_api.json"))
    args = parser.parse_args(argv)
    data = {"source": "https://github.com/Slicer/Slicer", "classes_recorded": CLASSES,
            "versions": {tag: snapshot(args.git_dir, tag) for tag in args.tags}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
    for tag, snap in data["versions"].items():
        n = sum(len(c["methods"]) for c in snap["classes"].values())
        print(f"{tag}: {len(snap['classes'])} classes, {n} method names, {len(snap['slicer_util'])} slicer.util "
              f"functions, effects {sorted(snap['effects'])}, {len(snap['shortcuts'])} built-in shortcuts")
    print(f"wrote {out} ({out.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    main()
