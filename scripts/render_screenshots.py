"""Render the two screenshots of the Extensions Index listing from a real MRML scene.

Regenerate them (about a minute on a laptop CPU; needs Python >= 3.10 with the `test` extra,
which brings slicer-core and torch):

    .venv/bin/python scripts/render_screenshots.py        # -> docs/images/slicer_detector.png
                                                          #    docs/images/slicer_annotator.png

Slicer's Qt views are not installable here, but its MRML libraries are (`slicer-core`), and
with them the very displayable managers that draw Slicer's views: the slice logic reslices
the volume, `vtkMRMLSegmentationsDisplayableManager2D/3D` draw the segments and
`vtkMRMLMarkupsDisplayableManager` the points, into an offscreen VTK window (EGL or OSMesa,
whichever VTK was built with; no display needed).  The scene is made the way the modules
make it: a synthetic T2*-like study (`CMBLib.synthesis.demo_study`, the study of `cmb demo`),

* detector: the bundled model run on it (`CMBLib.detection.pipeline.detect`), its outputs
  loaded by `CMBDetectorLib.logic.DetectorLogic.loadResults` (one segment per candidate,
  markups at the centres) and one candidate accepted with `setStatus`;
* annotator: mimics drawn into the study (`CMBLib.synthesis.mimics.add_mimics`), scribbles
  painted into `CMBScribbleAnnotatorLib.logic.AnnotatorLogic`'s scribble segments, masks grown
  by its `generateMasks`, and mimic landmarks in its markups node (`nodes.mimicsToMarkups`).

Views are shown as Slicer shows them: axial slices in radiological convention (patient right
on the screen's left, as Slicer's default orientation presets), R / L / A / P marked, a
ruler; the text in the corners says what the view holds.  Each PNG is 800 x 600.
"""
import argparse
import contextlib
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "CMBDetector", REPO / "CMBScribbleAnnotator"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

WIDTH, HEIGHT = 800, 600
SLICE_BAR = {"Red": (0.95, 0.33, 0.33), "Yellow": (0.93, 0.84, 0.31), "Green": (0.43, 0.69, 0.38),
             "3D": (0.45, 0.51, 0.89)}


# ------------------------------------------------------------------------------------------
# A Slicer application without Qt: scene, application logic, module logics
# ------------------------------------------------------------------------------------------
class SlicerCore:
    """One MRML scene with the logics the modules call, installed as `slicer.mrmlScene`,
    `slicer.modules.<name>.logic()` and `slicer.app` (what Slicer's Qt application sets up)."""

    LOGICS = (("volumes", "Volumes", "vtkSlicerVolumesLogic"),
              ("segmentations", "Segmentations", "vtkSlicerSegmentationsModuleLogic"),
              ("markups", "Markups", "vtkSlicerMarkupsLogic"),
              ("subjecthierarchy", "SubjectHierarchy", "vtkSlicerSubjectHierarchyModuleLogic"))

    def __init__(self, temp: Path):
        import slicer
        import vtk

        self.slicer, self.vtk, self.temp = slicer, vtk, temp
        self.scene = slicer.vtkMRMLScene()
        crosshair = slicer.vtkMRMLCrosshairNode()
        crosshair.SetCrosshairName("default")
        self.scene.AddNode(crosshair)
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.app_logic.SetSliceLogics(vtk.vtkCollection())
        self.app_logic.SetViewLogics(vtk.vtkCollection())
        colors = slicer.vtkSlicerColorLogic()          # adds the default colour tables to the scene
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
        # Slicer's default: patient right on the screen's left (radiological convention)
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(self.scene, True)
        for factory in (slicer.vtkMRMLSliceViewDisplayableManagerFactory,
                        slicer.vtkMRMLThreeDViewDisplayableManagerFactory):
            factory.GetInstance().SetMRMLApplicationLogic(self.app_logic)

    @contextlib.contextmanager
    def installed(self):
        """`slicer.mrmlScene` etc. point at this scene inside the block."""
        slicer, saved = self.slicer, {}
        modules = types.SimpleNamespace(**{k: types.SimpleNamespace(logic=(lambda v=v: v))
                                           for k, v in self.logics.items()})
        app = types.SimpleNamespace(applicationLogic=lambda: self.app_logic, temporaryPath=str(self.temp),
                                    processEvents=lambda *a: None)
        replaced = [(slicer, "mrmlScene", self.scene), (slicer, "modules", modules), (slicer, "app", app),
                    (slicer.util, "loadNodeFromFile", self._load)]
        for target, name, value in replaced:
            saved[(target, name)] = getattr(target, name, None)
            setattr(target, name, value)
        try:
            yield self
        finally:
            for (target, name), value in saved.items():
                setattr(target, name, value)

    def _load(self, filename, filetype=None, properties=None, returnNode=False):  # noqa: N803 (Slicer's name)
        """slicer.util.loadNodeFromFile for volumes (Slicer's IO manager needs Qt)."""
        properties = dict(properties or {})
        name = properties.get("name") or Path(filename).name.split(".")[0]
        node = self.logics["volumes"].AddArchetypeVolume(str(filename), name, 1 if properties.get("labelmap") else 0)
        if node is None:
            raise RuntimeError(f"failed to load {filename}")
        return (True, node) if returnNode else node

    def add_volume(self, volume, name):
        """Scalar volume node of a CMBLib Volume (array [k, j, i], RAS geometry), with display."""
        ijk_to_ras = np.eye(4)
        ijk_to_ras[:3, :3] = np.asarray(volume.direction, float) * np.asarray(volume.spacing, float)
        ijk_to_ras[:3, 3] = volume.origin
        node = self.slicer.util.addVolumeFromArray(np.asarray(volume.array, np.float32), ijk_to_ras, name=name)
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
        lo, hi = np.percentile(volume.array, [1, 99.5])
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(float(lo), float(hi))
        return node


