"""What a new user trips over first: bad CSV input, file modes under the umask, `cmb --help`."""
import gzip
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from phantoms import PhantomCMB, make_phantom

from CMBLib.cli import main
from CMBLib.errors import CMBError
from CMBLib.io import atomic_path, make_temp_dir, read_points_csv, write_text_atomic, write_volume

REPO = Path(__file__).resolve().parents[1]

BAD_POINTS = {
    # name: (file content, words the one-line message must hold)
    "image.nii.gz": (gzip.compress(b"\x5c\x01\x00\x00" + bytes(range(256)) * 8), "binary data"),
    "undecodable.csv": ("x,y,z\n1,2,3\n".encode("utf-16"), "binary data"),
    "latin1.csv": ("x,y,z,name\n1,2,3,Müller\n".encode("latin-1"), "binary data"),
    "empty.csv": (b"", "empty points file"),
    "blank.csv": (b"\n  \n\n", "empty points file"),
    "columns.csv": (b"a,b,c\n1,2,3\n", "needs a header with columns x,y,z"),
    "no_header.csv": (b"1,2,3\n4,5,6\n", "needs a header with columns x,y,z"),
    "text.csv": (b"x,y,z\n1,2,three\n", "point 1 ('1,2,three') has no numeric x,y,z"),
    "short.csv": (b"x,y,z\n1,2,3\n4,5\n", "point 2"),
    "nan.csv": (b"x,y,z\n1,nan,3\n", "NaN or infinite"),
}


@pytest.fixture()
def small_study(tmp_path):
    vol, _, scr = make_phantom([PhantomCMB((10.0, 10.0, 10.0), 2.5, 0.6)], (24, 24, 10), (0.9, 0.9, 2.0), seed=1)
    write_volume(vol, tmp_path / "t2s.nii.gz")
    write_volume(scr.with_array(scr.array.astype(np.uint16)), tmp_path / "scribbles.nii.gz")
    return tmp_path


@pytest.mark.parametrize("name", sorted(BAD_POINTS))
def test_every_bad_points_file_is_one_line_and_exit_2(small_study, name, capsys):
    content, words = BAD_POINTS[name]
    bad = small_study / name
    bad.write_bytes(content)
    with pytest.raises(CMBError, match=words.replace("(", r"\(").replace(")", r"\)")):
        read_points_csv(bad)
    image = str(small_study / "t2s.nii.gz")
    grow = ["grow", image, "--points", str(bad), "-o", str(small_study / "m.nii.gz")]
    for argv in (["locate", image, str(bad)], grow):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err and name in err, (argv, err)
    assert not (small_study / "m.nii.gz").exists()


def test_swapped_arguments_in_a_fresh_process_give_no_traceback(small_study):
    """The reported case: `cmb locate IMG mask.nii.gz` with the arguments swapped."""
    image, mask = str(small_study / "t2s.nii.gz"), str(small_study / "scribbles.nii.gz")
    for argv in (["locate", image, mask], ["grow", image, "--points", mask, "-o", str(small_study / "o.nii.gz")]):
        proc = subprocess.run([sys.executable, "-m", "CMBLib", *argv], capture_output=True, text=True, cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert "scribbles.nii.gz: is not a text CSV file" in proc.stderr


def test_points_csv_forms_that_work(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("\ufeff# Markups fiducial file\nlabel,r,a,s\n\nA,1.5,-2,3\nB,4,5e1,-6\n", encoding="utf-8")
    assert read_points_csv(f).tolist() == [[1.5, -2.0, 3.0], [4.0, 50.0, -6.0]]
    f.write_text("x,y,z\n", encoding="utf-8")  # a header alone: no points, not an error
    assert read_points_csv(f).shape == (0, 3)


@pytest.fixture()
def umask():
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750),
                                                        (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)])
