#!/usr/bin/env python
"""Mutation testing of the modules where a silent bug costs most (issue 27).

Runs mutmut (the `mutation` extra: ``pip install -e ".[mutation]"``, Python >= 3.10) on one
module at a time, each against only the test files that exercise it, and prints a table:
mutants, killed, survived, timeout, % killed, and every survivor as file:line and mutation.

    python scripts/mutation_test.py --module metrics            # one module
    python scripts/mutation_test.py --changed origin/main        # modules a change touches
    python scripts/mutation_test.py --all --jobs 1 --report build/mutation.md

Every run works in a fresh copy of the work tree (tracked and untracked, not ignored files)
under ``--workdir``; the source files are never mutated in place, so people and tools that
share the work tree are not disturbed.  mutmut keeps its own state in that copy
(``WORKDIR/MODULE/mutants``), e.g. ``cd WORKDIR/metrics && mutmut show NAME`` shows a diff.

Mutation testing is CPU-heavy and not part of CI: run it niced (the script nices itself to
15 unless ``--nice 0``) and with ``--jobs 1`` on a shared machine.

Counting: "killed" includes mutants whose tests failed or crashed; "timeout" mutants made the
tests run past mutmut's per-mutant limit (``--timeout-multiplier`` x the tests' clean time
plus a constant) and count as detected; "% killed" is (killed + timeout) / mutants.
"Equivalent" survivors are the ones listed in EQUIVALENT below with the reason no test can
tell them from the original; the last column, "score", leaves them out of the denominator.

`--rerun-survivors` reruns only the survivors of the earlier run, after tests were added: the verdicts
of the other mutants are kept (mutmut itself forgets them when the module's test files change).  mutmut
maps tests to the functions they call when it first sees them: a test *function* added later is mapped,
but an existing test that was only extended keeps its old mapping, so write new cases as new test
functions (or run the module afresh).  The tests run with one thread per math library
(OMP_NUM_THREADS=1 ...): a mutant forked after torch's OpenMP team started hangs in its barrier without
using CPU time, so mutmut's CPU-time limit never ends it.

Not mutated: the text of raised exceptions (lines matching ``raise X(``), whose wording no
test should pin letter by letter (the exception type and the condition that raises it are
mutated like everything else).
"""
from __future__ import annotations

import argparse
import ast
import datetime
import difflib
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What the copy needs for the tests to run: the library, the tests and what they import.
COPY = ("CMBLib", "Testing", "training", "benchmarks", "scripts", "CMBDetector", "CMBScribbleAnnotator",
        "pyproject.toml")

# Module name -> files to mutate, the test files that exercise them, and (optionally) fnmatch
# patterns of mutmut's mutant names to keep (a part of a file: e.g. slice geometry only).
MODULES = {
    "metrics": {
        # matching rules (VALDO, one-to-one, touch), prediction / reference pairing and the elements
        # of a mask (VALDO binarisation, 26-connected components, centres); not yet the per-case and
        # aggregate figures (case_metrics.py, aggregate.py, froc.py), the report or the CLI's folder walk
        "files": ["CMBLib/metrics/matching.py", "CMBLib/metrics/pairing.py", "CMBLib/metrics/components.py"],
        "tests": ["Testing/test_metrics_rules.py", "Testing/test_metrics_properties.py",
                  "Testing/test_metrics_valdo_reference.py", "Testing/test_metrics_aggregate.py",
                  "Testing/test_metrics_cli.py", "Testing/test_metrics_exact.py", "Testing/test_metrics_mutants.py"],
    },
    "gate": {
        "files": ["CMBLib/detection/finetune_gate.py"],
        # the fast tests of the rule (the end-to-end runs of test_finetune.py take minutes each)
        "tests": ["Testing/test_finetune.py::test_threshold_rule_and_comparison",
                  "Testing/test_finetune.py::test_gate_decisions",
                  "Testing/test_finetune.py::test_same_weights_compares_every_tensor",
                  "Testing/test_finetune_gate_rules.py", "Testing/test_finetune_gate_mutants.py"],
        # the gate: pooled scoring and the decision (not case_labels / _location_filter / _locate, which
        # run the detection pipeline: test_finetune.py::test_validation_runs_the_steps_of_cmb_detect)
        "functions": ["CMBLib.detection.finetune_gate.x_" + f + "__mutmut_*" for f in
                      ("score", "choose_threshold", "row_at", "beats", "same_weights", "decide", "fmt", "figures",
                       "outcome_text")],
    },
    "location_filter": {
        "files": ["CMBLib/detection/location_filter.py"],
        # the deep-midline-veins zone and the symmetric-pairs zone (PairZone)
        "tests": ["Testing/test_detection_location_filter.py", "Testing/test_location_pairs.py",
                  "Testing/test_location_filter_mutants.py"],
    },
    "growing": {
        "files": ["CMBLib/growing/engine.py"],
        "tests": ["Testing/test_growing_engine.py", "Testing/test_growing_internals.py",
                  "Testing/test_growing_engine_mutants.py"],
    },
    "annotation_export": {
        "files": ["CMBLib/annotation/dataset.py"],
        "tests": ["Testing/test_annotation_dataset.py", "Testing/test_annotation_dataset_mutants.py"],
    },
    "dark_spots": {
        # the native patch stage's candidates (issue 28): dip map, slice axis, maxima and suppression
        "files": ["CMBLib/detection/dark_spots.py"],
        "tests": ["Testing/test_detection_native_stage.py"],
    },
    "dicom_geometry": {
        "files": ["CMBLib/dicom/series.py"],
        "tests": ["Testing/test_dicom_io.py", "Testing/test_dicom_geometry_mutants.py"],
        # slice geometry: stacking, ordering, spacing and direction of a series
        "functions": ["CMBLib.dicom.series.x_read_series__mutmut_*",
                      "CMBLib.dicom.series.x__runs_against_normal__mutmut_*",
                      "CMBLib.dicom.series.x__natural_key__mutmut_*"],
    },
}

