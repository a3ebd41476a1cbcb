"""CPU / GPU agreement of `detect` with the real bundled model (cmb-default), for the model card.

    python benchmarks/check_devices.py --out DIR [--qsm chi_cosmos.nii.gz --qsm-mask msk.nii.gz]
                                       [--devices cpu,cuda,cuda-fp32] [--threads N]

Cases: "demo" (`make_demo_study(0)`) and, with --qsm/--qsm-mask (../shared/data/real/qsm2016),
"real" (`make_real_background_case`: the case of Testing/test_detection_bundled_model.py).
Per device: the first `load_model("default")` is timed (CUDA's start-up separately), one
warm-up `detect` runs on a tiny study, then each case's `detect` (keep_model_grid=True) is
timed, with the CUDA memory peak (torch.cuda.max_memory_allocated).  Every other device is
compared with "cpu": max |probability difference| on the output grid and on the model grid,
and the records (centre RAS mm, max_probability, stage-2 score): they match when the counts
are equal, each CPU record's nearest GPU record lies within 0.5 mm and max_probability
agrees within 1e-3 (the stage-2 score difference is reported beside).

Devices: "cpu", "cuda" (torch's default float32 settings, which let cuDNN convolutions use
TF32 on Ampere and newer GPUs) and "cuda-fp32" (the same with TF32 off for convolutions and
matrix products).  A device that is absent is reported in one line and skipped.  Without
SimpleITK (detect resamples with it) only the network is compared: sliding-window
probabilities of the demo image normalised on its own grid.

Writes DIR/device_check.json and DIR/device_check.txt (what is printed).  A device that raises
is reported (its first error) and the others go on.  Exit status 1 when some device's records
differ from the CPU's or a device failed, 2 on bad arguments, else 0.
"""
import argparse
import contextlib
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CENTRE_TOL_MM = 0.5
PROB_TOL = 1e-3
LINES: list = []
ERRORS: dict = {}   # device -> the first error it raised (the other devices still run)


def say(text: str = "") -> None:
    print(text, flush=True)
    LINES.append(text)


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 for cuDNN convolutions and CUDA matrix products on (torch's default) or off."""
    import torch

    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@contextlib.contextmanager
def guarded(name: str):
    """Record (in ERRORS) and print an exception of device `name` instead of stopping the check."""
    try:
        yield
    except Exception as exc:  # one device failing must not lose the others' figures
        msg = (str(exc).strip().splitlines() or [""])[0][:300]
        ERRORS.setdefault(name, f"{type(exc).__name__}: {msg}")
        say(f"{name}: FAILED: {ERRORS[name]}")


def torch_device(name: str) -> str:
    return "cuda" if name.startswith("cuda") else name


def settings_of(name: str):
    return tf32(False) if name == "cuda-fp32" else contextlib.nullcontext()


def tiny_study():
    """A small synthetic head (16 x 48 x 48 voxels) for the warm-up call."""
    from CMBLib.synthesis.demo_study import make_demo_phantom

    return make_demo_phantom(0, shape_kji=(16, 48, 48))[0]


def records_of(res) -> list:
    return [{"centre_ras": [round(float(v), 3) for v in r["centre_ras"]],
             "max_probability": round(float(r["max_probability"]), 6),
             "stage2_probability": r.get("stage2_probability")} for r in res.records]


def compare_records(ref: list, other: list) -> dict:
    """Pair each reference record with its nearest other record; the lists match when the
    counts are equal, the pairing is one-to-one, centres lie within CENTRE_TOL_MM and
    max_probability within PROB_TOL."""
    out = {"count": [len(ref), len(other)], "max_centre_mm": None, "max_probability_diff": None,
           "max_stage2_diff": None}
    if ref and other:
        a = np.array([r["centre_ras"] for r in ref], float)
        b = np.array([r["centre_ras"] for r in other], float)
        dist = np.linalg.norm(a[:, None] - b[None], axis=2)
        near = dist.argmin(axis=1)
        out["max_centre_mm"] = round(float(dist[np.arange(len(a)), near].max()), 4)
        out["max_probability_diff"] = float(max(abs(r["max_probability"] - other[n]["max_probability"])
                                                for r, n in zip(ref, near)))
        s2 = [abs(r["stage2_probability"] - other[n]["stage2_probability"]) for r, n in zip(ref, near)
              if r["stage2_probability"] is not None and other[n]["stage2_probability"] is not None]
        out["max_stage2_diff"] = float(max(s2)) if s2 else None
        one_to_one = len(set(near.tolist())) == len(near)
    else:
        one_to_one = True
    out["match"] = bool(len(ref) == len(other) and one_to_one
                        and (not ref or (out["max_centre_mm"] <= CENTRE_TOL_MM
                                         and out["max_probability_diff"] <= PROB_TOL)))
    return out


def available(names: list) -> list:
    """The requested devices that work here; one line when the CUDA ones do not."""
    import torch

    if torch.cuda.is_available():
        return list(names)
    gone = [n for n in names if n.startswith("cuda")]
    if gone:
        say(f"no CUDA device here (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}): "
            f"{', '.join(gone)} skipped, CPU only")
    return [n for n in names if n not in gone]


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "cpu_threads": torch.get_num_threads(), "cuda": None,
           "SimpleITK": None, "monai_installed": importlib.util.find_spec("monai") is not None}
    if importlib.util.find_spec("SimpleITK") is not None:
        import SimpleITK

        env["SimpleITK"] = SimpleITK.__version__
    if torch.cuda.is_available():
        env["cuda"] = {"device": torch.cuda.get_device_name(0), "runtime": torch.version.cuda,
                       "cudnn": torch.backends.cudnn.version(),
                       "cudnn_allow_tf32_default": torch.backends.cudnn.allow_tf32,
                       "matmul_allow_tf32_default": torch.backends.cuda.matmul.allow_tf32}
    return env


