"""`cmb benchmark`: detection and scoring on the public CMB data sets, in their release layouts.

    from CMBLib.benchmark import run_benchmark
    doc = run_benchmark("valdo", "VALDO/Task2", "report/", model="default")
    doc["tp"], doc["fp"], doc["fn"], doc["froc"]["cpm"]

Layouts and the CUHK index convention: `datasets`; scoring and FROC: `scoring`; the report
folder: `run`; the HTML page: `report`.  docs/evaluation.md, "Public data sets".
"""
from .datasets import DATASETS, Subject, cuhk_reference_ijk, find_subjects, read_cuhk_mat
from .run import run_benchmark

__all__ = ["DATASETS", "Subject", "find_subjects", "read_cuhk_mat", "cuhk_reference_ijk", "run_benchmark"]