# (components.py) label_elements numbers the elements 1..n, so every number up to n has voxels
SAME_ELEMENTS = ("the labelled map holds every element 1..n (label_elements numbers them so): bincount is n + 1 "
                 "long anyway")

# (location_filter.py) Zone / PairZone methods get float arrays from zone_of
FLOAT_POINTS = ("integer points give the same numbers in every comparison and product with the float bounds, "
                "mirror and matrices; zone_of passes floats")

# (annotation/dataset.py)
HEADER = "only the header line is read here, which holds no quoted line break: the same column names"
BACKUP = "the backup folder's parent is the staging folder, which export_subject has made"

STAGING = "a name inside the staging folder, which is deleted afterwards: any distinct name does"

RSTRIP = "rstrip takes a set of characters; X never ends a formatted number"

# Survivors no test can kill, by mutant name, with the line the mutation must show (so an
# explanation never silently moves to another mutant when the source changes) and the reason.
EQUIVALENT: dict[str, tuple[str, str]] = {
    "CMBLib.annotation.dataset.x__stage__mutmut_176": (
        '_stage_text(tmp, "PARTICIPANTS.TSV"',
        STAGING),
    "CMBLib.annotation.dataset.x__stage__mutmut_188": (
        '_stage_text(tmp, "XXcmb_table.tsvXX"',
        STAGING),
    "CMBLib.annotation.dataset.x__stage__mutmut_189": (
        '_stage_text(tmp, "CMB_TABLE.TSV"',
        STAGING),
    "CMBLib.annotation.dataset.x_export_subject__mutmut_114": (
        "shutil.rmtree(tmp, ignore_errors=None)",
        "removing the staging folder succeeds: there is no error to ignore or raise"),
    "CMBLib.annotation.dataset.x_export_subject__mutmut_116": (
        "shutil.rmtree(tmp, )",
        "removing the staging folder succeeds: there is no error to ignore or raise"),
    "CMBLib.annotation.dataset.x_export_subject__mutmut_117": (
        "shutil.rmtree(tmp, ignore_errors=False)",
        "removing the staging folder succeeds: there is no error to ignore or raise"),
    "CMBLib.annotation.dataset.x_export_subject__mutmut_124": (
        'report(progress, 2.0, f"exported',
        "report clamps the fraction to [0, 1]: 2.0 is reported as 1.0"),
    "CMBLib.annotation.dataset.x__cell__mutmut_16": (
        'rstrip("XX0XX")',
        RSTRIP),
    "CMBLib.annotation.dataset.x__cell__mutmut_17": (
        'rstrip("XX.XX")',
        RSTRIP),
    "CMBLib.annotation.dataset.x__tag_text__mutmut_21": (
        'encode("ASCII"',
        "codec names are case-insensitive"),
    "CMBLib.annotation.dataset.x__tag_text__mutmut_25": (
        'decode("ASCII")',
        "codec names are case-insensitive"),
    "CMBLib.annotation.dataset.x_export_subject__mutmut_19": (
        'or "t2starw")',
        "sequence_name lower-cases the name"),
    "CMBLib.annotation.dataset.x_export_subject__mutmut_20": (
        'or "T2STARW")',
        "sequence_name lower-cases the name"),
    "CMBLib.annotation.dataset.x_export_subject__mutmut_70": (
        "make_temp_dir(root, None)",
        "the staging folder's name: it is removed whether the export succeeds or fails"),
    "CMBLib.annotation.dataset.x_export_subject__mutmut_108": (
        "shutil.rmtree(tmp, ignore_errors=None)",
        "removing the staging folder succeeds: there is no error to ignore or raise"),
    "CMBLib.annotation.dataset.x_export_subject__mutmut_110": (
        "shutil.rmtree(tmp, )",
        "removing the staging folder succeeds: there is no error to ignore or raise"),
    "CMBLib.annotation.dataset.x_export_subject__mutmut_111": (
        "shutil.rmtree(tmp, ignore_errors=False)",
        "removing the staging folder succeeds: there is no error to ignore or raise"),
    "CMBLib.annotation.dataset.x__stage__mutmut_5": (
        'raw_tmp = tmp / "XXrawXX"',
        STAGING),
    "CMBLib.annotation.dataset.x__stage__mutmut_6": (
        'raw_tmp = tmp / "RAW"',
        STAGING),
    "CMBLib.annotation.dataset.x__stage__mutmut_10": (
        'deriv_tmp = tmp / "XXderivXX"',
        STAGING),
    "CMBLib.annotation.dataset.x__stage__mutmut_11": (
        'deriv_tmp = tmp / "DERIV"',
        STAGING),
    "CMBLib.annotation.dataset.x__stage__mutmut_119": (
        'path.name + "XX.XX"',
        STAGING),
    "CMBLib.annotation.dataset.x__stage__mutmut_175": (
        '"XXparticipants.tsvXX"',
        STAGING),
    "CMBLib.annotation.dataset.x__stage__mutmut_121": (
        "text), path, True))",
        "a description is staged only when it does not exist, so replacing never meets one (short of a race)"),
    "CMBLib.annotation.dataset.x__commit__mutmut_12": (
        'tmp / "XXoldXX"',
        "the backups' folder lies inside the staging folder, which is deleted afterwards: any name does"),
    "CMBLib.annotation.dataset.x__commit__mutmut_13": (
        'tmp / "OLD"',
        "the backups' folder lies inside the staging folder, which is deleted afterwards: any name does"),
    "CMBLib.annotation.dataset.x__stage_text__mutmut_17": (
        'encoding="UTF-8"',
        "codec names are case-insensitive"),
    "CMBLib.annotation.dataset.x__merge_rows__mutmut_19": (
        'encoding="UTF-8"',
        "codec names are case-insensitive"),
    "CMBLib.annotation.dataset.x_read_tsv__mutmut_12": (
        'encoding="UTF-8"',
        "codec names are case-insensitive"),
    "CMBLib.annotation.dataset.x__merge_rows__mutmut_12": (
        "with open(path, newline=None,",
        HEADER),
    "CMBLib.annotation.dataset.x__merge_rows__mutmut_15": (
        'with open(path, encoding="utf-8")',
        HEADER),
    "CMBLib.annotation.dataset.x__merge_rows__mutmut_52": (
        'extrasaction="IGNORE"',
        'csv checks the value case-insensitively and raises only for "raise": the same as "ignore"'),
    "CMBLib.annotation.dataset.x_cmb_table_rows__mutmut_19": (
        "TABLE_COLUMNS[1:13]",
        "the extra column, x_ras, is set again from centre_ras just after"),
    "CMBLib.annotation.dataset.x__commit__mutmut_15": (
        "backup.parent.mkdir(parents=None",
        BACKUP),
    "CMBLib.annotation.dataset.x__commit__mutmut_17": (
        "backup.parent.mkdir(exist_ok=True)",
        BACKUP),
    "CMBLib.annotation.dataset.x__commit__mutmut_19": (
        "backup.parent.mkdir(parents=False",
        BACKUP),
    "CMBLib.annotation.dataset.x_list_subjects__mutmut_17": (
        'not p.name.startswith("XX.XX")',
        'a name that starts with "sub-" never starts with ".": the check is redundant, either way'),
    "CMBLib.annotation.dataset.x_import_subject__mutmut_39": (
        'or "t2starw"',
        "sequence_name lower-cases the name"),
    "CMBLib.annotation.dataset.x_import_subject__mutmut_40": (
        'or "T2STARW"',
        "sequence_name lower-cases the name"),
    "CMBLib.dicom.series.x_read_series__mutmut_245": (
        '"TransferSyntaxUID", None) or "")',
        'an absent transfer syntax gives None or "", that is "", as "" or ""'),
    "CMBLib.dicom.series.x_read_series__mutmut_292": (
        '"RescaleSlope", None) or 1)',
        "an absent slope gives None or 1, that is 1"),
    "CMBLib.dicom.series.x_read_series__mutmut_306": (
        '"RescaleIntercept", None) or 0)',
        "an absent intercept gives None or 0, that is 0"),
    "CMBLib.dicom.series.x_read_series__mutmut_13": (
        '"SOPClassUID", None))',
        'str(None), "None", is no enhanced SOP class, as "" is not'),
    "CMBLib.dicom.series.x_read_series__mutmut_20": (
        '"SOPClassUID", "XXXX"))',
        '"XXXX" is no enhanced SOP class, as "" is not'),
    "CMBLib.dicom.series.x_read_series__mutmut_26": (
        '"NumberOfFrames", None) or 1)',
        "an absent NumberOfFrames gives None or 1, that is 1"),
    "CMBLib.dicom.series.x_read_series__mutmut_55": (
        '"XX XX".join',
        "the joiner only separates the ImageType values; LOCALIZER is one value"),
    "CMBLib.dicom.series.x_read_series__mutmut_146": (
        "np.argsort(along, kind=None)",
        "slice positions closer than 1e-3 mm are refused right after the sort: no tie the sort order "
        "could decide"),
    "CMBLib.dicom.series.x_read_series__mutmut_148": (
        "np.argsort(along, )",
        "slice positions closer than 1e-3 mm are refused right after the sort: no tie the sort order "
        "could decide"),
    "CMBLib.dicom.series.x_read_series__mutmut_150": (
        'kind="STABLE"',
        "slice positions closer than 1e-3 mm are refused right after the sort: no tie the sort order "
        "could decide"),
    "CMBLib.dicom.series.x_read_series__mutmut_221": (
        "pos[::-2]",
        "only pos[0] is read afterwards: the last slice's position either way"),
    "CMBLib.growing.engine.x__grow_all__mutmut_31": (
        'report(progress, 2.0, "resolving contacts between CMBs")',
        "report clamps the fraction to [0, 1]: 2.0 is reported as 1.0"),
    "CMBLib.growing.engine.x__grow_all__mutmut_53": (
        'report(progress, 2.0, f"grew',
        "report clamps the fraction to [0, 1]: 2.0 is reported as 1.0"),
    "CMBLib.growing.engine.x__snap_seed__mutmut_26": (
        "lo[2]:hi[2]].astype(None)",
        "astype(None) is float64, as astype(float)"),
    "CMBLib.growing.engine.x_intensity_scale__mutmut_21": (
        "sub = np.asarray(sub, dtype=None)",
        "np.percentile returns floats for integer samples too, and max - min of one sample cannot wrap around"),
    "CMBLib.growing.engine.x_intensity_scale__mutmut_23": (
        "sub = np.asarray(sub, ).ravel()",
        "np.percentile returns floats for integer samples too, and max - min of one sample cannot wrap around"),
    "CMBLib.growing.engine.x__snap_seed__mutmut_1": (
        "if radius_mm < 0:",
        "a radius of 0 gives a one-voxel box around the point, which returns the point"),
    "CMBLib.growing.engine.x__snap_seed__mutmut_24": (
        "kji + np.array(r) + 2",
        "the extra row lies beyond the radius ((r + 1) x spacing > radius): it scores inf"),
    "CMBLib.growing.engine.x__snap_seed__mutmut_62": (
        "inside = d2 < radius_mm ** 2 + 1e-9",
        "with the 1e-9 slack, < and <= differ only at exactly radius squared + 1e-9"),
    "CMBLib.growing.engine.x__seed_lists__mutmut_4": (
        "if values.size or not",
        "converting an integer (or empty) array to int64 too changes no label and no position"),
    "CMBLib.growing.engine.x__seed_lists__mutmut_5": (
        "if values.size and np.issubdtype(values.dtype, np.integer):",
        "validate_labelmap admits whole-number floats only: float labels group, sort and convert "
        "(int()) as the integers"),
    "CMBLib.growing.engine.x__seed_lists__mutmut_6": (
        "np.issubdtype(None, np.integer)",
        "np.dtype(None) is float64: every array is then converted to int64, which changes no whole-number label"),
    "CMBLib.growing.engine.x__seed_lists__mutmut_7": (
        "np.issubdtype(values.dtype, None)",
        "np.dtype(None) is float64: every array is then converted to int64, which changes no whole-number label"),
    "CMBLib.growing.engine.x__seed_lists__mutmut_11": (
        "values = values.astype(None)",
        "float64 whole numbers group, sort and convert (int()) as the integers"),
    "CMBLib.growing.engine.x__seed_lists__mutmut_18": (
        'kind="STABLE"',
        "numpy reads the sort kind case-insensitively"),
    "CMBLib.growing.engine.x_grow_from_points__mutmut_5": (
        "validate_image(image, )",
        "validate_image's default name is \"image\""),
    "CMBLib.growing.engine.x_grow_from_scribbles__mutmut_5": (
        "validate_image(image, )",
        "validate_image's default name is \"image\""),
    "CMBLib.growing.engine.x_grow_from_scribbles__mutmut_13": (
        "validate_labelmap(scribbles, image, )",
        "validate_labelmap's default name is \"scribbles\""),
    "CMBLib.growing.engine.x_grow_from_points__mutmut_18": (
        "reshape(-2, 3)",
        "numpy (>= 2.x here) takes any negative size as the one unknown dimension"),
    "CMBLib.growing.engine.x__metadata__mutmut_17": (
        "g.lo.astype(None)",
        "astype(None) is float64, as astype(float)"),
    "CMBLib.growing.engine.x__grow_all__mutmut_4": (
        "validate=None)",
        "grow_from_scribbles / grow_from_points validated the image already: a second check changes nothing"),
    "CMBLib.growing.engine.x__grow_all__mutmut_7": (
        "Grower(image, settings, )",
        "grow_from_scribbles / grow_from_points validated the image already: a second check changes nothing"),
    "CMBLib.growing.engine.x__grow_all__mutmut_8": (
        "validate=True)",
        "grow_from_scribbles / grow_from_points validated the image already: a second check changes nothing"),
    "CMBLib.growing.engine.x__contrast_to_noise__mutmut_19": (
        "np.diff(intensity, ))",
        "np.diff's default axis, -1, is axis 2 of a 3D box"),
    "CMBLib.detection.location_filter.x_compartment_distance__mutmut_1": (
        "margin_mm: float = 7.0",
        "every point of the deep-midline box has its nearest compartment voxel within 6 mm of the box "
        "(measured: 20 000 random points, the same distances with margins 6 and 7), so the larger crop "
        "changes no distance"),
    "CMBLib.detection.location_filter.x_compartment_distance__mutmut_16": (
        "np.asarray(mni_ras, dtype=None)",
        FLOAT_POINTS),
    "CMBLib.detection.location_filter.x_compartment_distance__mutmut_18": (
        "np.asarray(mni_ras, ))",
        FLOAT_POINTS),
    "CMBLib.detection.location_filter.x_compartment_distance__mutmut_32": (
        "order=1, )",
        "points inside the box lie at least the margin inside the distance map's crop: the "
        "interpolation never reads beyond the grid, where the mode would apply"),
    "CMBLib.detection.location_filter.x_zone_of__mutmut_18": (
        "inside = np.zeros(len(p), None)",
        "a float array of 0 / 1 marks the same positions for flatnonzero"),
    "CMBLib.detection.location_filter.x_zone_of__mutmut_20": (
        "inside = np.zeros(len(p), )",
        "a float array of 0 / 1 marks the same positions for flatnonzero"),
    "CMBLib.detection.location_filter.x_zones_box__mutmut_5": (
        "for z in zones], dtype=None)",
        "the boxes are tuples of floats already"),
    "CMBLib.detection.location_filter.x_zones_box__mutmut_7": (
        "for z in zones], )",
        "the boxes are tuples of floats already"),
    "CMBLib.detection.location_filter.xǁPairZoneǁcontains__mutmut_4": (
        "np.asarray(mni_ras, dtype=None)",
        FLOAT_POINTS),
    "CMBLib.detection.location_filter.xǁPairZoneǁcontains__mutmut_6": (
        "np.asarray(mni_ras, ))",
        FLOAT_POINTS),
    "CMBLib.detection.location_filter.xǁPairZoneǁcontains__mutmut_8": (
        "mirror = p / [-1.0, 1.0, 1.0]",
        "dividing by -1 or 1 is multiplying by it"),
    "CMBLib.detection.location_filter.xǁZoneǁcontains__mutmut_13": (
        "np.asarray(mni_ras, dtype=None))[inside]",
        "compartment_distance converts the points to floats itself"),
    "CMBLib.detection.location_filter.xǁZoneǁcontains__mutmut_15": (
        "np.asarray(mni_ras, ))[inside]",
        "compartment_distance converts the points to floats itself"),
    "CMBLib.detection.location_filter.xǁZoneǁin_box__mutmut_4": (
        "np.asarray(mni_ras, dtype=None)",
        FLOAT_POINTS),
    "CMBLib.detection.location_filter.xǁZoneǁin_box__mutmut_6": (
        "np.asarray(mni_ras, ))",
        FLOAT_POINTS),
    "CMBLib.metrics.components.x__majority_labels__mutmut_9": (
        "vals = np.round(values).astype(None)",
        "the rounded values kept as floats are the same integers: np.unique and int() give the same labels"),
    "CMBLib.metrics.components.x__majority_labels__mutmut_46": (
        "best.get(e, (1, 1))[1]",
        "only the default's second item (the label 1) is read, never its count"),
    "CMBLib.metrics.components.x__renumber_ijk_order__mutmut_1": (
        "if n < 1:",
        "one element goes through the general renumbering, which maps 1 to 1: the same int32 labels"),
    "CMBLib.metrics.components.x__renumber_ijk_order__mutmut_4": (
        "return labelled.astype(np.int32, copy=None)",
        "copy=None copies only when needed, as copy=False does: the same array"),
    "CMBLib.metrics.components.x__renumber_ijk_order__mutmut_6": (
        "return labelled.astype(np.int32, )",
        "a copy instead of the array itself, which the caller only reads: the same labels"),
    "CMBLib.metrics.components.x__renumber_ijk_order__mutmut_7": (
        "return labelled.astype(np.int32, copy=True)",
        "a copy instead of the array itself, which the caller only reads: the same labels"),
    "CMBLib.metrics.components.x__renumber_ijk_order__mutmut_17": (
        "key = (i.astype(None) * nj + j) * nk + k",
        "float64 keys are exact integers below 2**53 voxels: the same order"),
    "CMBLib.metrics.components.x__renumber_ijk_order__mutmut_34": (
        "mapping = np.zeros(n + 1, None)",
        "a float mapping stored into the int32 copy gives the same integers"),
    "CMBLib.metrics.components.x__renumber_ijk_order__mutmut_36": (
        "mapping = np.zeros(n + 1, )",
        "a float mapping stored into the int32 copy gives the same integers"),
    "CMBLib.metrics.components.x__renumber_ijk_order__mutmut_38": (
        "mapping = np.zeros(n + 2, np.int32)",
        "one more mapping entry, which no label reads"),
    "CMBLib.metrics.components.x__renumber_ijk_order__mutmut_43": (
        "np.argsort(first[1:], kind=None)",
        "the elements' first-voxel keys all differ (a voxel belongs to one element): every sort gives one order"),
    "CMBLib.metrics.components.x__renumber_ijk_order__mutmut_45": (
        "np.argsort(first[1:], )",
        "the elements' first-voxel keys all differ (a voxel belongs to one element): every sort gives one order"),
    "CMBLib.metrics.components.x__renumber_ijk_order__mutmut_48": (
        'kind="STABLE"',
        "numpy reads the sort kind case-insensitively, and the keys all differ anyway"),
    "CMBLib.metrics.components.x__renumber_ijk_order__mutmut_51": (
        "np.arange(1, n + 1, dtype=None)",
        "int64 numbers stored into the int32 mapping: the same values"),
    "CMBLib.metrics.components.x__renumber_ijk_order__mutmut_54": (
        "np.arange(1, n + 1, )",
        "int64 numbers stored into the int32 mapping: the same values"),
    "CMBLib.metrics.components.x__renumber_ijk_order__mutmut_62": (
        "out = labelled.astype(np.int32, )",
        "numpy's default is copy=True, as written"),
    "CMBLib.metrics.components.x_describe_elements__mutmut_7": (
        "[1:].astype(None)",
        "integer counts: the centres are true divisions and float() makes the volumes: the same values"),
    "CMBLib.metrics.components.x_describe_elements__mutmut_11": (
        "counts = np.bincount(lab, )[1:]",
        SAME_ELEMENTS),
    "CMBLib.metrics.components.x_describe_elements__mutmut_12": (
        "counts = np.bincount(lab, minlength=n - 1)",
        SAME_ELEMENTS),
    "CMBLib.metrics.components.x_describe_elements__mutmut_25": (
        "np.bincount(lab, weights=w, )[1:]",
        SAME_ELEMENTS),
    "CMBLib.metrics.components.x_describe_elements__mutmut_26": (
        "np.bincount(lab, weights=w, minlength=n - 1)",
        SAME_ELEMENTS),
    "CMBLib.metrics.components.x_describe_elements__mutmut_65": (
        "maxima = np.full(n + 2, -np.inf)",
        "one more maximum, which no element reads"),
    "CMBLib.metrics.components.x_describe_elements__mutmut_74": (
        "np.asarray(score_map, dtype=None)",
        "the maxima array is float: integer or boolean scores land in it as the same floats"),
    "CMBLib.metrics.components.x_describe_elements__mutmut_76": (
        "np.asarray(score_map, )[where]",
        "the maxima array is float: integer or boolean scores land in it as the same floats"),
    "CMBLib.metrics.components.x_foreground__mutmut_10": (
        "if np.issubdtype(None, np.floating):",
        "np.dtype(None) is float64: an integer map then takes the float branch, whose checks give it the same "
        "answer (finite; no probability map; rounding to one decimal changes no integer)"),
    "CMBLib.metrics.components.x_is_probability_map__mutmut_4": (
        "if not np.issubdtype(None, np.floating):",
        "np.dtype(None) is float64: a non-float map is then compared with its rounding, which it equals"),
    "CMBLib.metrics.components.x_label_elements__mutmut_56": (
        "if (a.dtype == np.bool_) and False else",
        "the mask voxels of a boolean map are all True, which rounds to 1: the same one element"),
    "CMBLib.metrics.components.x_label_elements__mutmut_59": (
        "values = np.ones(int(mask.sum()), None)",
        "float ones: one value, the same one element"),
    "CMBLib.metrics.components.x_label_elements__mutmut_61": (
        "values = np.ones(int(mask.sum()), )",
        "float ones: one value, the same one element"),
    "CMBLib.metrics.components.x_label_elements__mutmut_64": (
        "np.round(a[mask]).astype(None)",
        "the rounded values kept as floats: np.unique gives the same values and numbering"),
    "CMBLib.metrics.components.x_structure__mutmut_16": (
        "generate_binary_structure(3, 4)",
        "a connectivity beyond the rank (3) adds nothing: the full 3x3x3 cube, as (3, 3)"),
    "CMBLib.metrics.matching.x_match_points__mutmut_2": (
        'rule: str = "VALDO"', "the rule name goes through normalise_rule, which lower-cases it"),
    "CMBLib.metrics.matching.x_match_points__mutmut_18": (
        "reshape(-2, 3)", "numpy (>= 2.x here) takes any negative size as the one unknown dimension"),
    "CMBLib.metrics.matching.x_match_points__mutmut_30": (
        "reshape(-2, 3)", "numpy (>= 2.x here) takes any negative size as the one unknown dimension"),
    "CMBLib.metrics.matching.x_match_one_to_one__mutmut_21": (
        "big = (float(distance_mm) + 2.0)",
        "a larger cost of a forbidden pair still exceeds every sum of allowed ones"),
    "CMBLib.metrics.matching.x_match_one_to_one__mutmut_27": (
        "(min(n_pred, n_ref) + 2)", "a larger cost of a forbidden pair still exceeds every sum of allowed ones"),
    "CMBLib.detection.finetune_gate.x_outcome_text__mutmut_7": (
        'val = "XXXX" if best is None',
        "best is None only when no training step ran (decide: no_steps), whose sentence does not use it"),
    "CMBLib.detection.finetune_gate.x_score__mutmut_121": (
        "if 3 * tp + fp + fn else None",
        "counts are never negative: 3 tp + fp + fn is zero exactly when 2 tp + fp + fn is"),
    "CMBLib.metrics.pairing.x_case_key__mutmut_5": (
        "changed = None", "None and False are both false: the loop ends when no tag was removed either way"),
    "CMBLib.metrics.pairing.x__parse_sidecar__mutmut_12": (
        "RECORD_KEYS if isinstance(data.get(k), list)), None)",
        "a None default is turned into [] by the isinstance(records, list) guard on the next line"),
}