def load_models(devices: list) -> tuple:
    """{torch device: (network, meta)} and {device: seconds of the first load_model there}."""
    import torch

    from CMBLib.detection.model_io import load_model

    models, timing = {}, {}
    for name in devices:
        dev = torch_device(name)
        if dev in models or name in ERRORS:
            continue
        with guarded(name):
            if dev == "cuda":
                t = time.perf_counter()
                torch.zeros(1, device="cuda").sum().item()
                timing["cuda_init"] = round(time.perf_counter() - t, 3)
            t = time.perf_counter()
            models[dev] = load_model("default", device=dev)
            if dev == "cuda":
                torch.cuda.synchronize()
            timing[dev] = round(time.perf_counter() - t, 3)
    return models, timing


def run_detect(models: dict, devices: list, cases: dict) -> dict:
    """{case: {device: {"time_s", "timings", "records", "cuda_peak_mib", arrays...}}}."""
    import torch

    from CMBLib.detection.pipeline import detect

    tiny = tiny_study()
    out = {case: {} for case in cases}
    for name in devices:
        dev = torch_device(name)
        if dev not in models:
            continue
        model = models[dev]
        with guarded(name), settings_of(name):
            t = time.perf_counter()
            detect(tiny, model, device=dev)
            say(f"{name}: warm-up detect on a tiny study {time.perf_counter() - t:.2f} s")
            for case, (img, _) in cases.items():
                if dev == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t = time.perf_counter()
                res = detect(img, model, device=dev, keep_model_grid=True)
                wall = time.perf_counter() - t
                peak = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1) if dev == "cuda" else None
                out[case][name] = {"time_s": round(wall, 3), "timings": res.timings, "cuda_peak_mib": peak,
                                   "device_used": res.settings["device"], "warnings": res.warnings,
                                   "records": records_of(res),
                                   "candidates_before_stage2": len(res.model_grid.get("records", [])),
                                   "_prob": res.probability.array, "_prob_model": res.model_grid["probability"]}
    return out


def run_network_only(models: dict, devices: list) -> dict:
    """Without SimpleITK: the sliding-window probabilities of the demo image (normalised on its
    own 0.9 x 0.9 x 3 mm grid, no resampling) on each device, as detect runs the network."""
    import torch

    from CMBLib.detection.inference import predict_probability
    from CMBLib.detection.preprocess import brain_mask_from_image, normalise
    from CMBLib.synthesis.demo_study import make_demo_study

    img = make_demo_study(0)[0]
    mask = brain_mask_from_image(img)
    arr = normalise(np.asarray(img.array, np.float32), mask)
    out = {"demo-network": {}}
    for name in devices:
        dev = torch_device(name)
        if dev not in models:
            continue
        network, meta = models[dev]
        window = meta.get("inference_patch_size") or meta["patch_size"]
        kw = {"overlap": float(meta.get("inference_overlap", 0.125)), "mask": mask,
              "flip_average": bool(meta.get("flip_average", False))}
        with guarded(name), settings_of(name):
            predict_probability(network, arr[:16, :48, :48], window, device=dev, **dict(kw, mask=mask[:16, :48, :48]))
            if dev == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            prob, used = predict_probability(network, arr, window, device=dev, **kw)
            wall = time.perf_counter() - t
            peak = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1) if dev == "cuda" else None
            out["demo-network"][name] = {"time_s": round(wall, 3), "cuda_peak_mib": peak, "device_used": used,
                                         "records": None, "_prob": None, "_prob_model": prob}
    return out


