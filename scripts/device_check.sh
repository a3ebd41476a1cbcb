# CPU/GPU agreement check for the GPU machine (docs/detector.md, "CPU and GPU agreement").
# Prepare here once: bash scripts/prepare_device_check.sh (fills git-ignored devdata/), then
# run(command="bash scripts/device_check.sh", carry=["devdata"], timeout_s=300). Under 2000 chars;
# each step has its own time limit (setup + 100 s + 150 s < 4 min); results stream to $OUT/*.log.
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/device_check}; mkdir -p "$OUT"; T0=$SECONDS
# SimpleITK (detect resamples with it) is not installed there: install the carried wheel
if ls devdata/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site devdata/*.whl \
    && export PYTHONPATH=$PWD:/tmp/site || echo "SimpleITK wheel did not install"
fi
echo "setup $((SECONDS - T0)) s"
timeout 100 python3 -m pytest -q -rs Testing/test_detection_devices.py Testing/test_detection_inference.py -p no:cacheprovider 2>&1 | tee "$OUT/pytest.log"
RC_TESTS=$?
echo "tests rc=$RC_TESTS after $((SECONDS - T0)) s"
timeout 150 python3 benchmarks/check_devices.py --out "$OUT" --qsm devdata/chi_cosmos.nii.gz --qsm-mask devdata/msk.nii.gz 2>&1 | tee "$OUT/check.log"
RC_CHECK=$?
echo "check rc=$RC_CHECK, total $((SECONDS - T0)) s"
exit $((RC_TESTS > RC_CHECK ? RC_TESTS : RC_CHECK))