DO_NOT_MUTATE_PATTERNS = [r"^\s*raise \w+\("]

# mutmut's exit codes (mutmut/stats.py): -9 is its SIGKILL after the CPU-time limit, -11 a crash
STATUS = {1: "killed", 3: "killed", -11: "killed", 0: "survived", 5: "no tests", 33: "no tests",
          36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", -9: "timeout"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--module", action="append", choices=sorted(MODULES),
                       help="module to mutate (repeatable)")
    which.add_argument("--changed", nargs="?", const="HEAD", metavar="REF",
                       help="modules whose files or tests differ from REF in `git diff` (default HEAD: "
                            "uncommitted changes)")
    which.add_argument("--all", action="store_true", help="every module in the table")
    which.add_argument("--list", action="store_true", help="print the modules, their files and tests")
    p.add_argument("--jobs", type=int, default=1, help="mutants tested in parallel (default 1)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "cmb-mutation",
                   help="folder for the copies of the work tree, one per module (default %(default)s)")
    p.add_argument("--report", type=Path, help="also write the table and survivors (Markdown) here, and "
                                                "the same as JSON beside it (.json)")
    p.add_argument("--nice", type=int, default=15, help="niceness of the run (default 15)")
    p.add_argument("--timeout-multiplier", type=float, default=15.0,
                   help="a mutant times out after this many times its tests' clean duration (default 15)")
    p.add_argument("--reuse", action="store_true",
                   help="keep the module's copy and mutmut's results from an earlier run (only mutants "
                        "not yet tested are run); default: a fresh copy")
    p.add_argument("--rerun-survivors", action="store_true",
                   help="with the results of an earlier run in --workdir: refresh the copy from the work tree "
                        "(new tests) and test again only the mutants that survived; killed ones stay killed")
    return p.parse_args(argv)


