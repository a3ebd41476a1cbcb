"""Published figures: each measured number in the docs, listed once in docs/figures.json.

A number counts as a *published figure* when it stands next to a metric word or a unit (see
`FIGURE_PATTERNS`: F1, Dice, sensitivity, precision, FP/scan, TP/FP/FN counts, "N of M",
seconds, MB, "1.5 x the time", %) or sits in a table row whose header (or first cell) names a
metric.  Each entry of the manifest holds the sentence or table row that prints it
(`printed`, per file, whitespace-insensitive), the figures as printed (`value`), what was
measured, the command that reproduces it, the data (cases, brains, split), the date and the
device.  `Testing/test_figures_manifest.py` checks both ways: every figure found in a
published file lies inside a listed sentence of that file, and every listed sentence is still
printed there, with its values.

    python scripts/regenerate_figures.py --check           # what the test checks, with hints
    python scripts/regenerate_figures.py --add-missing     # draft entries for unlisted figures
    python scripts/regenerate_figures.py --list [--quick]  # entries that can be regenerated
    python scripts/regenerate_figures.py --quick           # re-run the cheap commands (a few minutes)
    python scripts/regenerate_figures.py --only ID [--write]   # one entry; --write updates the manifest

Regenerating runs an entry's `regenerate.command`, parses its output (`PARSERS`) and compares
each figure with the printed one at the printed precision; `--write` puts the new figures into
the manifest (`value`, `printed`, `date`, `device`), after which the test names each sentence
in the docs that still prints the old one.
"""
import argparse
import datetime
import functools
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "docs" / "figures.json"
TEXT_GLOBS = ("README.md", "docs/*.md", "CMBLib/models/*/README.md")
JSON_GLOBS = ("CMBLib/models/*/model.json",)
JSON_PROSE_KEYS = ("tta_why", "why_off_by_default")     # model.json strings that quote figures

NUM = r"\d+(?:[.,]\d+)*"
METRIC_WORDS = (r"F1|Dice|sensitivity|sensitivities|precision|recall|TPR|TNR|PPV|CPM|FPavg|FPcmb|"
                r"accuracy|kappa|ICC|AUC")
FIGURE_PATTERNS = {
    "metric": re.compile(rf"\b(?:{METRIC_WORDS})\b(?:\s(?:of|was|is|=|:|mean|median|about|only|reached))?"
                         r"[\s*:=~]{1,4}(?<![\w.])\d*\.\d+"),
    "per_scan": re.compile(rf"(?<![\w.]){NUM}(?:\*\*)?\s*(?:FP/scan|FPs? per (?:scan|subject|case)|false positives? "
                           r"per (?:scan|subject|case)|FP/case|/scan\b|per scan)"),
    "counts": re.compile(rf"\b(?:TP|FP|FN)\s+{NUM}\b(?!\s*(?:mm|%))"),
    "triple": re.compile(r"(?<![\d.x] )(?<![\d.])\d+ / \d+ / \d+(?![\d.]| mm)"),
    "n_of_m": re.compile(r"(?<![\d.])\d+ (?:of|out of) (?:the |its |these )?\d+\b"),
    "time": re.compile(rf"(?<![\w.\-]){NUM}(?:-{NUM})?(?:\s(?:s|sec|seconds|min|minutes|hours?|h)|\s?ms)\b(?![-/])"),
    "memory": re.compile(rf"(?<![\d.]){NUM}\s?(?:kB|KB|MB|GB|MiB|GiB|KiB)\b"),
    "ratio": re.compile(rf"(?<![\d.]){NUM}\s?x\s+(?:the|faster|slower|longer|shorter|more|fewer|as)\b|"
                        rf"(?<![\d.]){NUM}x\b"),
    "percent": re.compile(rf"(?<![\d.\-]){NUM}(?:\s?-\s?{NUM})?\s?%"),
}
TABLE_WORDS = re.compile(rf"\b(?:{METRIC_WORDS}|TP|FP|FN|found|set aside|time|seconds|memory|speed|median|mean)\b|"
                         r"\bs\)|\bms\b|\bMB\b|FP/scan", re.IGNORECASE)
CODE_SPAN = re.compile(r"`[^`]*`")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[^a-z\s])")
ABBREVIATIONS = ("e.g.", "i.e.", "vs.", "cf.", "etc.", "approx.", "Fig.", "al.")


# ----------------------------------------------------------------------------- reading the docs

