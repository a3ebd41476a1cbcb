"""The import graph of CMBLib.detection has no cycle (model_io <-> registry had one, through
imports inside functions), and each module imports first in a fresh interpreter."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

DETECTION = Path(__file__).resolve().parents[1] / "CMBLib" / "detection"


def import_graph() -> dict:
    """module -> set of CMBLib.detection modules it imports anywhere (top level or in a function)."""
    names = {p.stem for p in DETECTION.glob("*.py") if p.stem != "__init__"}
    graph = {}
    for name in names:
        deps = set()
        for node in ast.walk(ast.parse((DETECTION / f"{name}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:                     # from .x import y / from . import x
                    found = [node.module] if node.module else [a.name for a in node.names]
                elif (node.module or "").startswith("CMBLib.detection."):
                    found = [node.module.split(".")[2]]
                else:
                    found = [a.name for a in node.names] if node.module == "CMBLib.detection" else []
            elif isinstance(node, ast.Import):
                found = [a.name.split(".")[2] for a in node.names if a.name.startswith("CMBLib.detection.")]
            else:
                continue
            deps |= {m.split(".")[0] for m in found if m and m.split(".")[0] in names} - {name}
        graph[name] = deps
    return graph


def cycles(graph: dict) -> list:
    """Each cycle found by a depth-first search, as a list of modules."""
    out, state, path = [], {}, []

    def visit(n):
        state[n] = "open"
        path.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                out.append(path[path.index(m):] + [m])
            elif m not in state:
                visit(m)
        path.pop()
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return out


def test_detection_imports_have_no_cycle():
    graph = import_graph()
    assert "registry" in graph["finetune_run"] and "model_io" in graph["registry"]     # the graph is read
    assert "registry" not in graph["model_io"]
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]                        # and a cycle would show


@pytest.mark.parametrize("module", ["model_io", "registry", "finetune", "finetune_run", "finetune_gate"])
def test_module_imports_first_in_a_fresh_interpreter(module):
    code = f"import CMBLib.detection.{module} as m, sys; assert 'torch' not in sys.modules, 'torch at import'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=DETECTION.parents[1], timeout=120)


def test_finetune_command_line_still_runs_as_a_module():
    r = subprocess.run([sys.executable, "-m", "CMBLib.detection.finetune", "--help"], capture_output=True, text=True,
                       cwd=DETECTION.parents[1], timeout=120)
    assert r.returncode == 0 and "--accept-unconfirmed" in r.stdout and "--test-fraction" in r.stdout