def changed_modules(ref: str) -> list[str]:
    out = subprocess.run(["git", "diff", "--name-only", ref], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split()
    out += subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.split()
    touched = set(out)
    return [name for name, m in MODULES.items() if touched & set(m["files"] + m["tests"])]


def copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "--", *COPY], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        src = REPO / rel
        if not src.is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def toml_list(values) -> str:
    return "[" + ", ".join(json.dumps(str(v)) for v in values) + "]"


def write_config(dest: Path, module: dict, timeout_multiplier: float) -> None:
    """pyproject.toml of the copy: the project's, less any [tool.mutmut], plus this module's."""
    text = (dest / "pyproject.toml").read_text()
    kept, skip = [], False
    for line in text.splitlines():
        if line.startswith("["):
            skip = line.strip() == "[tool.mutmut]"
        if not skip:
            kept.append(line)
    tests = [t for t in module["tests"] if (dest / t.split("::")[0]).is_file()]
    kept += ["", "[tool.mutmut]",
             'source_paths = ["CMBLib"]',
             f"only_mutate = {toml_list(module['files'])}",
             'also_copy = ["Testing", "training", "benchmarks", "scripts", "CMBDetector", "CMBScribbleAnnotator"]',
             f"pytest_add_cli_args_test_selection = {toml_list(tests)}",
             'pytest_add_cli_args = ["-x", "-q", "-p", "no:cacheprovider"]',
             f"do_not_mutate_patterns = {toml_list(DO_NOT_MUTATE_PATTERNS)}",
             f"timeout_multiplier = {timeout_multiplier}",
             "use_git_change_detection = false", ""]
    (dest / "pyproject.toml").write_text("\n".join(kept))


