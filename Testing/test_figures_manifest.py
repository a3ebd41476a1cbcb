"""Every measured number printed in README.md, docs/*.md and the model cards / model.json is
listed in docs/figures.json with its command, data, date and device (scripts/regenerate_figures.py;
docs/developer.md, "Published figures")."""
import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("regenerate_figures", ROOT / "scripts" / "regenerate_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


figs = _load()


@pytest.fixture(scope="module")
def manifest():
    return figs.load_manifest()


@pytest.fixture(scope="module")
def texts():
    return figs.read_texts()


def test_every_printed_figure_matches_the_manifest(manifest, texts):
    problems = figs.check(manifest, texts)
    assert not problems, f"{len(problems)} problem(s); run `python scripts/regenerate_figures.py --check`:\n" + \
        "\n".join(problems[:40])


def test_published_files_include_the_readme_docs_and_model_cards(texts):
    assert {"README.md", "docs/detector.md", "CMBLib/models/cmb-default/README.md",
            "CMBLib/models/cmb-default/model.json"} <= set(texts)


def test_each_entry_names_its_command_data_date_and_device(manifest):
    ids = [e["id"] for e in manifest["figures"]]
    assert len(ids) == len(set(ids)), "duplicate ids"
    for e in manifest["figures"]:
        for key in ("what", "value", "command", "data", "date", "device", "printed"):
            assert e.get(key), f"{e['id']}: no {key}"
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", e["date"]), f"{e['id']}: date {e['date']!r}"
        spec = e.get("regenerate")
        if spec:
            values = e["value"] if isinstance(e["value"], list) else [e["value"]]
            assert spec["parser"] in set(figs.PARSERS) | {"stdout"} and len(spec["fields"]) <= len(values), e["id"]
    for nf in manifest.get("not_figures", []):
        assert nf.get("file") and nf.get("text") and nf.get("why")


def test_model_json_figures_name_their_data(texts):
    """Each measured group of a bundled model.json says which cases and brains it was measured on
    (what `cmb models` prints)."""
    for path, text in texts.items():
        if not path.endswith("model.json"):
            continue
        metrics = json.loads(text).get("metrics") or {}

        def walk(prefix, d, path=path):
            leaves = [k for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if leaves:
                assert isinstance(d.get("data"), str) and "brain" in d["data"], f"{path} {prefix}: no data named"
            for k, v in d.items():
                if isinstance(v, dict):
                    walk(f"{prefix}.{k}", v)
        walk("metrics", metrics)


def _replace(text, snippet, new):
    """`text` with the (whitespace-normalised) `snippet` replaced once by `new`."""
    rx = r"\s+".join(map(re.escape, figs.norm(snippet).split(" ")))
    out, n = re.subn(rx, lambda _: new, text, count=1)
    assert n == 1, snippet
    return out


def _first_covered_figure(manifest, texts, path):
    for e in manifest["figures"]:
        for f, t in figs.printed_items(e):
            if f == path and not f.endswith(".json"):
                m = re.search(r"\d+\.\d+", t)
                if m and m.group() in texts[path]:
                    return e, m.group()
    pytest.skip(f"no decimal figure listed for {path}")


@pytest.mark.parametrize("path", ["README.md", "CMBLib/models/cmb-default/README.md", "docs/detector.md"])
def test_a_hand_edited_number_is_caught(manifest, texts, path):
    e, number = _first_covered_figure(manifest, texts, path)
    snippet = next(t for f, t in figs.printed_items(e) if f == path)
    edited = dict(texts, **{path: _replace(texts[path], snippet, figs.norm(snippet).replace(number, number + "9", 1))})
    problems = figs.check(manifest, edited)
    assert any(p.startswith(f"{e['id']}: {path} no longer prints") for p in problems), problems[:5]
    assert any("is not in the manifest" in p and path in p for p in problems), problems[:5]


def test_a_new_unlisted_figure_is_caught(manifest, texts):
    edited = dict(texts, **{"docs/detector.md": texts["docs/detector.md"] +
                            "\n\nOn 12 new cases the detector reached F1 0.713 at 0.25 FP/scan.\n"})
    problems = figs.check(manifest, edited)
    assert any("'F1 0.713'" in p for p in problems) and any("0.25 FP/scan" in p for p in problems)
    drafts = figs.draft_entries(manifest, {"docs/detector.md": edited["docs/detector.md"]})
    assert [d["value"] for d in drafts] == [["F1 0.713", "0.25 FP/scan"]]


def test_a_file_that_stops_printing_a_figure_is_caught(manifest, texts):
    e, _ = _first_covered_figure(manifest, texts, "README.md")
    snippet = next(t for f, t in figs.printed_items(e) if f == "README.md")
    edited = dict(texts, **{"README.md": _replace(texts["README.md"], snippet, "")})
    assert any(p.startswith(f"{e['id']}: README.md no longer prints") for p in figs.check(manifest, edited))


def test_model_json_edited_by_hand_is_caught(manifest, texts):
    path = "CMBLib/models/cmb-default/model.json"
    doc = json.loads(texts[path])
    doc["metrics"]["validation"]["f1"] = 0.9
    problems = figs.check(manifest, dict(texts, **{path: json.dumps(doc)}))
    assert any("metrics.validation.f1 is 0.9" in p for p in problems), problems[:5]


def test_scanner_finds_the_usual_figures():
    found = [p for b in figs.blocks("Mean Dice **0.747**, 2.2 s and 0.8 GB; TP 35, FP 9, FN 9; 62 / 18 / 73; "
                                     "3 of the 6 found, 1.5 x the time, 96 % set aside, 0.30 per scan.\n\n"
                                     "| setting | F1 | FP/scan |\n|---|---|---|\n| 0.7 / 3 mm | 0.604 | 0.30 |\n")
             for _, _, _, p in figs.figures_in(b)]
    assert found == ["Dice **0.747", "2.2 s", "0.8 GB", "TP 35", "FP 9", "FN 9", "62 / 18 / 73", "3 of the 6",
                     "1.5 x the", "96 %", "0.30 per scan", "| 0.7 / 3 mm | 0.604 | 0.30 |"]
    # settings, grids and code are not figures
    assert not [f for b in figs.blocks("grid 0.86 x 0.86 x 4 mm at 0.7 / 3 mm, `--minutes 8`, aseg.a2009s\n\n"
                                       "```\ncmb detect --threshold 0.7 # F1 0.5\n```\n")
                for f in figs.figures_in(b)]


def test_reprint_keeps_the_printed_precision():
    assert figs.reprint("F1 0.604", "f1", {"f1": 0.61234}) == "F1 0.612"
    assert figs.reprint("64 / 13 / 71", ["tp", "fp", "fn"], {"tp": 65, "fp": 12, "fn": 70}) == "65 / 12 / 70"
    assert figs.reprint("0.30 FP/scan", None, {}) == "0.30 FP/scan"


def test_regenerated_figures_are_written_and_the_docs_then_fail(manifest, texts, tmp_path, monkeypatch, capsys):
    import copy

    m = copy.deepcopy(manifest)
    entry = next(e for e in m["figures"] if e["id"] == "default-test-pseudo-t2s")
    monkeypatch.setattr(figs, "regenerate", lambda e, timeout=0: {
        "qsm_t2s@0.7:tp": 34, "qsm_t2s@0.7:fp": 8, "qsm_t2s@0.7:fn": 10, "qsm_t2s@0.7:f1": 0.7912,
        "qsm_t2s@0.7:fp_per_scan": 1.0, "mean_detect_s": 44.9})
    assert figs.run_entries(m, [entry], write=True, path=tmp_path / "figures.json") == 1
    out = capsys.readouterr().out
    assert "'33 / 8 / 11' -> '34 / 8 / 10'" in out and "'0.78' -> '0.79'" in out and "'1.00'" not in out
    written = figs.load_manifest(tmp_path / "figures.json")
    assert next(e for e in written["figures"] if e["id"] == entry["id"])["value"][:3] == ["34 / 8 / 10", "0.79", "1.00"]
    problems = figs.check(written, texts)
    assert any(p.startswith("default-test-pseudo-t2s: docs/detector.md no longer prints") for p in problems)


def test_parsers_read_the_benchmarks_outputs():
    froc = figs.parse_froc_json({"total": {"0.7/3.0": [80, 30, 89, 0, 51]}, "by_size": {"0.7/3.0": [[0, 10], [12, 48]]},
                                 "seconds": [3.0, 1.0, 2.0, 9.0]})
    assert froc["0.7/3.0:f1"] == pytest.approx(160 / 279) and froc["0.7/3.0:fp_per_scan"] == pytest.approx(30 / 51)
    assert froc["0.7/3.0:size1"] == "12/48" and froc["median_s"] == 2.5
    ev = figs.parse_evaluate_json({"mean_detect_s": 44.9, "qsm_t2s": {"n_cases": 8, "rows": [
        {"threshold": 0.5, "tp": 35, "fp": 20, "fn": 9, "f1": 0.7}, {"threshold": 0.7, "tp": 33, "fp": 8, "fn": 11,
                                                                       "f1": 0.776, "fp_per_scan": 1.0}]}})
    assert ev["qsm_t2s@0.7:fp"] == 8 and ev["qsm_t2s@0.5:tp"] == 35 and ev["mean_detect_s"] == 44.9
    assert figs.parse_stdout("found 3 of 6 inserted CMBs", {"found": r"found (\d+) of"}) == {"found": "3"}


COUNTS = r"(tp|fp|fn|n_cases|sensitivity|precision|f1|fp_per_scan)"
KEY_FORMS = {"froc_json": rf"median_s|[\d.]+/[\d.]+:({COUNTS[1:-1]}|set_aside|size\d)",
             "evaluate_json": rf"mean_detect_s|\w+@[\d.]+:{COUNTS}"}


def test_regenerated_fields_name_what_their_parser_gives(manifest):
    for e in manifest["figures"]:
        spec = e.get("regenerate")
        if not spec:
            continue
        keys = [k for f in spec["fields"] if f for k in (f if isinstance(f, list) else [f]) if k]
        for k in keys:
            if spec["parser"] == "stdout":
                assert k in spec["regex"], (e["id"], k)
            else:
                assert re.fullmatch(KEY_FORMS[spec["parser"]], k), (e["id"], k)
