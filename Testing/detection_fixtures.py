"""Small synthetic studies and models for the detection tests (imported by test_detection_*.py)."""
import numpy as np

from CMBLib.geometry import Volume

# Model metadata shared by the test models: 1 x 1 x 2 mm model grid, 32 x 32 x 16 patches.
META = {"name": "test-model", "version": "0.0-test", "spacing_mm": [1.0, 1.0, 2.0],
        "patch_size": [32, 32, 16], "threshold": 0.5, "min_diameter_mm": 2.0, "max_diameter_mm": 10.0,
        "intended_input": "tests only", "metrics": {"sensitivity": 0.5}}
TINY_UNET = {"architecture": "UNet", "channels": [4, 8], "strides": [2], "num_res_units": 0,
             "out_channels": 1}


def dark_spot_network():
    """A fixed torch module: CMB probability high where the normalised image is below -1.5.

    The preprocessing makes CMBs dark and scales the brain to about [-0.5, 0.5], so a
    dark sphere (normalised < -1.5) becomes a blob of probability ~1.  Voxels within two
    voxels of the clipped (-4) background are ignored, so the brain's rim is not a CMB.
    """
    import torch

    class DarkSpot(torch.nn.Module):
        def forward(self, x):
            pool = torch.nn.functional.max_pool3d
            clipped = (x < -3.9).float()
            large = -pool(-clipped, 5, stride=1, padding=2)  # erosion: spots vanish, background stays
            rim = pool(large, 9, stride=1, padding=4)
            return torch.where(rim > 0, torch.full_like(x, -10.0), -6.0 * (x + 1.5))

    return DarkSpot().eval()


def dark_spot_model(**meta):
    m = dict(META, name="dark-spot", sha256="")
    m.update(meta)
    return dark_spot_network(), m


def use_dark_spot_model(monkeypatch) -> str:
    """Make `--model dark-spot` (and load_model("dark-spot")) load `dark_spot_model()`, no file
    needed; other names load as usual.  Returns the name to pass."""
    from CMBLib.detection import model_io

    real = model_io.load_model

    def fake(name_or_path="default", device="cpu", models_dir=None):
        if str(name_or_path) == "dark-spot":
            return dark_spot_model()
        return real(name_or_path, device=device, models_dir=models_dir)

    monkeypatch.setattr(model_io, "load_model", fake)
    return "dark-spot"


def phantom(spots=(), spacing=(0.9, 0.9, 3.0), shape_kji=(24, 96, 96), bright=False, seed=0,
            origin=(-40.0, -45.0, -30.0), direction=None):
    """(Volume, list of true centres RAS) of a phantom.

    An ellipsoidal 'brain' N(100, 3) (N(0, 3) when `bright`, as QSM) on a zero background,
    with spheres of value 30 (70 when `bright`) at `spots` = [(centre_ijk, radius_mm)].
    """
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*(np.arange(n, dtype=float) for n in shape_kji), indexing="ij")
    ci, cj, ck = [(n - 1) / 2 for n in shape_kji[::-1]]
    x, y, z = (i - ci) * spacing[0], (j - cj) * spacing[1], (k - ck) * spacing[2]
    brain = (x / 38) ** 2 + (y / 40) ** 2 + (z / 30) ** 2 <= 1
    a = np.where(brain, rng.normal(0 if bright else 100, 3, shape_kji), 0.0).astype(np.float32)
    vol = Volume(a, spacing, origin, np.eye(3) if direction is None else direction)
    centres = []
    for (si, sj, sk), r in spots:
        d2 = ((i - si) * spacing[0]) ** 2 + ((j - sj) * spacing[1]) ** 2 + ((k - sk) * spacing[2]) ** 2
        a[d2 <= r * r] = 70.0 if bright else 30.0
        centres.append(vol.voxel_to_ras([si, sj, sk]))
    return vol, centres


def oblique(angle_deg=20.0):
    """A rotation about the S axis (direction matrix, RAS)."""
    t = np.deg2rad(angle_deg)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])


def tiny_model_folder(folder, seed=0, **meta):
    """Save a randomly initialised tiny UNet with `save_model` into `folder`; returns the folder."""
    import torch

    from CMBLib.detection.model_io import save_model
    from CMBLib.detection.network import build_network

    torch.manual_seed(seed)
    net = build_network(TINY_UNET)
    m = dict(META, network=TINY_UNET)
    m.update(meta)
    return save_model(net, m, folder)


def exact_brain_mask(monkeypatch):
    """Make the pipeline use the phantom's true brain (non-zero voxels) as brain mask, so
    these tests do not depend on the heuristics of `preprocess.brain_mask_from_image`."""
    import numpy as np

    from CMBLib.detection import preprocess

    def true_brain(volume, *args, **kwargs):
        return np.asarray(volume.array) != 0

    monkeypatch.setattr(preprocess, "brain_mask_from_image", true_brain)