def run_module(name: str, args) -> dict:
    module = MODULES[name]
    dest = args.workdir / name
    names = list(module.get("functions", []))
    previous = {}
    if args.rerun_survivors:
        if not (dest / "mutants").is_dir():
            raise SystemExit(f"{dest}: no earlier run of {name} to take the survivors from")
        names = [s["mutant"] for s in collect(name, module, dest)["survivors"]]
        if not names:
            return collect(name, module, dest)
        changed = [rel for rel in module["files"] if (dest / rel).read_bytes() != (REPO / rel).read_bytes()]
        if changed:
            raise SystemExit(f"{', '.join(changed)} changed since the earlier run of {name}: its mutants are not "
                             "the same; run the module afresh (without --rerun-survivors)")
        # mutmut forgets every verdict when the test selection changes (a new test file in MODULES):
        # keep the earlier ones of the mutants not rerun (tests were only added: killed stays killed)
        previous = {rel: _exit_codes(dest, rel) for rel in module["files"]}
        copy_tree(dest)
        write_config(dest, module, args.timeout_multiplier)
    elif dest.exists() and not args.reuse:
        shutil.rmtree(dest)
    if not dest.exists():
        dest.mkdir(parents=True)
        copy_tree(dest)
        write_config(dest, module, args.timeout_multiplier)
    env = dict(os.environ)
    # conftest finds ../shared/data beside the repository; the copy lives elsewhere
    env.setdefault("CMB_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # one thread per math library: mutmut forks each mutant from a warmed-up process, and a fork taken
    # after torch's OpenMP team started hangs in its barrier (seen on the location filter's tests)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        env[var] = "1"
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.jobs), *names]
    print(f"== {name}: mutmut on {', '.join(module['files'])} ({dest})", flush=True)
    log = dest / "mutmut-run.log"
    with open(log, "a" if args.rerun_survivors else "w") as fh:
        rc = subprocess.run(cmd, cwd=dest, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"mutmut failed on {name} (exit {rc}); the end of {log}:\n{tail}")
    for rel, codes in previous.items():
        meta_path = dest / "mutants" / (rel + ".meta")
        meta = json.loads(meta_path.read_text())
        now = meta["exit_code_by_key"]
        for key, code in codes.items():
            if key not in names and key in now and now[key] is None and code is not None:
                now[key] = code
        meta_path.write_text(json.dumps(meta, indent=4))
    return collect(name, module, dest)


