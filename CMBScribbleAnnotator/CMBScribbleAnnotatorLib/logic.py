"""State of one annotated study in Slicer, kept in step with the CMBLib document.

`AnnotatorLogic` owns the annotation document (a dict, see
`CMBLib.annotation.document`) and three nodes: the "scribbles" segmentation (one segment
per finding), the "masks" segmentation (grown masks; segment tags hold the metadata)
and the "mimics" point list.  Every change goes through a method here, which updates
the document and then autosaves (the widget debounces the calls).  Computations are
CMBLib calls: `generate_masks`, `export_subject`, `import_subject`, `SessionStore`.
"""
import numpy as np
import slicer
import vtk

from CMBLib.annotation.dataset import export_subject, import_subject, segment_tags
from CMBLib.annotation.detections import add_detections, add_findings
from CMBLib.annotation.document import (
    complete_document,
    finding_index,
    new_document,
    new_finding,
    next_label,
    set_field,
    touch,
    validate_document,
)
from CMBLib.annotation.masks import ensure_findings, generate_masks, measure_finding, suggest_locations
from CMBLib.annotation.session import SessionStore, volume_key
from CMBLib.errors import CMBError
from CMBLib.validation import label_ids

from . import nodes

SCRIBBLES_NAME = "CMB scribbles"
MASKS_NAME = "CMB masks"
MIMICS_NAME = "CMB mimics"
DETECTOR_LABEL_TAG = "CMBDetector.Label"


