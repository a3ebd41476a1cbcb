"""`cmb models`: list the detection models, bundled and fine-tuned (with their card's summary).

Each with version, intended input and performance; fine-tuned models live in the user
models folder (`CMBLib.detection.registry`).
"""
import json


def add_parser(subparsers):
    p = subparsers.add_parser("models", help="list the bundled detection models",
                              description=__doc__.split("\n")[0].replace("`", ""))
    p.add_argument("--json", action="store_true", help="print the models' metadata as JSON")
    p.add_argument("--models-dir", default=None, metavar="DIR",
                   help="user models folder (default: $CMB_MODELS_DIR, else ~/.cmb/models)")
    return p


def run(args) -> int:
    from ..detection.model_io import MODELS_DIR, default_model_name
    from ..detection.registry import card_summary, list_all_models, user_models_dir

    models = list_all_models(args.models_dir)
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    user_dir = user_models_dir(args.models_dir)
    if not models:
        print(f"no bundled detection model is installed (looked in {MODELS_DIR}) and no fine-tuned model in "
              f"{user_dir}; pass --model PATH to `cmb detect`")
        return 0
    default = default_model_name() if any(m["source"] == "bundled" for m in models) else None
    for m in models:
        star = " (default)" if m["name"] == default and m["source"] == "bundled" else ""
        print(f"{m['name']} {m.get('version', '')}{star} [{m['source']}]")
        if m["source"] == "user":
            print(f"  folder         : {m['path']}")
            for line in card_summary(m):
                print(f"  {line}")
            if m.get("card"):
                print(f"  model card     : {m['card']}")
        print(f"  intended input : {m.get('intended_input', '')}")
        print(f"  model grid     : {' x '.join(str(s) for s in m['spacing_mm'])} mm, "
              f"patch {' x '.join(str(s) for s in m['patch_size'])} voxels, threshold {m.get('threshold')}")
        if m.get("training_data") and m["source"] == "bundled":
            print(f"  training data  : {_text(m['training_data'])}")
        lines = _metrics(m.get("metrics"), m)
        print(f"  performance    : {lines[0]}")
        for line in lines[1:]:
            print(f"    {line}")
        print(f"  sha256         : {m.get('sha256', '')}")
    if not any(m["source"] == "user" for m in models):
        print(f"(no fine-tuned models in {user_dir}; make one with `python -m training.finetune`)")
    return 0


def _text(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


SHOWN = ("n_cases", "tp", "fp", "fn", "sensitivity", "precision", "f1", "fp_per_scan", "mean_detect_s")
NOTES = ("rule", "brains")               # strings printed before the figures
DESCRIBED = ("data", "settings", "measured")   # strings printed under a group's figures


def _metrics(metrics, meta=None) -> list:
    """Lines describing a metrics dict: its notes (rule, brains) on the first line, then each
    measured group that names its data (key "data"; a fine-tuned model's validation and test
    groups name their studies through its "finetune" record), key figures only, with its data
    and settings.  Figures without their data named are not printed (`cmb models --json` has
    everything)."""
    if not metrics:
        return ["not measured"]
    if not isinstance(metrics, dict):
        return ["not measured (no figures with their data named)"]
    head = [f"{k} {metrics[k]}" for k in NOTES if isinstance(metrics.get(k), str)]
    groups, hidden = [], []

    def walk(prefix, d):
        leaves = {k: v for k, v in d.items() if not isinstance(v, dict)}
        figures = {k: v for k, v in leaves.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        data = leaves.get("data") or _finetune_data(meta, prefix)
        if prefix and figures:
            if data:
                shown = [f"{k} {_num(figures[k])}" for k in SHOWN if k in figures] or \
                    [f"{k} {_num(v)}" for k, v in figures.items()]
                groups.append(f"{prefix}: " + ", ".join(shown))
                groups.append(f"  data: {data}")
                groups.extend(f"  {k}: {leaves[k]}" for k in DESCRIBED[1:] if isinstance(leaves.get(k), str))
            else:
                hidden.append(prefix)
        for k, v in d.items():
            if isinstance(v, dict):
                walk(f"{prefix} {k}".strip(), v)

    walk("", metrics)
    if hidden:
        groups.append(f"({len(hidden)} group(s) without their data named not shown: {', '.join(hidden)})")
    if not head and not [g for g in groups if not g.startswith("(")]:
        return ["not measured (no figures with their data named)"] + groups
    return ["; ".join(head) or "figures below"] + groups


def _finetune_data(meta, group) -> str:
    """The studies a fine-tuned model's validation / test figures were measured on."""
    ft = (meta or {}).get("finetune") or {}
    subjects = {"validation": ft.get("val_subjects"), "parent_validation": ft.get("val_subjects"),
                "test": ft.get("test_subjects")}.get(group)
    if not subjects:
        return ""
    sets = ", ".join(str(d.get("path")) for d in (meta.get("training_datasets") or []))
    kind = "held-out test" if group == "test" else "validation"
    return f"{len(subjects)} {kind} studies of {sets or 'the fine-tuning data'} ({', '.join(map(str, subjects))})"


def _num(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