def _exit_codes(dest: Path, rel: str) -> dict:
    return json.loads((dest / "mutants" / (rel + ".meta")).read_text())["exit_code_by_key"]


def _function_def_line(source: str, mangled: str) -> int:
    """Line of the `def` of mutmut's mangled function name (x_NAME or xǁCLASSǁNAME)."""
    parts = mangled[1:].split("ǁ") if mangled.startswith("xǁ") else [None, mangled[2:]]
    cls, func = (parts[1], parts[2]) if len(parts) == 3 else (None, parts[-1])
    tree = ast.parse(source)
    body = tree.body
    if cls:
        body = next(n.body for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    for n in body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == func:
            return n.lineno
    raise KeyError(mangled)


def describe(dest: Path, rel: str, key: str) -> tuple[int, str]:
    """(line in the original file, "old -> new") of one mutant."""
    mutated = (dest / "mutants" / rel).read_text().splitlines()
    spans = json.loads((dest / "mutants" / (rel + ".spans")).read_text())["spans"]
    short = key.rsplit(".", 1)[1]
    mangled = short.rsplit("__mutmut_", 1)[0]
    a0, a1 = spans[mangled + "__mutmut_orig"]
    b0, b1 = spans[short]
    orig = mutated[a0 - 1:a1]
    mut = [line.replace(short, mangled + "__mutmut_orig") for line in mutated[b0 - 1:b1]]
    def_line = _function_def_line((dest / rel).read_text(), mangled)
    # the span may start with blank lines before the `def`: count lines from the `def` itself
    head = next((i for i, s in enumerate(orig) if s.lstrip().startswith(("def ", "async def "))), 0)
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, orig, mut, autojunk=False).get_opcodes():
        if tag != "equal":
            old = " / ".join(s.strip() for s in orig[i1:i2]) or "(nothing)"
            new = " / ".join(s.strip() for s in mut[j1:j2]) or "(removed)"
            text = f"{old}  ->  {new}".replace(mangled + "__mutmut_orig", mangled.split("ǁ")[-1].removeprefix("x_"))
            return def_line + i1 - head, text
    return def_line, "(no textual change)"


