# Fill devdata/ (git-ignored) for scripts/device_check.sh; run here, from the repository root:
#   bash scripts/prepare_device_check.sh [PYTHON]
# Copies the real QSM brain (../shared/data/real/qsm2016, never committed) and downloads the
# SimpleITK wheel for the GPU machine's Python 3.12 (abi3, about 53 MB; the machine has no
# SimpleITK and no network).  What travels stays under the device tool's 64 MiB.
set -euo pipefail
PY=${1:-python3}
DATA=${CMB_SHARED_DATA:-../shared/data}/real/qsm2016
mkdir -p devdata
cp "$DATA/chi_cosmos.nii.gz" "$DATA/msk.nii.gz" devdata/
chmod u+w devdata/*.nii.gz
git check-ignore -q devdata/msk.nii.gz || { echo "devdata/ is not git-ignored; add /devdata/ to .gitignore"; exit 2; }
SITK=$("$PY" -c "import SimpleITK; print(SimpleITK.__version__)")
rm -f devdata/*.whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d devdata "SimpleITK==$SITK"
du -sh devdata