def max_diff(a, b):
    if a is None or b is None:
        return None
    if a.shape != b.shape:
        return f"shapes differ: {a.shape} vs {b.shape}"
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def report(results: dict) -> bool:
    """Print each case's figures per device and the comparisons with cpu; True when all match."""
    all_match = True
    for case, per in results.items():
        say(f"\n== {case}")
        for name, r in per.items():
            peak = f", CUDA peak {r['cuda_peak_mib']} MiB" if r["cuda_peak_mib"] is not None else ""
            say(f"{name}: {r['time_s']:.3f} s{peak} (ran on {r['device_used']}); timings {r.get('timings', {})}")
            for w in r.get("warnings") or []:
                say(f"  warning: {w}")
            if r["records"] is not None:
                say(f"  {len(r['records'])} record(s), {r['candidates_before_stage2']} candidate(s) before stage 2")
                for rec in r["records"]:
                    c = ", ".join(f"{v:.2f}" for v in rec["centre_ras"])
                    say(f"    centre ({c}) mm  max_probability {rec['max_probability']:.6f}  "
                        f"stage2 {rec['stage2_probability']}")
        ref = per.get("cpu")
        for name, r in per.items():
            if name == "cpu" or ref is None:
                continue
            cmp = {"max_abs_diff_output_grid": max_diff(ref["_prob"], r["_prob"]),
                   "max_abs_diff_model_grid": max_diff(ref["_prob_model"], r["_prob_model"])}
            if ref["records"] is not None:
                cmp["records"] = compare_records(ref["records"], r["records"])
                all_match &= cmp["records"]["match"]
            r["vs_cpu"] = cmp
            say(f"cpu vs {name}: max |dp| output grid {cmp['max_abs_diff_output_grid']}, "
                f"model grid {cmp['max_abs_diff_model_grid']}")
            if "records" in cmp:
                c = cmp["records"]
                say(f"  records {'MATCH' if c['match'] else 'DIFFER'}: counts {c['count'][0]} / {c['count'][1]}, "
                    f"max centre distance {c['max_centre_mm']} mm, max max_probability diff "
                    f"{c['max_probability_diff']}, max stage-2 diff {c['max_stage2_diff']} "
                    f"(tolerances {CENTRE_TOL_MM} mm, {PROB_TOL})")
    return all_match


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for device_check.json and device_check.txt")
    ap.add_argument("--qsm", help="chi_cosmos.nii.gz of the 2016 QSM challenge (the real-background case)")
    ap.add_argument("--qsm-mask", help="its brain mask, msk.nii.gz")
    ap.add_argument("--devices", default="cpu,cuda,cuda-fp32", help="comma-separated: cpu, cuda, cuda-fp32")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args(argv)
    names = [d.strip() for d in args.devices.split(",") if d.strip()]
    bad = [d for d in names if d not in ("cpu", "cuda", "cuda-fp32")]
    if bad or "cpu" not in names:
        ap.error(f"--devices must list cpu and any of cuda, cuda-fp32 (got {args.devices!r})")
    if bool(args.qsm) != bool(args.qsm_mask):
        ap.error("give both --qsm and --qsm-mask, or neither")
    for p in (args.qsm, args.qsm_mask):
        if p and not Path(p).is_file():
            ap.error(f"{p}: file not found")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    import torch

    t_import = time.perf_counter() - t0
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment()
    say(f"environment: {json.dumps(env)}")
    devices = available(names)
    models, load_s = load_models(devices)
    meta = models["cpu"][1]
    say(f"model {meta['name']} {meta['version']} (sha256 {meta['sha256'][:12]}); import torch {t_import:.2f} s; "
        f"first load_model per device (s): {json.dumps(load_s)}")

    if env["SimpleITK"] is None:
        say("SimpleITK is not installed: detect cannot resample (CMBLib.detection.preprocess); comparing the "
            "network alone on the demo image (no records, no real-background case)")
        results = run_network_only(models, devices)
    else:
        from CMBLib.synthesis.demo_study import make_demo_study, make_real_background_case

        img, _, centres = make_demo_study(0)
        cases = {"demo": (img, centres)}
        if args.qsm:
            cases["real"] = make_real_background_case(args.qsm, args.qsm_mask)
        else:
            say("real-background case: not run (no --qsm / --qsm-mask)")
        results = run_detect(models, devices, cases)
    all_match = report(results)
    total = time.perf_counter() - t0
    if ERRORS:
        say(f"devices that failed: {json.dumps(ERRORS)}")
    say(f"\ntotal {total:.1f} s; records of every device match the CPU's: {all_match}")

    summary = {"environment": env, "model": {k: meta.get(k) for k in ("name", "version", "sha256")},
               "devices_requested": names, "devices_run": devices, "import_torch_s": round(t_import, 3),
               "first_load_model_s": load_s, "tolerances": {"centre_mm": CENTRE_TOL_MM, "probability": PROB_TOL},
               "cases": {case: {name: {k: v for k, v in r.items() if not k.startswith("_")}
                                for name, r in per.items()} for case, per in results.items()},
               "all_records_match": all_match, "errors": ERRORS, "total_s": round(total, 1)}
    (out_dir / "device_check.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "device_check.txt").write_text("\n".join(LINES) + "\n")
    return 0 if all_match and not ERRORS else 1


if __name__ == "__main__":
    sys.exit(main())