def collect(name: str, module: dict, dest: Path) -> dict:
    counts = {"mutants": 0, "killed": 0, "survived": 0, "timeout": 0, "other": 0, "equivalent": 0, "not_run": 0}
    survivors, equivalent = [], []
    patterns = module.get("functions")
    for rel in module["files"]:
        meta = json.loads((dest / "mutants" / (rel + ".meta")).read_text())["exit_code_by_key"]
        for key, code in sorted(meta.items(), key=lambda kv: _natural(kv[0])):
            if patterns and not any(fnmatch.fnmatch(key, p) for p in patterns):
                continue
            if code is None or code == -15:           # not tested yet (or the run was stopped on it)
                counts["not_run"] += 1
                continue
            counts["mutants"] += 1
            status = STATUS.get(code, "other")
            if status == "survived":
                line, what = describe(dest, rel, key)
                entry = {"mutant": key, "where": f"{rel}:{line}", "mutation": what}
                known = EQUIVALENT.get(key)
                if known and known[0] in what:
                    entry["reason"] = known[1]
                    equivalent.append(entry)
                    counts["equivalent"] += 1
                else:
                    survivors.append(entry)
            elif status == "no tests":
                line, what = describe(dest, rel, key)
                survivors.append({"mutant": key, "where": f"{rel}:{line}", "mutation": what + "  [no test runs it]"})
                status = "survived"
            elif status == "other":
                survivors.append({"mutant": key, "where": rel, "mutation": f"mutmut status exit code {code}"})
            counts[status] += 1
    n = counts["mutants"]
    detected = counts["killed"] + counts["timeout"]
    counts["percent_killed"] = round(100.0 * detected / n, 1) if n else None
    denom = n - counts["equivalent"]
    counts["score"] = round(100.0 * detected / denom, 1) if denom else None
    return {"module": name, "files": module["files"], "tests": module["tests"], **counts,
            "survivors": survivors, "equivalent_mutants": equivalent}