def published_files(root: Path = ROOT) -> list:
    """Repository-relative paths of the files whose figures the manifest must hold."""
    out = []
    for pattern in TEXT_GLOBS + JSON_GLOBS:
        out += sorted(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
    return [p for p in out if p != "docs/figures.json"]


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def blocks(text: str) -> list:
    """A markdown text as blocks: ("prose", normalised paragraph, None) or ("row", normalised
    table row, header cells).  Fenced code blocks are left out (commands, not figures)."""
    out, para, header, in_fence, prev_row = [], [], None, False, False
    lines = text.splitlines()

    def flush():
        if para:
            out.append(("prose", norm(" ".join(para)), None))
            para.clear()

    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("```"):
            flush()
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        if s.startswith("|"):
            flush()
            cells = [c.strip() for c in s.strip("|").split("|")]
            nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if not prev_row and re.match(r"^\|?\s*:?-{3,}", nxt):
                header = cells
            elif not re.match(r"^\|?\s*:?-{3,}", s):
                out.append(("row", norm(s), header))
            prev_row = True
            continue
        prev_row = False
        if not s or s.startswith("#"):
            flush()
            if s:
                out.append(("prose", norm(s), None))
            continue
        para.append(s)
    flush()
    return out


def json_texts(doc: dict) -> list:
    """The prose strings of a model.json that quote figures (as prose blocks)."""
    found = []

    def walk(d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v)
            elif k in JSON_PROSE_KEYS and isinstance(v, str):
                found.append(("prose", norm(v), None))
    walk(doc)
    return found


def json_figures(doc: dict) -> dict:
    """{dotted key: number} of every number under model.json's "metrics"."""
    out = {}

    def walk(prefix, d):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                walk(key, v)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out[key] = v
    walk("metrics", doc.get("metrics") or {})
    return out


def figures_in(block) -> list:
    """[(start, end, kind, printed)] of the figures of one block; a table row is one figure
    spanning the row when its header or first cell names a metric and it holds a number."""
    kind, text, header = block
    masked = CODE_SPAN.sub(lambda m: " " * len(m.group()), text)
    if kind == "row":
        cells = [c.strip() for c in text.strip("|").split("|")]
        metric_table = bool(header and TABLE_WORDS.search(" ".join(header))) or bool(
            cells and len(cells[0]) < 24 and TABLE_WORDS.search(cells[0]))
        if metric_table and re.search(r"(?<![\w.-])\d", CODE_SPAN.sub("", " ".join(cells[1:]))):
            return ((0, len(text), "row", text),)
        return _prose_figures(masked, text)
    return _prose_figures(masked, text)


@functools.cache
def _prose_figures(masked: str, text: str) -> list:
    hits = []
    for name, rx in FIGURE_PATTERNS.items():
        for m in rx.finditer(masked):
            hits.append((m.start(), m.end(), name, text[m.start():m.end()]))
    hits.sort()
    merged: list = []
    for h in hits:                           # overlapping hits: keep the wider
        if merged and h[0] < merged[-1][1]:
            if h[1] > merged[-1][1]:
                merged[-1] = (merged[-1][0], h[1], merged[-1][2], text[merged[-1][0]:h[1]])
            continue
        merged.append(h)
    return tuple(merged)


def sentence_of(text: str, start: int, end: int) -> str:
    """The sentence (or clause ended by ';') of `text` around [start, end)."""
    cuts = [0]
    for m in SENTENCE_END.finditer(text):
        before = text[:m.start()]
        if any(before.endswith(a) for a in ABBREVIATIONS):
            continue
        cuts.append(m.end())
    cuts.append(len(text) + 1)
    lo = max(c for c in cuts if c <= start)
    hi = min(c for c in cuts if c >= end)
    return text[lo:hi].strip()


def file_blocks(path: str, text: str) -> list:
    if path.endswith(".json"):
        return json_texts(json.loads(text))
    return blocks(text)


# ----------------------------------------------------------------------------- the manifest

def load_manifest(path: Path = MANIFEST) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def save_manifest(manifest: dict, path: Path = MANIFEST) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def printed_items(entry: dict) -> list:
    """[(file, printed text or JSON key)] of one entry."""
    out = []
    for f, texts in entry.get("printed", {}).items():
        for t in texts if isinstance(texts, list) else [texts]:
            out.append((f, t))
    return out


def check(manifest: dict, texts: dict) -> list:
    """Problems (one line each) between the manifest and the published `texts` ({path: text})."""
    problems = []
    by_file: dict = {}
    for nf in manifest.get("not_figures", []):
        by_file.setdefault(nf["file"], []).append(("not_figures", nf["text"]))
        if not nf.get("why"):
            problems.append(f"not_figures: {nf['text'][:80]!r} gives no reason")
    for e in manifest["figures"]:
        for f, t in printed_items(e):
            by_file.setdefault(f, []).append((e["id"], t))
        values = [norm(v) for v in (e["value"] if isinstance(e["value"], list) else [e["value"]])]
        per_file = {}
        for f, t in printed_items(e):
            if not (f.endswith(".json") and t.startswith("metrics.")):
                per_file[f] = per_file.get(f, "") + " \n " + norm(t)
        everywhere = " \n ".join(per_file.values())
        for v in values:
            if v not in everywhere:
                problems.append(f"{e['id']}: value {v!r} is in none of its printed texts")
        for f, t in per_file.items():
            if not any(v in t for v in values):
                problems.append(f"{e['id']}: {f}'s printed text holds none of its values")
    for path, text in texts.items():
        listed = [(i, norm(t)) for i, t in by_file.get(path, [])]
        if path.endswith(".json"):
            doc = json.loads(text)
            figs = json_figures(doc)
            keyed = {t: i for i, t in listed if t.startswith("metrics.")}
            for key, i in keyed.items():
                entry = next(e for e in manifest["figures"] if e["id"] == i)
                want = (entry.get("json") or {}).get(key)
                if key not in figs:
                    problems.append(f"{i}: {path} has no {key} any more")
                elif want is None or not _same_number(figs[key], want):
                    problems.append(f"{i}: {path} {key} is {figs[key]}, the manifest says {want}")
            for key in figs:
                if key not in keyed:
                    problems.append(f"{path}: {key} = {figs[key]} is not in the manifest")
            listed = [(i, t) for i, t in listed if not t.startswith("metrics.")]
        bl = file_blocks(path, text)
        joined = "\n".join(b[1] for b in bl)
        for i, t in listed:
            if t not in joined:
                problems.append(f"{i}: {path} no longer prints {t[:160]!r}")
        for b in bl:
            for start, end, _, printed in figures_in(b):
                if not any(t in b[1] and _covers(b[1], t, start, end) for _, t in listed):
                    problems.append(f"{path}: figure {printed!r} in {sentence_of(b[1], start, end)[:200]!r} "
                                    "is not in the manifest")
    for path in sorted(set(by_file) - set(texts)):
        problems.append(f"the manifest lists {path}, which is not a published file")
    return problems


def _covers(text: str, snippet: str, start: int, end: int) -> bool:
    i = text.find(snippet)
    while i >= 0:
        if i <= start and end <= i + len(snippet):
            return True
        i = text.find(snippet, i + 1)
    return False


def _same_number(a, b) -> bool:
    return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))


