"""`cmb synth`: writes a VALDO-like synthetic dataset that training/ reads without conversion."""
import numpy as np

from CMBLib.cli import main
from CMBLib.io import read_volume


def test_cmb_synth_demo_writes_valdo_layout(tmp_path, capsys):
    assert main(["synth", str(tmp_path), "--demo", "--n", "1", "--seed", "4"]) == 0
    base = tmp_path / "sub-syn004" / "sub-syn004_space-T2S"
    img = read_volume(str(base) + "_desc-masked_T2S.nii.gz")
    cmb = read_volume(str(base) + "_CMB.nii.gz")
    rows = (tmp_path / "sub-syn004" / "sub-syn004_space-T2S_cmbs.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "label,x,y,z" and len(rows) == 1 + int(cmb.array.max())
    assert img.same_geometry(cmb)
    x, y, z = map(float, rows[1].split(",")[1:])
    i, j, k = np.round(img.ras_to_voxel([x, y, z])).astype(int)
    assert cmb.array[k, j, i] == 1
    # exists -> refused without --overwrite
    assert main(["synth", str(tmp_path), "--demo", "--n", "1", "--seed", "4"]) == 2
    assert "exists" in capsys.readouterr().err


def test_cmb_synth_needs_a_source(tmp_path, capsys):
    assert main(["synth", str(tmp_path)]) == 2
    assert "--labels" in capsys.readouterr().err