def test_written_files_and_folders_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    text = write_text_atomic(tmp_path / "new" / "a.txt", "x")
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"1")
    folder = make_temp_dir(tmp_path, ".staging-")
    assert stat.S_IMODE(text.stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == dir_mode
    assert stat.S_IMODE(folder.stat().st_mode) == dir_mode
    # replacing a file gives the new one the umask's mode too, not the old file's
    os.chmod(text, 0o600)
    write_text_atomic(text, "y")
    assert stat.S_IMODE(text.stat().st_mode) == file_mode


def test_grow_outputs_are_group_readable_under_umask_022(small_study, umask):
    umask(0o022)
    out = small_study / "results" / "mask.nii.gz"
    assert main(["grow", str(small_study / "t2s.nii.gz"), str(small_study / "scribbles.nii.gz"), "-o", str(out),
                 "--quiet"]) == 0
    for p in (out, out.with_name("mask.json"), out.parent):
        assert stat.S_IMODE(p.stat().st_mode) == (0o755 if p.is_dir() else 0o644), p


def test_exported_dataset_and_autosave_are_group_readable(small_study, umask, tmp_path):
    from CMBLib.annotation.session import SessionStore
    from CMBLib.io import read_volume

    umask(0o022)
    dataset = tmp_path / "dataset"
    assert main(["export", "--image", str(small_study / "t2s.nii.gz"), "--scribbles",
                 str(small_study / "scribbles.nii.gz"), "--out", str(dataset), "--subject", "001",
                 "--no-location"]) == 0
    written = list(dataset.rglob("*"))
    assert len(written) > 10
    for p in written:
        assert stat.S_IMODE(p.stat().st_mode) == (0o755 if p.is_dir() else 0o644), p
    from CMBLib.annotation.document import new_document

    store = SessionStore(tmp_path / "sessions")
    folder = store.save("key1", new_document(), read_volume(small_study / "scribbles.nii.gz"))
    for p in [folder, *folder.iterdir()]:
        assert stat.S_IMODE(p.stat().st_mode) == (0o755 if p.is_dir() else 0o644), p


def test_help_imports_no_numerics(tmp_path):
    """`cmb --help` must be quick: no numpy / scipy / torch before a sub-command runs."""
    code = ("import sys; from CMBLib.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('numpy', 'scipy', 'torch', 'SimpleITK') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_grow_cli_names_match_the_engine():
    from CMBLib.cli import grow
    from CMBLib.growing import DEFAULT_MODE, MODES

    assert grow.MODES == tuple(MODES) and grow.DEFAULT_MODE == DEFAULT_MODE


def test_every_option_has_help():
    from CMBLib.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        for action in p._actions:
            assert action.help, f"cmb {name} {'/'.join(action.option_strings) or action.dest}: no help text"
        assert "`" not in (p.description or ""), f"cmb {name}: back-ticks in the description"


@pytest.mark.parametrize("content, words", [(b"\x89PNG\r\n\x1a\n\x00\x01\xff", "binary data"),
                                            (b"", "not valid JSON"), (b'{"cmbs": [', "not valid JSON")])
def test_every_json_reader_gives_one_line(tmp_path, content, words):
    """The four JSON readers share CMBLib.io.read_json: annotation, model card, detections, sidecar."""
    from CMBLib.annotation.document import load_document
    from CMBLib.detection.model_io import read_metadata
    from CMBLib.detection.outputs import read_detections
    from CMBLib.metrics.pairing import read_sidecar

    (tmp_path / "model.json").write_bytes(content)
    (tmp_path / "case_cmb.json").write_bytes(content)
    calls = {"an annotation": lambda: load_document(tmp_path / "case_cmb.json"),
             "model metadata": lambda: read_metadata(tmp_path),
             "detections JSON": lambda: read_detections(tmp_path / "case_cmb.json"),
             "a CMB sidecar JSON": lambda: read_sidecar(tmp_path / "case_cmb_mask.nii.gz")}
    for what, call in calls.items():
        with pytest.raises(CMBError) as info:
            call()
        message = str(info.value)
        assert f"cannot be read as {what}" in message and words in message and "\n" not in message


def test_demo_says_what_the_bundled_model_really_finds(tmp_path, capsys):
    """The demo, README and docs say what cmb-default 0.3.4 finds on the default study (seed 0, the
    skull-on head): 5 of its 8 CMBs, the red-nucleus and choroid pairs set aside, no other finding;
    on the phantom 3 of 6 and no other spot.  If the bundled model changes, this fails: update the
    sentences in cli/demo.py and the docs."""
    pytest.importorskip("torch")
    from CMBLib.cli.demo import EXPECT, INTRO, KNOWN

    assert main(["demo", "--out", str(tmp_path / "d"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "finds 5 of the 8 CMBs" in EXPECT and out.startswith(EXPECT)
    assert "found 5 of 8 inserted CMBs; 0 candidate(s) match no inserted CMB" in out
    assert "4 candidate(s) set aside by the location filter (symmetric_pairs" in out
    assert "marks no other spot" in EXPECT
    assert main(["demo", "--out", str(tmp_path / "p"), "--device", "cpu", "--study", "phantom"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(INTRO + KNOWN["phantom"]) and "finds 3 of the 6 inserted CMBs" in KNOWN["phantom"]
    assert "found 3 of 6 inserted CMBs; 0 candidate(s) match no inserted CMB" in out