def read_texts(root: Path = ROOT) -> dict:
    return {p: (root / p).read_text(encoding="utf-8") for p in published_files(root)}


# ----------------------------------------------------------------------------- drafting entries

_BLAME: dict = {}


def git_date(path: str, snippet: str, root: Path = ROOT) -> str:
    """Date (YYYY-MM-DD) of the commit that last changed the first line printing `snippet`;
    today for text not committed yet."""
    if path not in _BLAME:
        try:
            out = subprocess.run(["git", "blame", "--line-porcelain", "--", path], cwd=root, capture_output=True,
                                 text=True, timeout=120).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        dates, lines, t = [], [], None
        for line in out.splitlines():
            if line.startswith("committer-time "):
                t = int(line.split()[1])
            elif line.startswith("\t"):
                dates.append(datetime.datetime.fromtimestamp(t, datetime.timezone.utc).date().isoformat()
                             if t else "")
                lines.append(line[1:])
        _BLAME[path] = (lines, dates)
    lines, dates = _BLAME[path]
    words = " ".join(norm(snippet).split(" ")[:4])
    for line, date in zip(lines, dates):
        if words and words in norm(line) and not date.startswith("1970"):
            return date
    return datetime.date.today().isoformat()


def draft_entries(manifest: dict, texts: dict) -> list:
    """Entries for the figures of `texts` that no manifest sentence covers, one per sentence
    or table row, with the command named in the sentence (or the nearest one before it in
    its paragraph) and the provenance left to fill in."""
    covered = {}
    for nf in manifest.get("not_figures", []):
        covered.setdefault(nf["file"], []).append(norm(nf["text"]))
    for e in manifest["figures"]:
        for f, t in printed_items(e):
            covered.setdefault(f, []).append(norm(t))
    ids = {e["id"] for e in manifest["figures"]}
    out = []
    for path, text in texts.items():
        stem = Path(path).stem.lower() if "models" not in path else "card"
        seen = set()
        for b in file_blocks(path, text):
            for start, end, _, _ in figures_in(b):
                if any(_covers(b[1], t, start, end) for t in covered.get(path, [])):
                    continue
                snippet = b[1] if b[0] == "row" else sentence_of(b[1], start, end)
                if snippet in seen:
                    continue
                seen.add(snippet)
                figs = _row_values(b) if b[0] == "row" else [p for _, _, _, p in figures_in((b[0], snippet, b[2]))]
                cmds = [c.strip("`") for c in CODE_SPAN.findall(b[1][:b[1].find(snippet) + len(snippet)])
                        if re.match(r"`(python|cmb|bash|\.venv|/usr/bin/time)", c)]
                n = 1
                while f"{stem}-{n:03d}" in ids:
                    n += 1
                ids.add(f"{stem}-{n:03d}")
                out.append({"id": f"{stem}-{n:03d}", "what": "", "value": figs,
                            "command": cmds[-1] if cmds else "", "data": "", "date": git_date(path, snippet),
                            "device": "", "printed": {path: snippet}})
                covered.setdefault(path, []).append(snippet)
    return out