def _natural(key: str):
    head, _, num = key.rpartition("_")
    return (head, int(num) if num.isdigit() else 0)


def table(results: list[dict], command: str) -> str:
    today = datetime.date.today().isoformat()
    lines = [f"`{command}` ({today}, mutmut {_mutmut_version()})", "",
             "| module | mutants | killed | survived | timeout | equivalent (explained) | % killed | score |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        partial = f" (partial: {r['not_run']} more not tested)" if r["not_run"] else ""
        lines.append(f"| {r['module']}{partial} | {r['mutants']} | {r['killed']} | {r['survived'] - r['equivalent']} | "
                     f"{r['timeout']} | {r['equivalent']} | {r['percent_killed']} | {r['score']} |")
    for r in results:
        if r["survivors"] or r["equivalent_mutants"]:
            lines += ["", f"Survivors of {r['module']}:"]
            lines += [f"- {s['where']}  {s['mutation']}  ({s['mutant']})" for s in r["survivors"]]
            lines += [f"- equivalent: {s['where']}  {s['mutation']}: {s['reason']}" for s in r["equivalent_mutants"]]
    return "\n".join(lines) + "\n"


def _mutmut_version() -> str:
    try:
        from importlib.metadata import version
        return version("mutmut")
    except Exception:
        return "?"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, m in MODULES.items():
            print(f"{name}: {' '.join(m['files'])}\n    tests: {' '.join(m['tests'])}")
        return 0
    try:
        import mutmut  # noqa: F401
    except ImportError:
        print('mutmut is not installed: pip install -e ".[mutation]" (Python >= 3.10)', file=sys.stderr)
        return 2
    if args.nice:
        os.nice(args.nice)
    names = sorted(MODULES) if args.all else args.module or changed_modules(args.changed)
    if not names:
        print(f"no module of the table is touched by `git diff {args.changed}`")
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = [run_module(name, args) for name in names]
    command = "python scripts/mutation_test.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = table(results, command.strip())
    print(text)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text)
        args.report.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