# ------------------------------------------------------------------------------------------
# Offscreen views driven by Slicer's displayable managers
# ------------------------------------------------------------------------------------------
class View:
    """Render window + renderer + displayable manager group, offscreen."""

    def __init__(self, core, size, factory, managers):
        vtk = core.vtk
        self.core, self.size = core, size
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetMultiSamples(0)
        self.window.SetSize(*size)
        self.renderer = vtk.vtkRenderer()
        self.window.AddRenderer(self.renderer)
        self.interactor = vtk.vtkGenericRenderWindowInteractor()   # displayable managers need one
        self.interactor.SetRenderWindow(self.window)
        self.interactor.Initialize()
        factory = factory.GetInstance()
        for name in managers:
            if not factory.IsDisplayableManagerRegistered(name):
                factory.RegisterDisplayableManager(name)
        self.group = core.slicer.vtkMRMLDisplayableManagerGroup()
        self.group.Initialize(factory, self.renderer)
        self.texts = []

    def text(self, string, position, size=15, color=(1, 1, 1), bold=False, justify="left"):
        actor = self.core.vtk.vtkTextActor()
        actor.SetInput(string)
        prop = actor.GetTextProperty()
        prop.SetFontSize(size)
        prop.SetColor(*color)
        prop.SetBold(bold)
        prop.SetShadow(1)
        prop.SetJustification({"left": 0, "centre": 1, "right": 2}[justify])
        prop.SetVerticalJustification(1)
        actor.SetDisplayPosition(*position)
        self.renderer.AddViewProp(actor)
        self.texts.append(actor)

    def capture(self):
        """RGB array [row, column, 3], top row first."""
        from vtk.util import numpy_support

        self.window.Render()
        grab = self.core.vtk.vtkWindowToImageFilter()
        grab.SetInput(self.window)
        grab.SetInputBufferTypeToRGB()
        grab.ReadFrontBufferOff()
        grab.Update()
        image = grab.GetOutput()
        w, h, _ = image.GetDimensions()
        rgb = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w, 3)
        return rgb[::-1].copy()