class AnnotatorLogic:
    """Annotation state of the selected volume; all methods are plain Python calls."""

    def __init__(self, sessionRoot=None, rater="", growerFactory=None):
        self.store = SessionStore(sessionRoot)
        self.rater = rater
        self.growerFactory = growerFactory
        self._resetTracking()
        self.volumeNode = None
        self.volume = None
        self.key = None
        self.document = None
        self.scribblesNode = None
        self.masksNode = None
        self.mimicsNode = None
        self.locator = None
        self.locatorNote = ""

    # --- set-up --------------------------------------------------------------------------
    def setVolume(self, volumeNode):
        """Start annotating `volumeNode`: fresh document and nodes; returns the session key."""
        self.volumeNode = volumeNode
        self.volume = nodes.volumeFromNode(volumeNode)
        self.key = volume_key(self.volume)
        self.locator, self.locatorNote = None, ""
        self._resetTracking()
        self.document = new_document(rater=self.rater)
        self.document["study"]["image"] = volumeNode.GetName()
        self.scribblesNode = self._freshNode("vtkMRMLSegmentationNode", SCRIBBLES_NAME, self.scribblesNode)
        self.masksNode = self._freshNode("vtkMRMLSegmentationNode", MASKS_NAME, self.masksNode)
        self.mimicsNode = self._freshNode("vtkMRMLMarkupsFiducialNode", MIMICS_NAME, self.mimicsNode)
        return self.key

    def _resetTracking(self):
        self._saved = {"scribbles": {}, "masks": {}}   # label -> segment modified time at the last save
        self._grower = None
        self.grown = {}            # label -> GrownCMB of the live mask
        self._grownAt = {}         # label -> scribble modified time it was grown from
        self.tolerances = {}       # label -> tolerance shown

    def _freshNode(self, className, name, previous):
        """A new node for the new study; `previous` (this logic's node of the last study) leaves
        the scene.  Nodes of other logics (a second annotator, a restored copy) are left alone."""
        if previous is not None and previous.GetScene() is not None:
            previous.GetScene().RemoveNode(previous)
        if className == "vtkMRMLSegmentationNode":
            return nodes.newSegmentation(name, self.volumeNode)
        node = slicer.mrmlScene.AddNewNodeByClass(className, name)
        node.CreateDefaultDisplayNodes()
        return node

    def clear(self):
        """Forget the study (the scene was closed: its nodes are gone)."""
        self.volumeNode = self.volume = self.key = self.document = None
        self.scribblesNode = self.masksNode = self.mimicsNode = None
        self.locator, self.locatorNote = None, ""
        self._resetTracking()

    def hasSavedSession(self):
        return self.key is not None and self.store.has(self.key)

    def savedSessionInfo(self):
        return self.store.info(self.key) if self.key else {}

    # --- findings ------------------------------------------------------------------------
    def findings(self):
        return self.document["findings"] if self.document else []

    def addFinding(self, **fields):
        """New finding (next free label) with an empty scribble segment; returns its label."""
        label = next_label(self.document)
        self.document["findings"].append(new_finding(label, rater=self.rater, **fields))
        self.document["findings"].sort(key=lambda f: int(f["label"]))
        nodes.addFindingSegment(self.scribblesNode, label)
        touch(self.document)
        return label

    def deleteFinding(self, label):
        index = finding_index(self.document, label)
        del self.document["findings"][index]
        nodes.removeFindingSegment(self.scribblesNode, label)
        nodes.removeFindingSegment(self.masksNode, label)
        if self._grower is not None and int(label) in self.grown:
            self._grower.remove(int(label))
        self.grown.pop(int(label), None)
        touch(self.document)

    def setField(self, label, field, value):
        """Set one metadata field (checked against the schema); updates the mask segment tags."""
        set_field(self.document, label, field, value, rater=self.rater)
        self._tagMasks([label])

    def setStudyField(self, field, value):
        self.document["study"][field] = value
        validate_document(self.document)
        touch(self.document)

    def findingCentre(self, label):
        """RAS centre of a finding: its mask or detection centre, else its scribble's centre."""
        finding = self.document["findings"][finding_index(self.document, label)]
        if finding.get("centre_ras") is not None:
            return finding["centre_ras"]
        segmentId = nodes.segmentIdForLabel(self.scribblesNode, label)
        if segmentId is None:
            return None
        voxels = nodes.segmentVoxels(self.scribblesNode, segmentId)
        if len(voxels) == 0:
            return None
        return list(self.volume.kji_to_ras(voxels.mean(axis=0)))

    def scribbleLabelmap(self):
        """Scribbles as an instance label map (CMBLib Volume on the image grid)."""
        return self.volume.with_array(nodes.labelmapFromSegmentation(self.scribblesNode, self.volumeNode))

    def maskLabelmap(self):
        return self.volume.with_array(nodes.labelmapFromSegmentation(self.masksNode, self.volumeNode))

    # --- masks ---------------------------------------------------------------------------
    def generateMasks(self, labels=None, progress=None, cancel=None, **growOptions):
        """Grow masks for `labels` (default all) into the masks segmentation; returns a note."""
        scribbles = self.scribbleLabelmap()
        if not np.any(scribbles.array):
            return "no scribble painted yet"
        mask, _ = generate_masks(self.volume, scribbles, self.document, labels=labels,
                                 mask=self.maskLabelmap(), progress=progress, cancel=cancel, **growOptions)
        note = self._suggestLocations()
        present = set(label_ids(mask.array))
        changed = [int(f["label"]) for f in self.document["findings"]
                   if labels is None or int(f["label"]) in set(labels)]
        for label in changed:
            if label not in present:
                nodes.removeFindingSegment(self.masksNode, label)
        nodes.setSegmentsFromLabelmap(self.masksNode, self.volumeNode, mask.array,
                                      labels=[v for v in changed if v in present])
        self._tagMasks([int(f["label"]) for f in self.document["findings"]])
        self.markScribblesSeen()
        return note

    def _suggestLocations(self):
        """Location suggestions; the atlas registration runs once per volume."""
        if self.locator is None and not self.locatorNote:
            try:
                from CMBLib.location import Locator
                self.locator = Locator(self.volume)
            except ImportError:
                self.locatorNote = "location helper not installed"
            except CMBError as exc:
                self.locatorNote = f"no location suggested: {exc}"
        if self.locator is None:
            return self.locatorNote
        _, note = suggest_locations(self.volume, self.document, locator=self.locator)
        if note:
            self.locator, self.locatorNote = None, note   # do not retry a failed registration
        return note

    def _tagMasks(self, labels):
        """Mask segment tags = the finding metadata (as in the exported .seg.nrrd)."""
        if self.masksNode is None:
            return
        wanted = {int(v) for v in labels}
        for finding in self.document["findings"]:
            if int(finding["label"]) in wanted:
                nodes.setSegmentTags(self.masksNode, finding["label"], segment_tags(finding))

    # --- detector hand-over --------------------------------------------------------------
    def addDetections(self, records, detectorMask=None):
        """Detection records (CMBLib.detection) as findings with status 'proposed'.

        `detectorMask`: array [k, j, i] on the volume grid with the detector's labels; it
        goes into the masks segmentation under the new labels.  Returns {detector label:
        finding label}.
        """
        mapping = add_detections(self.document, records)
        mask = None
        if detectorMask is not None:
            mask = np.zeros(self.volume.array.shape, np.uint16)
            for old, new in mapping.items():
                mask[np.asarray(detectorMask) == old] = new
        self._placeDetections(mapping, mask)
        return mapping

    def importDetectorFindings(self, segmentationNode, volumeNode, findings):
        """CMBDetector's hand-over: findings (review status 'confirmed' or 'proposed') and
        its segmentation, whose segments (tag ``CMBDetector.Label``) are their masks."""
        if self.volumeNode is not volumeNode or self.document is None:
            self.setVolume(volumeNode)
        mapping = add_findings(self.document, findings)
        mask = np.zeros(self.volume.array.shape, np.uint16)
        segmentation = segmentationNode.GetSegmentation()
        for segmentId in segmentation.GetSegmentIDs():
            value = vtk.mutable("")
            if not segmentation.GetSegment(segmentId).GetTag(DETECTOR_LABEL_TAG, value):
                continue
            try:
                label = mapping.get(int(str(value)))
            except ValueError:
                continue
            if label is not None:
                k, j, i = nodes.segmentVoxels(segmentationNode, segmentId).T
                free = mask[k, j, i] == 0                      # the first finding keeps a shared voxel
                mask[k[free], j[free], i[free]] = label
        self._placeDetections(mapping, mask)
        return mapping

    def _placeDetections(self, mapping, mask):
        """A one-voxel scribble at each new finding's centre (so "Generate masks" can grow
        it) and the detector's masks, when given, in the masks segmentation."""
        new = set(mapping.values())
        scribbles = np.zeros(self.volume.array.shape, np.uint16)
        for finding in self.document["findings"]:
            if int(finding["label"]) in new and finding.get("centre_ras") is not None:
                i, j, k = np.round(self.volume.ras_to_voxel(finding["centre_ras"])).astype(int)
                if all(0 <= v < n for v, n in zip((k, j, i), scribbles.shape)):
                    scribbles[k, j, i] = finding["label"]
        nodes.setSegmentsFromLabelmap(self.scribblesNode, self.volumeNode, scribbles)
        for label in new:
            nodes.addFindingSegment(self.scribblesNode, label)
        if mask is not None and np.any(mask):
            nodes.setSegmentsFromLabelmap(self.masksNode, self.volumeNode, mask)
            for finding in self.document["findings"]:
                if int(finding["label"]) in new and finding.get("mask") is None:
                    measure_finding(self.document, finding["label"], self.volume.with_array(mask))
        self._tagMasks(sorted(new))
        self.markScribblesSeen()

    # --- mimics --------------------------------------------------------------------------
    def syncMimics(self):
        """Read the mimic point list into the document."""
        self.document["mimics"] = nodes.mimicsFromMarkups(self.mimicsNode)
        touch(self.document)

    # --- autosave / restore --------------------------------------------------------------
    def autosave(self):
        """Save what changed since the last save (document, changed findings' scribbles and
        masks) into the session folder; returns the folder."""
        if self.document is None:
            return None
        self.syncMimics()
        layers = {}
        for layer, node in (("scribbles", self.scribblesNode), ("masks", self.masksNode)):
            states = nodes.segmentStates(node)
            saved = self._saved[layer]
            changed = {label: nodes.segmentVoxels(node, segmentId)
                       for label, segmentId, mtime in states if saved.get(label) != mtime}
            layers[layer] = (changed, {label for label, _, _ in states}, states)
        painted = [label for label, kji in layers["scribbles"][0].items() if len(kji)]
        ensure_findings(self.document, painted, self.rater)
        # The schema check runs on the first save of a study; later every edit is checked where
        # it is made (setField, setStudyField; findings and mimics come from CMBLib's constructors).
        first = not any(self._saved.values())
        folder = self.store.save_segments(self.key, self.document,
                                          {layer: value[:2] for layer, value in layers.items()},
                                          self.volume.array.shape, self.volume.ijk_to_ras,
                                          volume_name=self.volumeNode.GetName(), validate=first)
        for layer, (_, _, states) in layers.items():
            self._saved[layer] = {label: mtime for label, _, mtime in states}
        return folder

    # --- live masks ----------------------------------------------------------------------
    def grower(self):
        """The interactive grower of the current volume (made on first use)."""
        if self._grower is None:
            factory = self.growerFactory
            if factory is None:
                from CMBLib.growing import Grower as factory
            self._grower = factory(self.volume)
        return self._grower

    def markScribblesSeen(self):
        """Scribbles as they are now count as grown: live masks react only to later strokes
        (after a restore, an import, a hand-over or batch growing, whose masks stay)."""
        self._grownAt = {label: mtime for label, _, mtime in nodes.segmentStates(self.scribblesNode)}

    def changedScribbles(self):
        """Labels whose scribble changed since its live mask was grown."""
        return [label for label, _, mtime in nodes.segmentStates(self.scribblesNode)
                if self._grownAt.get(label) != mtime]

    def liveGrow(self, labels=None):
        """Grow the live mask of `labels` (default: those whose scribble changed) and show it;
        returns {label: GrownCMB} of those grown."""
        states = {label: (segmentId, mtime) for label, segmentId, mtime in nodes.segmentStates(self.scribblesNode)}
        todo = self.changedScribbles() if labels is None else [int(v) for v in labels]
        out = {}
        for label in todo:
            if label not in states:
                continue
            segmentId, mtime = states[label]
            seeds = nodes.segmentVoxels(self.scribblesNode, segmentId)
            self._grownAt[label] = mtime
            if len(seeds) == 0:
                if self.grown.pop(label, None) is not None:      # scribble erased: its live mask goes
                    self.grower().remove(label)
                    nodes.removeFindingSegment(self.masksNode, label)
                continue
            grown = self.grower().grow(label, seeds)
            self.grown[label] = out[label] = grown
            self.showMask(label, self.tolerances.get(label))
        return out

    def showMask(self, label, tolerance=None):
        """Show finding `label`'s live mask at `tolerance` (default: the grower's choice)."""
        grown = self.grown[int(label)]
        if tolerance is None:
            tolerance = grown.tolerance
        else:
            self.tolerances[int(label)] = float(tolerance)
        nodes.setSegmentFromBox(self.masksNode, self.volumeNode, label, grown.mask(tolerance), grown.box)
        self._tagMasks([label])
        return tolerance

    def restore(self):
        """Load the autosaved state of the current volume into the nodes."""
        document, scribbles, masks = self.store.load(self.key)
        self._load(document, scribbles.array, None if masks is None else masks.array)

    def discardSession(self):
        if self.key:
            self.store.discard(self.key)

    def _load(self, document, scribbles, masks):
        self.document = document
        nodes.setSegmentsFromLabelmap(self.scribblesNode, self.volumeNode, scribbles)
        for finding in document["findings"]:
            nodes.addFindingSegment(self.scribblesNode, finding["label"])
        if masks is not None:
            nodes.setSegmentsFromLabelmap(self.masksNode, self.volumeNode, masks)
            self._tagMasks([int(f["label"]) for f in document["findings"]])
        nodes.mimicsToMarkups(self.mimicsNode, document["mimics"])
        self.markScribblesSeen()

    # --- dataset -------------------------------------------------------------------------
    def exportStudy(self, dataset, subject, overwrite=False, sequence=None, progress=None):
        """Write the study into a BIDS-derivatives dataset; returns the file paths."""
        self.syncMimics()
        scribbles = self.scribbleLabelmap()
        doc = complete_document(self.document, subject=subject, sequence=sequence or "", rater=self.rater)
        ensure_findings(doc, [int(v) for v in np.unique(scribbles.array) if v], self.rater)
        mask = self.maskLabelmap()
        return export_subject(dataset, subject, self.volume, scribbles, mask, doc, sequence=sequence,
                              overwrite=overwrite, progress=progress)

    def importStudy(self, dataset, subject):
        """Load a subject of a dataset: image volume node + scribbles, masks, mimics, document."""
        return self.loadStudy(self.readStudy(dataset, subject))

    @staticmethod
    def readStudy(dataset, subject):
        """Read a subject (no node touched: a bad dataset leaves the open study as it is)."""
        return import_subject(dataset, subject)

    def loadStudy(self, study):
        """Nodes for a study read by `readStudy`; returns the new volume node."""
        volumeNode = slicer.util.addVolumeFromArray(study.image.array, study.image.ijk_to_ras,
                                                    name=f"sub-{study.subject}")
        self.setVolume(volumeNode)
        self._load(study.document, study.scribbles.array, study.mask.array)
        return volumeNode
