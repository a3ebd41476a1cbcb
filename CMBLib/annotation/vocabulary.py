"""Allowed values of the CMB annotation document (BOMBS metadata, mimics, study quality).

Every coded field stores a snake_case value from the lists below.  A field the rater
has not answered yet holds ``"unreviewed"``.  The JSON Schema
(`cmb_annotation.schema.json`) repeats these lists; `Testing/test_annotation_schema.py`
checks that both agree.  `TAXONOMY_MAP` documents how the fields of the labelling
platform taxonomy (`cmb_annotation_taxonomy.json`) map onto these values.
"""

SCHEMA_VERSION = "1.0.0"
TOOL_NAME = "CMBScribbleAnnotator"
UNREVIEWED = "unreviewed"

REVIEW_STATUSES = ("proposed", "confirmed", "rejected", UNREVIEWED)
CERTAINTIES = ("certain", "uncertain", UNREVIEWED)
SIZE_CLASSES = ("<5mm", "5-10mm", UNREVIEWED)
# What a grown mask can measure (a mask may exceed the BOMBS 10 mm limit).
MEASURED_SIZE_CLASSES = ("<5mm", "5-10mm", ">10mm")

# Location: the MARS regions of the location helper (issue 7), plus the BOMBS choices a
# rater makes for lobar CMBs (cortex / grey-white junction vs subcortical white matter),
# plus the combined capsule class of the labelling platform.  value -> group.
LOCATION_GROUPS = {
    "cortex_gwj": "lobar",
    "subcortical_wm": "lobar",
    "frontal": "lobar",
    "parietal": "lobar",
    "temporal": "lobar",
    "occipital": "lobar",
    "insula": "lobar",
    "basal_ganglia": "deep",
    "thalamus": "deep",
    "internal_capsule": "deep",
    "external_capsule": "deep",
    "internal_external_capsule": "deep",
    "corpus_callosum": "deep",
    "deep_periventricular_wm": "deep",
    "brainstem": "infratentorial",
    "cerebellum": "infratentorial",
}
LOCATIONS = tuple(LOCATION_GROUPS) + (UNREVIEWED,)
LOCATION_GROUP_VALUES = ("lobar", "deep", "infratentorial", UNREVIEWED)
SIDES = ("left", "right", "midline", "bilateral", UNREVIEWED)

CAUSES = ("caa", "hypertension", "trauma", "diffuse_axonal_injury", "trauma_dai", "radiotherapy",
          "other", UNREVIEWED)
MIMIC_TYPES = ("basal_ganglia_calcification", "other_calcification", "vessel_flow_void", "cavernoma",
               "telangiectasia", "iron_deposit", "bone_air_partial_volume", "haemorrhagic_metastasis",
               "other")
INCLUSIONS = ("include", "exclude", UNREVIEWED)
EXCLUSION_REASONS = ("", "radiological_read_not_possible", "segmentation_not_possible_artefact", "other")
QUALITIES = ("sufficient", "insufficient_t2s_swi", "insufficient_other_sequences",
             "insufficient_all_sequences", UNREVIEWED)
ARTEFACTS = ("blur", "motion", "metal", "faulty_acquisition", "wrong_image_type", "other")
SEQUENCES = ("T2starw", "SWI", "QSM")
FINDING_SOURCES = ("rater", "detector", "import")

# Human-readable labels (for forms and tables).
LABELS = {
    "cortex_gwj": "Cortex / grey-white junction",
    "subcortical_wm": "Subcortical white matter",
    "basal_ganglia": "Basal ganglia",
    "internal_capsule": "Internal capsule",
    "external_capsule": "External capsule",
    "internal_external_capsule": "Internal / external capsule",
    "corpus_callosum": "Corpus callosum",
    "deep_periventricular_wm": "Deep / periventricular white matter",
    "caa": "CAA",
    "diffuse_axonal_injury": "Diffuse axonal injury",
    "trauma_dai": "Trauma with DAI",
    "basal_ganglia_calcification": "Basal-ganglia calcification",
    "vessel_flow_void": "Vessel / flow void",
    "bone_air_partial_volume": "Bone / air partial volume",
    "haemorrhagic_metastasis": "Haemorrhagic metastasis",
    "insufficient_t2s_swi": "Insufficient (T2* / SWI)",
    "insufficient_other_sequences": "Insufficient (other sequences)",
    "insufficient_all_sequences": "Insufficient (all sequences)",
}


