"""One way for tests to get a `slicer`: the fake (Testing/fake_slicer.py, any Python) or Slicer's
real MRML libraries (Testing/real_slicer.py, slicer-core, Python >= 3.10).

`install_backend(name, monkeypatch, tmp_path)` puts the chosen `slicer` (and `vtk`) into
`sys.modules`, with `slicer.ScriptedLoadableModule` and `SampleData` stand-ins so the modules'
self-tests run, and drops the modules' packages so they are imported again against it.
Tests use only Slicer's public API on what it returns; the few things that need a look
inside (where the slice views were centred) are methods of `Backend`.
"""
import sys
import types
import unittest
from dataclasses import dataclass

import numpy as np

BACKENDS = ("fake", "real")
MODULE_PACKAGES = ("CMBDetectorLib", "CMBScribbleAnnotatorLib")


@dataclass
class Backend:
    name: str
    slicer: types.ModuleType
    vtk: types.ModuleType
    real: object = None                      # RealSlicer when name == "real"

    def slice_centre(self):
        """RAS point (mm) the views were last centred on by JumpSlicesToLocation (None: never)."""
        if self.real is None:
            return tuple(self.slicer.jumps[-1][:3]) if self.slicer.jumps else None
        red = self.slicer.util.getNode("Red")
        matrix = red.GetSliceToRAS()
        centre = tuple(matrix.GetElement(r, 3) for r in range(3))
        return None if centre == (0.0, 0.0, 0.0) else centre

    def tag(self, segment, key):
        """A segment tag's value (None when absent), through vtkSegment.GetTag."""
        value = self.vtk.mutable("")
        return str(value) if segment.GetTag(key, value) else None

    def nodes(self, class_name):
        return self.slicer.util.getNodesByClass(class_name)


def sample_head(shape=(40, 64, 64), spacing=(0.9, 0.9, 2.0)):
    """A small T2*-like head (float32 array [k, j, i] and IJK-to-RAS in mm) with one 3 mm dark
    CMB at the centre voxel, standing in for SampleData's MRHead (no download in tests)."""
    rng = np.random.default_rng(0)
    kk, jj, ii = np.indices(shape)
    centre = [n // 2 for n in shape]
    head = ((kk - centre[0]) * spacing[2] / 36) ** 2 + ((jj - centre[1]) * spacing[1] / 26) ** 2 + \
        ((ii - centre[2]) * spacing[0] / 24) ** 2 <= 1
    image = np.where(head, 300.0, 20.0) + rng.normal(0, 6.0, shape)
    mm2 = ((kk - centre[0]) * spacing[2]) ** 2 + ((jj - centre[1]) * spacing[1]) ** 2 + \
        ((ii - centre[2]) * spacing[0]) ** 2
    image[mm2 <= 1.5 ** 2] = 80.0
    ijk_to_ras = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    ijk_to_ras[:3, 3] = [28.8, 28.8, -40.0]
    return image.astype(np.float32), ijk_to_ras


def _sample_data_module(slicer):
    class SampleDataLogic:
        def downloadMRHead(self):
            image, ijk_to_ras = sample_head()
            return slicer.util.addVolumeFromArray(image, ijk_to_ras, name="MRHead")

    return types.SimpleNamespace(SampleDataLogic=SampleDataLogic)


def _scripted_loadable_module():
    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    slm.ScriptedLoadableModuleTest = type("ScriptedLoadableModuleTest", (unittest.TestCase,),
                                          {"delayDisplay": lambda self, message, msec=None: None})
    return slm


def install_backend(name, monkeypatch, tmp_path):
    """Install backend `name` ("fake" or "real") for one test; undone by `monkeypatch`."""
    import pytest

    for module in [m for m in sys.modules if m.split(".")[0] in MODULE_PACKAGES]:
        monkeypatch.delitem(sys.modules, module)
    if name == "fake":
        from fake_slicer import install, make_fake_slicer

        slicer, vtk = make_fake_slicer()
        install(lambda key, module: monkeypatch.setitem(sys.modules, key, module), slicer, vtk)
        backend = Backend("fake", slicer, vtk)
    else:
        from real_slicer import RealSlicer, available

        ok, why = available()
        if not ok:
            pytest.skip(why)
        for key in [m for m in sys.modules if m.split(".")[0] in ("slicer", "vtk")]:
            if getattr(sys.modules[key], "__file__", None) is None and key in ("slicer", "vtk"):
                monkeypatch.delitem(sys.modules, key)      # a fake left in place by another test
        import slicer
        import vtk

        real = RealSlicer(tmp_path / "slicer_temp").install()
        backend = Backend("real", slicer, vtk, real=real)
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", _scripted_loadable_module())
    monkeypatch.setitem(sys.modules, "SampleData", _sample_data_module(backend.slicer))
    return backend


def standalone(name):
    """(slicer, vtk, finish) for a script (benchmarks): backend `name` put into sys.modules for
    the rest of the process; `finish()` empties the real scene.  Exits with the reason when the
    real backend cannot be used here."""
    if name == "fake":
        from fake_slicer import install, make_fake_slicer

        slicer, vtk = make_fake_slicer()
        install(sys.modules.__setitem__, slicer, vtk)
        return slicer, vtk, lambda: None
    from real_slicer import RealSlicer, available

    ok, why = available()
    if not ok:
        sys.exit(why)
    real = RealSlicer().install()
    return real.slicer, real.vtk, real.uninstall