class SliceView(View):
    """A slice view (Red / Yellow / Green) as Slicer draws it."""

    MANAGERS = ("vtkMRMLSegmentationsDisplayableManager2D", "vtkMRMLMarkupsDisplayableManager",
                "vtkMRMLRulerDisplayableManager", "vtkMRMLCrosshairDisplayableManager")

    def __init__(self, core, name, orientation, size, background):
        slicer, vtk = core.slicer, core.vtk
        super().__init__(core, size, slicer.vtkMRMLSliceViewDisplayableManagerFactory, self.MANAGERS)
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(core.app_logic)
        core.app_logic.GetSliceLogics().AddItem(self.logic)
        self.logic.SetMRMLScene(core.scene)
        self.node = self.logic.AddSliceNode(name)
        self.group.SetMRMLDisplayableNode(self.node)
        self.node.SetOrientation(orientation)
        self.node.SetRulerType(slicer.vtkMRMLAbstractViewNode.RulerTypeThin)
        self.node.SetRulerColor(slicer.vtkMRMLAbstractViewNode.RulerColorWhite)
        self.logic.GetSliceCompositeNode().SetBackgroundVolumeID(background.GetID())
        self.logic.ResizeSliceNode(*size)
        self.logic.FitSliceToBackground()
        # the resliced, window/levelled image (RGBA 0-255) behind the displayable managers' actors
        mapper = vtk.vtkImageMapper()
        mapper.SetColorWindow(255)
        mapper.SetColorLevel(127.5)
        mapper.SetInputConnection(self.logic.GetImageDataConnection())
        actor = vtk.vtkActor2D()
        actor.SetMapper(mapper)
        actor.GetProperty().SetDisplayLocationToBackground()
        self.renderer.AddViewProp(actor)

    def look_at(self, ras, field_of_view_mm=None, centre=True, pan_mm=0.0):
        """Slice through `ras` (RAS mm), centred on it unless `centre` is False (then centred on
        the volume, as after "fit", and moved `pan_mm` to the screen's left); optionally zoomed
        to a field of view (mm, across)."""
        if field_of_view_mm is not None:
            w, h = self.size
            self.node.SetFieldOfView(field_of_view_mm, field_of_view_mm * h / w, self.node.GetFieldOfView()[2])
        if centre:
            self.node.JumpSliceByCentering(*[float(v) for v in ras])
        else:
            self.node.JumpSliceByOffsetting(*[float(v) for v in ras])
            if pan_mm:
                m = self.node.GetSliceToRAS()
                middle = np.array([m.GetElement(r, 3) + pan_mm * m.GetElement(r, 0) for r in range(3)])
                self.node.JumpSliceByCentering(*middle)
        self.logic.SnapSliceOffsetToIJK()

    def screen_letters(self):
        """Patient directions at the screen's (left, right, top, bottom), from the slice-to-RAS matrix."""
        m = self.node.GetSliceToRAS()
        names = (("L", "R"), ("P", "A"), ("I", "S"))

        def letter(column, sign):
            v = [sign * m.GetElement(row, column) for row in range(3)]
            axis = int(np.argmax(np.abs(v)))
            return names[axis][1 if v[axis] > 0 else 0]

        return letter(0, -1), letter(0, 1), letter(1, 1), letter(1, -1)

    def show_in_3d(self, opacity=1.0):
        """Show this slice in the 3D views (Slicer's eye button), textured with the image."""
        self.node.SetSliceVisible(1)
        model = self.logic.GetSliceModelNode()
        if model is not None and model.GetDisplayNode() is not None:
            model.GetDisplayNode().SetOpacity(opacity)

    def annotate(self, title, lines=(), orientation_labels=True):
        """Slicer-like corner text and the radiological R / L / A / P marks."""
        w, h = self.size
        self.text(title, (8, h - 10), size=15, bold=True)
        offset = self.logic.GetSliceOffset()
        axis = {"Axial": "S", "Coronal": "A", "Sagittal": "R"}.get(self.node.GetOrientation(), "")
        self.text(f"{axis}: {offset:.1f} mm", (w - 8, h - 10), size=14, justify="right")
        for n, line in enumerate(lines):
            self.text(line, (8, h - 32 - 18 * n), size=13, color=(0.9, 0.9, 0.9))
        if orientation_labels:
            left, right, top, bottom = self.screen_letters()
            tint = (0.95, 0.9, 0.55)
            self.text(left, (8, h // 2 + 9), size=18, color=tint, bold=True)
            self.text(right, (w - 8, h // 2 + 9), size=18, color=tint, bold=True, justify="right")
            self.text(top, (w // 2, h - 32 - 18 * len(lines)), size=18, color=tint, bold=True, justify="centre")
            self.text(bottom, (w // 2, 58), size=18, color=tint, bold=True, justify="centre")


class ThreeDView(View):
    """Slicer's 3D view: segment surfaces, points, the slice planes textured with the image."""

    MANAGERS = ("vtkMRMLCameraDisplayableManager", "vtkMRMLViewDisplayableManager",
                "vtkMRMLModelDisplayableManager", "vtkMRMLSegmentationsDisplayableManager3D",
                "vtkMRMLMarkupsDisplayableManager")

    def __init__(self, core, size):
        slicer = core.slicer
        super().__init__(core, size, slicer.vtkMRMLThreeDViewDisplayableManagerFactory, self.MANAGERS)
        self.logic = slicer.vtkMRMLViewLogic()
        self.logic.SetMRMLApplicationLogic(core.app_logic)
        core.app_logic.GetViewLogics().AddItem(self.logic)
        self.logic.SetMRMLScene(core.scene)
        self.node = self.logic.AddViewNode("1")
        self.node.SetBoxVisible(0)
        self.node.SetAxisLabelsVisible(1)
        self.group.SetMRMLDisplayableNode(self.node)

    def look(self, centre, azimuth=30.0, elevation=25.0, distance=260.0):
        camera_dm = self.group.GetDisplayableManagerByClassName("vtkMRMLCameraDisplayableManager")
        camera = camera_dm.GetCameraNode()
        centre = np.asarray(centre, float)
        a, e = np.radians(azimuth), np.radians(elevation)
        # from anterior-left-superior of the head, looking at its centre (Slicer's RAS)
        direction = np.array([-np.sin(a) * np.cos(e), np.cos(a) * np.cos(e), np.sin(e)])
        camera.SetFocalPoint(*centre)
        camera.SetPosition(*(centre + distance * direction))
        camera.SetViewUp(0, 0, 1)
        camera.ResetClippingRange()

    def annotate(self, title, lines=()):
        w, h = self.size
        self.text(title, (8, h - 10), size=15, bold=True)
        for n, line in enumerate(lines):
            self.text(line, (8, h - 32 - 18 * n), size=13, color=(0.9, 0.9, 0.9))



# ------------------------------------------------------------------------------------------
# Composition and PNG
# ------------------------------------------------------------------------------------------
def panel(rgb, bar):
    """A view with Slicer's coloured view bar on top (3 px) and a dark frame."""
    out = rgb.copy()
    out[:4] = (np.asarray(SLICE_BAR[bar]) * 255).astype(np.uint8)
    out[:, :1] = out[:, -1:] = out[-1:] = 40
    return out


def write_png(rgb, path: Path, max_bytes=300_000):
    """Palette PNG (256 colours, small enough for the catalog), written atomically."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(rgb, "RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    tmp = path.with_name(path.name + ".tmp")
    image.save(tmp, format="PNG", optimize=True)
    size = tmp.stat().st_size
    if size > max_bytes:
        tmp.unlink()
        raise SystemExit(f"{path.name}: {size} bytes, over {max_bytes}")
    tmp.replace(path)
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path} ({size // 1024} KB)")


# ------------------------------------------------------------------------------------------
# The two scenes
# ------------------------------------------------------------------------------------------
def detector_screenshot(core, temp: Path, out: Path, seed: int):
    """Axial review of the accepted candidate, its zoom, and all candidates in 3D."""
    from CMBDetectorLib.logic import DetectorLogic

    from CMBLib.detection.outputs import write_outputs
    from CMBLib.detection.pipeline import detect
    from CMBLib.io import write_volume
    from CMBLib.synthesis.demo_study import make_demo_phantom, make_demo_study

    image, _truth, _centres = make_demo_study(seed=seed, n_cmbs=6)
    _, _brain, labels = make_demo_phantom(seed)
    result = detect(image, "default", device="cpu", sequence="T2S")
    if not result.records:
        raise SystemExit("the bundled model found nothing on the demo study: nothing to show")
    write_volume(image, temp / "demo_T2S.nii.gz")
    paths = write_outputs(result, temp, "demo_T2S", image=str(temp / "demo_T2S.nii.gz"), overwrite=True)
    records = sorted(result.records, key=lambda r: (-r["max_probability"], -r["diameter_mm"]))
    focus = records[0]
    with core.installed():
        volume = core.add_volume(image, "demo_T2S")
        logic = DetectorLogic()
        seg, points, _table = logic.loadResults(str(paths["json"]), volume)
        logic.setStatus(focus, "accepted")          # the reader accepted the first candidate
        _style_segments(seg, fill=0.5, outline=True)
        seg.CreateClosedSurfaceRepresentation()

        axial = SliceView(core, "Red", "Axial", (480, HEIGHT), volume)
        axial.look_at(focus["centre_ras"], field_of_view_mm=118, centre=False)
        axial.annotate("CMB Detector: review", [
            f"{len(records)} candidates, model {result.settings['model']} {result.settings['model_version']}",
            f"CMB {focus['label']}: {focus['diameter_mm']:.1f} mm, p = {focus['max_probability']:.2f}, accepted",
            "synthetic T2*-like demo study (cmb demo)"])
        zoom = SliceView(core, "Green", "Axial", (320, 300), volume)
        zoom.look_at(focus["centre_ras"], field_of_view_mm=32)
        zoom.annotate(f"CMB {focus['label']}, zoomed", orientation_labels=False)
        three = ThreeDView(core, (320, 300))
        _add_surface(core, image, _white_matter(labels), "white matter", (0.95, 0.9, 0.8), 0.25, three)
        three.look(image.kji_to_ras((np.asarray(image.array.shape) - 1) / 2.0), azimuth=25, elevation=45,
                   distance=225)
        three.annotate("3D: all candidates")
        _style_points(points, (1.0, 0.85, 0.1), 6.0, (axial, zoom), three)
        left, top, bottom = axial.capture(), zoom.capture(), three.capture()
    write_png(_layout(left, top, bottom), out)


def annotator_screenshot(core, temp: Path, out: Path, seed: int):
    """Scribbles, grown masks and mimic landmarks on one axial slice, a zoom, and 3D."""
    from CMBScribbleAnnotatorLib import nodes
    from CMBScribbleAnnotatorLib.logic import AnnotatorLogic
    from scipy import ndimage

    from CMBLib.synthesis.cmb_insertion import insert_cmbs, sample_centres
    from CMBLib.synthesis.demo_study import make_demo_phantom
    from CMBLib.synthesis.mimics import MIMIC_TYPES, add_mimics

    # the demo study's brain with its CMBs placed for the picture: half of them on the slice shown
    # (through the basal ganglia), the rest anywhere; mimics drawn around that slice
    rng = np.random.default_rng(seed + 1000)
    phantom, brain, labels = make_demo_phantom(seed)
    k0 = int(np.argmax((labels == 6).sum(axis=(1, 2))))
    slab = np.zeros_like(brain)
    slab[k0] = True
    allowed = ndimage.binary_erosion(brain, iterations=2) & np.isin(labels, (4, 5, 6))
    on_slice = sample_centres(allowed & slab, phantom, 5, rng, min_distance_mm=14.0)
    elsewhere = sample_centres(allowed & ~slab, phantom, 5, rng, min_distance_mm=14.0, existing=on_slice)
    cmb = insert_cmbs(phantom, centres_ras=np.concatenate([on_slice, elsewhere]), rng=rng, polarity="dark",
                      radius_mm=(1.3, 2.2), contrast=(0.6, 0.9), dipole_prob=0.0)
    image, cmbs = cmb.image, np.asarray(cmb.mask.array)
    free = brain & ~ndimage.binary_dilation(cmbs > 0, iterations=3)
    slab[k0 - 1:k0 + 2] = True
    veins = add_mimics(image, free, rng=seed + 7, polarity="dark", n_veins=8, n_flow_voids=0,
                       calcification=False, air_bone=False)
    marked = add_mimics(veins.image, free & slab, rng=seed + 8, polarity="dark", deep_gm_mask=(labels == 6) & slab,
                        n_veins=0, n_flow_voids=3, calcification=True, air_bone=False)
    image = marked.image
    # the rater's landmark on each mimic of the annotation vocabulary (veins are none: left unmarked)
    vocabulary = {"calcification": "basal_ganglia_calcification", "flow_void": "vessel_flow_void",
                  "cavernoma": "cavernoma", "air_bone": "bone_air_partial_volume"}
    landmarks = []
    for type_id, name in MIMIC_TYPES.items():
        if name not in vocabulary:
            continue
        parts, n = ndimage.label(marked.labels.array == type_id)
        for index in range(1, n + 1):
            kji = np.argwhere(parts == index)
            kji = kji[kji[:, 0] == k0] if np.any(kji[:, 0] == k0) else kji
            landmarks.append({"id": len(landmarks) + 1, "position_ras": [float(v) for v in
                                                                        image.kji_to_ras(kji.mean(axis=0))],
                              "type": vocabulary[name], "type_other": "", "side": "unreviewed", "comment": ""})
    with core.installed():
        volume = core.add_volume(image, "T2S")
        logic = AnnotatorLogic(sessionRoot=temp / "sessions", rater="screenshot")
        logic.setVolume(volume)
        ids = sorted((int(v) for v in np.unique(cmbs) if v), key=lambda v: -np.sum(cmbs[k0] == v))
        for cmb in ids:                                  # a stroke in each CMB, as a rater paints it
            label = logic.addFinding()
            core.slicer.util.updateSegmentBinaryLabelmapFromArray(
                _scribble(cmbs == cmb, k0), logic.scribblesNode,
                nodes.segmentIdForLabel(logic.scribblesNode, label), volume)
        logic.generateMasks()
        nodes.mimicsToMarkups(logic.mimicsNode, landmarks)
        _style_segments(logic.scribblesNode, fill=0.9, outline=False)
        _style_segments(logic.masksNode, fill=0.0, outline=True)
        logic.scribblesNode.GetDisplayNode().SetVisibility3D(0)
        logic.masksNode.CreateClosedSurfaceRepresentation()
        focus = image.kji_to_ras(np.argwhere(cmbs == ids[0]).mean(axis=0))
        focus[2] = image.kji_to_ras(np.array([k0, 0, 0]))[2]

        axial = SliceView(core, "Red", "Axial", (480, HEIGHT), volume)
        axial.look_at(focus, field_of_view_mm=112, centre=False)
        axial.annotate("CMB Scribble Annotator", [
            f"{len(logic.findings())} findings: scribbles (filled), grown 3D masks (outline)",
            f"mimic landmarks ({len(landmarks)}), labelled with their type",
            "synthetic T2*-like study, mimics drawn in"])
        zoom = SliceView(core, "Green", "Axial", (320, 300), volume)
        zoom.look_at(focus, field_of_view_mm=30)
        zoom.annotate("finding 1, zoomed", orientation_labels=False)
        three = ThreeDView(core, (320, 300))
        _add_surface(core, image, _white_matter(labels), "white matter", (0.95, 0.9, 0.8), 0.25, three)
        three.look(image.kji_to_ras((np.asarray(image.array.shape) - 1) / 2.0), azimuth=25, elevation=45,
                   distance=225)
        three.annotate("3D: masks and mimic landmarks")
        _style_points(logic.mimicsNode, (0.3, 0.85, 1.0), 6.0, (axial, zoom), three, labels_3d=False)
        left, top, bottom = axial.capture(), zoom.capture(), three.capture()
    write_png(_layout(left, top, bottom), out)


def _layout(left, top, bottom):
    """Main slice view on the left; zoom (green bar) over 3D view on the right."""
    right = np.concatenate([panel(top, "Green"), panel(bottom, "3D")], axis=0)
    return np.concatenate([panel(left, "Red"), right], axis=1)


def _style_segments(node, fill, outline):
    display = node.GetDisplayNode()
    display.SetOpacity2DFill(fill)
    display.SetVisibility2DFill(int(fill > 0))
    display.SetVisibility2DOutline(int(outline))
    display.SetOpacity2DOutline(1.0)
    display.SetSliceIntersectionThickness(2)


def _style_points(node, color, cross_mm, slice_views, three_d, labels_3d=True):
    """Thin crosses of `cross_mm` on the points in the slice views (the finding stays visible
    around them), spheres in the 3D view: two display nodes, each shown in its own views."""
    import slicer

    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    flat = node.GetDisplayNode()
    solid = node.GetScene().AddNewNodeByClass(flat.GetClassName())
    solid.CopyContent(flat)
    node.AddAndObserveDisplayNodeID(solid.GetID())
    for display, glyph, size, labels in ((flat, "Cross2D", cross_mm, True), (solid, "Sphere3D", 2.5, labels_3d)):
        display.SetSelectedColor(*color)
        display.SetColor(*color)
        display.SetGlyphType(getattr(slicer.vtkMRMLMarkupsDisplayNode, glyph))
        display.SetUseGlyphScale(0)
        display.SetGlyphSize(size)
        display.SetTextScale(2.5)
        display.SetPointLabelsVisibility(int(labels))
    for view in slice_views:
        flat.AddViewNodeID(view.node.GetID())
    solid.AddViewNodeID(three_d.node.GetID())


def _add_surface(core, volume, mask, name, color, opacity, three_d):
    """A smooth, translucent surface model of a mask (e.g. the brain), shown in the 3D view only."""
    from scipy import ndimage
    from vtk.util import numpy_support

    vtk = core.vtk
    smooth = ndimage.gaussian_filter(np.asarray(mask, np.float32), sigma=(0.7, 1.5, 1.5))
    grid = vtk.vtkImageData()
    grid.SetDimensions(*smooth.shape[::-1])
    grid.GetPointData().SetScalars(numpy_support.numpy_to_vtk(smooth.ravel(), deep=True))
    contour = vtk.vtkFlyingEdges3D()
    contour.SetInputData(grid)
    contour.SetValue(0, 0.5)
    contour.ComputeScalarsOff()
    to_ras = vtk.vtkTransform()
    to_ras.SetMatrix(core.slicer.util.vtkMatrixFromArray(volume.ijk_to_ras))
    move = vtk.vtkTransformPolyDataFilter()
    move.SetInputConnection(contour.GetOutputPort())
    move.SetTransform(to_ras)
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(move.GetOutputPort())
    normals.Update()
    model = core.scene.AddNewNodeByClass("vtkMRMLModelNode", name)
    model.SetAndObservePolyData(normals.GetOutput())
    model.CreateDefaultDisplayNodes()
    display = model.GetDisplayNode()
    display.SetColor(*color)
    display.SetScalarVisibility(0)
    display.SetOpacity(opacity)
    display.SetVisibility2D(0)
    display.AddViewNodeID(three_d.node.GetID())
    return model


def _white_matter(labels):
    """White matter with the deep grey matter and ventricles it encloses (demo phantom labels)."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(np.isin(labels, (5, 6)))


def _scribble(mask, k=None):
    """A rater's stroke inside a CMB: the central row of its section on slice `k` (default: largest)."""
    if k is None or not mask[k].any():
        k = int(np.bincount(np.argwhere(mask)[:, 0]).argmax())
    plane = mask[k]
    j = int(round(np.argwhere(plane)[:, 0].mean()))
    cols = np.flatnonzero(plane[j]) if plane[j].any() else np.flatnonzero(plane.any(axis=0))
    out = np.zeros(mask.shape, np.uint8)
    out[k, j, cols[len(cols) // 4: max(len(cols) // 4 + 1, 3 * len(cols) // 4)]] = 1
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "images"), help="folder of the two PNGs")
    parser.add_argument("--seed", type=int, default=0, help="demo study seed (default 0, as `cmb demo`)")
    parser.add_argument("--only", choices=("detector", "annotator"), help="render one of the two")
    args = parser.parse_args(argv)
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="cmb_screenshots_") as tmp:
        if args.only in (None, "detector"):
            core = SlicerCore(Path(tmp))
            detector_screenshot(core, Path(tmp), out / "slicer_detector.png", args.seed)
        if args.only in (None, "annotator"):
            core = SlicerCore(Path(tmp))
            annotator_screenshot(core, Path(tmp), out / "slicer_annotator.png", args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