def label(value: str) -> str:
    """Readable text for a vocabulary value: 'basal_ganglia' -> 'Basal ganglia'."""
    if value in LABELS:
        return LABELS[value]
    text = str(value).replace("_", " ")
    return text[:1].upper() + text[1:]


def location_group(location: str) -> str:
    """'lobar' | 'deep' | 'infratentorial' for a location value; 'unreviewed' otherwise."""
    return LOCATION_GROUPS.get(location, UNREVIEWED)


# Labelling-platform taxonomy (cmb_annotation_taxonomy.json) -> this document.
# Keys are "<taxonomy object or section>/<attribute name>"; values say where the answer
# goes and how each option maps.  Archived attributes are mapped too, for old exports.
TAXONOMY_MAP = {
    "CMB/Uncertain": ("findings[].certainty", {True: "uncertain", False: "certain"}),
    "CMB/<5mm": ("findings[].size_class", {True: "<5mm", False: "5-10mm"}),
    "CMB/Location": ("findings[].location", {
        "Cortex / grey-white junction": "cortex_gwj",
        "Basal ganglia grey matter": "basal_ganglia",
        "Subcortical white matter": "subcortical_wm",
        "Internal and external capsule": "internal_external_capsule",
        "Thalamus": "thalamus",
        "Brainstem": "brainstem",
        "Cerebellum": "cerebellum",
    }),
    "CMB/Cause": ("findings[].cause", {
        "Trauma": "trauma", "Hypertension": "hypertension", "DAI": "diffuse_axonal_injury",
        "Trauma-DAI": "trauma_dai", "CAA": "caa", "Radiotherapy": "radiotherapy", "Other": "other",
    }),
    "CMB/Other": ("findings[].cause_other", "text"),
    "CMB/Possible Cause of CMB": ("findings[].cause_other", "text (archived)"),
    "CMB/Multiple": ("findings[].multiple", "bool"),
    "CMB/Problematic CMB": ("findings[].problematic", "bool (archived)"),
    "CMB/Why problematic/uncertain": ("findings[].problem_reason", "text (archived)"),
    "Mimics/Type": ("mimics[].type", {
        "cavernoma": "cavernoma", "teleangectasis": "telangiectasia",
        "Basal ganglia calcifications": "basal_ganglia_calcification", "Other": "other",
    }),
    "Mimics/Other": ("mimics[].type_other", "text"),
    "Basal ganglia calcification/Location": ("mimics[].side", {
        "Left": "left", "Right": "right", "L+R": "bilateral",
    }),
    "Additional Findings/Main finding": ("other_findings[].finding", "text"),
    "Additional Findings/Other": ("other_findings[].comment", "text"),
    "study/Include": ("study.inclusion + study.exclusion_reason", {
        "yes": ("include", ""),
        "radiological read not possible": ("exclude", "radiological_read_not_possible"),
        "segmentation not possible due to artifact": ("exclude", "segmentation_not_possible_artefact"),
        "Other": ("exclude", "other"),
    }),
    "study/Excluded": ("study.inclusion", {True: "exclude", False: "include"}),
    "study/Why excluded": ("study.exclusion_comment", "text (archived)"),
    "study/Study quality": ("study.quality", {
        "sufficient": "sufficient",
        "Insufficient quality (T2* / SWI)": "insufficient_t2s_swi",
        "Insufficient quality (other sequences)": "insufficient_other_sequences",
        "Insufficient quality (all sequences)": "insufficient_all_sequences",
    }),
    "study/Comments": ("study.comment", "text"),
    "series/Image Quality": ("study.artefacts[]", {
        "Blurry": "blur", "Faulty acquisition": "faulty_acquisition", "Wrong image type": "wrong_image_type",
        "metal": "metal", "Other artefacts": "other",
    }),
    "series/Comments": ("study.image_comment", "text"),
}

# Keyboard shortcuts of the metadata form (Slicer module, pressed with Alt): key -> (field, value).
# Not F, E, V, H: Alt+F/E/V/H open Slicer's File/Edit/View/Help menus (hypertension is B,
# blood pressure).  Checked by Testing/test_slicer_api_conformance.py.
SHORTCUTS = {
    "C": ("certainty", "certain"),
    "U": ("certainty", "uncertain"),
    "S": ("size_class", "<5mm"),
    "L": ("size_class", "5-10mm"),
    "A": ("cause", "caa"),
    "B": ("cause", "hypertension"),
    "T": ("cause", "trauma"),
    "M": ("multiple", True),
    "Y": ("review_status", "confirmed"),
    "R": ("review_status", "rejected"),
}