def _row_values(block) -> list:
    cells = [c.strip() for c in block[1].strip("|").split("|")]
    return [c for c in cells[1:] if re.search(r"\d", c)] or cells


# ----------------------------------------------------------------------------- regenerating

def _run(command: str, timeout: float) -> str:
    proc = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if proc.returncode != 0:
        raise RuntimeError(f"{command!r} exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
    return proc.stdout


def parse_froc_json(doc: dict) -> dict:
    """benchmarks/froc_default_path.py --out: per 'threshold/min diameter' key."""
    out = {}
    for key, (tp, fp, fn, aside, n) in doc["total"].items():
        sens = tp / (tp + fn) if tp + fn else 0.0
        prec = tp / (tp + fp) if tp + fp else 0.0
        out.update({f"{key}:tp": tp, f"{key}:fp": fp, f"{key}:fn": fn, f"{key}:set_aside": aside,
                    f"{key}:n_cases": n, f"{key}:sensitivity": sens, f"{key}:precision": prec,
                    f"{key}:f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0, f"{key}:fp_per_scan": fp / n})
    for key, bins in doc.get("by_size", {}).items():
        for j, (found, inserted) in enumerate(bins):
            out[f"{key}:size{j}"] = f"{found}/{inserted}"
    secs = sorted(doc.get("seconds", []))
    if secs:
        mid = len(secs) // 2
        out["median_s"] = secs[mid] if len(secs) % 2 else (secs[mid - 1] + secs[mid]) / 2
    return out


def parse_evaluate_json(doc: dict) -> dict:
    """training.evaluate --out: per group, the row at the model's threshold."""
    out = {}
    for group, g in doc.items():
        if not isinstance(g, dict) or "rows" not in g:
            continue
        for r in g["rows"]:
            for k in ("tp", "fp", "fn", "sensitivity", "precision", "f1", "fp_per_scan"):
                if k in r:
                    out[f"{group}@{r['threshold']:g}:{k}"] = r[k]
            out[f"{group}@{r['threshold']:g}:n_cases"] = g.get("n_cases")
    if doc.get("mean_detect_s") is not None:
        out["mean_detect_s"] = doc["mean_detect_s"]
    return out


def parse_stdout(text: str, regexes: dict) -> dict:
    out = {}
    for key, rx in regexes.items():
        m = re.search(rx, text, re.MULTILINE)
        if m:
            out[key] = m.group(1)
    return out


PARSERS = {"froc_json": parse_froc_json, "evaluate_json": parse_evaluate_json}


def regenerate(entry: dict, timeout: float = 3600) -> dict:
    """{field: new value} from running `entry`'s regenerate command once ({python}: this
    Python; {out}: a temporary JSON file the command writes; {tmp}: a temporary folder)."""
    spec = entry["regenerate"]
    cmd = spec["command"]
    with tempfile.TemporaryDirectory() as tmp:
        out_file = Path(tmp) / "out.json"
        cmd = cmd.replace("{out}", shlex.quote(str(out_file))).replace("{tmp}", shlex.quote(tmp))
        stdout = _run(cmd.replace("{python}", shlex.quote(sys.executable)), timeout)
        if spec["parser"] == "stdout":
            return parse_stdout(stdout, spec["regex"])
        return PARSERS[spec["parser"]](json.loads(out_file.read_text(encoding="utf-8")))


def reprint(printed: str, fields, results: dict) -> str:
    """`printed` with its numbers replaced, in order, by the results named in `fields`, each at
    the printed number of decimals (a string result replaces the whole figure)."""
    if fields is None:
        return printed
    fields = fields if isinstance(fields, list) else [fields]
    if len(fields) == 1 and isinstance(results.get(fields[0]), str):
        return re.sub(r"\d+/\d+", results[fields[0]], printed, count=1)
    parts = re.split(r"((?<![\w.])\d+(?:\.\d+)?)", printed)
    k = 0
    for j in range(1, len(parts), 2):
        if k >= len(fields):
            break
        f = fields[k]
        k += 1
        if f is None or f not in results or results[f] is None:
            continue
        old, new = parts[j], float(results[f])
        decimals = len(old.split(".")[1]) if "." in old else 0
        parts[j] = f"{new:.{decimals}f}"
    return "".join(parts)


def this_device() -> str:
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), load {os.getloadavg()[0]:.1f} at start, " \
        "this dev machine" if hasattr(os, "getloadavg") else f"{os.cpu_count()} CPU cores"


def run_entries(manifest: dict, entries: list, write: bool, path: Path = MANIFEST) -> int:
    """Regenerate `entries`, print each changed figure; with `write`, put the new figures (and
    today's date, this device) into `manifest` and save it at `path`.  Returns how many changed
    or failed."""
    changed = 0
    for e in entries:
        spec = e["regenerate"]
        print(f"{e['id']}: {spec['command']}", flush=True)
        try:
            results = regenerate(e, spec.get("timeout_s", 3600))
        except (RuntimeError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as exc:
            print(f"  failed: {exc}")
            changed += 1
            continue
        values = e["value"] if isinstance(e["value"], list) else [e["value"]]
        new = [reprint(v, f, results) for v, f in zip(values, spec["fields"])] + values[len(spec["fields"]):]
        volatile = {values[i] for i in spec.get("volatile", [])}   # timings: reported, not counted
        diffs = [(a, b) for a, b in zip(values, new) if a != b]
        for a, b in diffs:
            print(f"  {a!r} -> {b!r}{' (follows the machine)' if a in volatile else ''}")
        if not [d for d in diffs if d[0] not in volatile]:
            print("  unchanged" if not diffs else "  figures unchanged")
            continue
        changed += 1
        if write:
            e["value"] = new
            for f, t in printed_items(e):
                if f.endswith(".json"):
                    continue
                for a, b in diffs:
                    t = t.replace(a, b)
                e["printed"][f] = t
            e["date"] = datetime.date.today().isoformat()
            e["device"] = this_device()
            print("  manifest updated; now print the new figures in: " + ", ".join(e["printed"]))
    if write:
        save_manifest(manifest, path)
    return changed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare the docs with the manifest (what the test does)")
    ap.add_argument("--add-missing", action="store_true", help="append draft entries for unlisted figures")
    ap.add_argument("--list", action="store_true", help="list the entries that can be regenerated")
    ap.add_argument("--quick", action="store_true", help="only the entries CI can afford (a few minutes)")
    ap.add_argument("--only", action="append", metavar="ID", help="regenerate this entry (repeatable)")
    ap.add_argument("--all", action="store_true", help="regenerate every entry that has a command to parse (hours)")
    ap.add_argument("--write", action="store_true", help="write changed figures into the manifest")
    args = ap.parse_args(argv)
    manifest = load_manifest()
    if args.check:
        problems = check(manifest, read_texts())
        print("\n".join(problems) or f"{len(manifest['figures'])} entries, every published figure listed")
        return 1 if problems else 0
    if args.add_missing:
        new = draft_entries(manifest, read_texts())
        manifest["figures"] += new
        save_manifest(manifest)
        print(f"{len(new)} draft entries added to {MANIFEST.relative_to(ROOT)}: fill in what, command, data, device")
        return 0
    regen = [e for e in manifest["figures"] if e.get("regenerate")]
    if args.only:
        known = {e["id"] for e in manifest["figures"]}
        missing = [i for i in args.only if i not in known]
        if missing:
            print(f"no entry {', '.join(missing)} in {MANIFEST.relative_to(ROOT)}")
            return 2
        regen = [e for e in regen if e["id"] in args.only]
    elif args.quick:
        regen = [e for e in regen if e["regenerate"].get("quick")]
    elif not (args.all or args.list):
        ap.print_help()
        return 0
    if args.list:
        for e in regen:
            spec = e["regenerate"]
            print(f"{e['id']}: ~{spec.get('minutes', '?')} min{' (quick)' if spec.get('quick') else ''}: "
                  f"{spec['command']}")
        return 0
    changed = run_entries(manifest, regen, args.write)
    print(f"{len(regen)} entries regenerated, {changed} changed or failed")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
