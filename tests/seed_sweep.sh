#!/usr/bin/env bash
# Runs every randomised test once per base seed PARLEY_TEST_SEED = FIRST..LAST
# (default 1..200) and lists what failed, by test and seed. Not part of CI
# (CI runs the fixed default seed); rerun it after changing a kernel or a
# tolerance. Runs the gtest binaries directly, with filters, under nice.
#
#   tests/seed_sweep.sh [BUILD_DIR] [FIRST] [LAST]
#
# Needs the binaries built (cmake --build BUILD_DIR --target test_cuda_math
# test_kernels test_simt_attention test_decoding test_runtime parley_cpu) and
# the runtime tests' fixtures (ctest -R '^(make_test_models|build_third_party_plugin)$').
# SWEEP_SIMT_HEAVY_EVERY=N runs the slow SIMT-emulator cases (tens of seconds
# per seed) only for every N-th seed (default 1: all); SWEEP_PYTHON=0 skips
# the Python tests.
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
first=${2:-1}
last=${3:-200}
heavy_every=${SWEEP_SIMT_HEAVY_EVERY:-1}
log=$(mktemp -d /tmp/parley_seed_sweep.XXXXXX)

export PARLEY_TEST_DATA_DIR=$build/tests/data
export PARLEY_PLUGIN_BUILD_DIR=$build/lib/parley/plugins
export PARLEY_PLUGIN_PATH=
export PARLEY_THIRD_PARTY_PLUGIN=$build/tests/third_party_plugin/build/out/libparley_thirdparty.so
export PARLEY_BAD_PLUGIN_DIR=$build/tests/runtime
export PARLEY_DECODING_REFERENCE=$src/tests/decoding/reference.json

# binary | gtest filter of its randomised tests | heavy (1: every heavy_every-th seed only)
suites=(
  "tests/cuda_math/test_cuda_math|TileMath.*|0"
  "tests/kernels/test_kernels|*|0"
  "tests/decoding/test_decoding|Sampling.*:BeamCandidates.SparseSelectionEqualsDense|0"
  "tests/runtime/test_runtime|ModelFileTest.BitFlipsInPreambleAndHeaderAreCaughtByChecksums:ModelFileTest.CorruptHeaderBehindValidChecksumFailsVerification:ModelFileTest.RandomDamageNeverCrashes:Registry.ThirdPartyPluginOverridesSoftmaxByPriorityAndIsUsed|0"
  "tests/simt/test_simt_attention|SimtAttention.HugeLogitsStayFinite:SimtHarness.*:SimtMma.*|0"
  "tests/simt/test_simt_attention|SimtAttention.*:SimtPrefill.*:-SimtAttention.HugeLogitsStayFinite|1"
)
python_tests=(
  "tests/python|test_every_dtype_rank_and_empty_tensor or test_big_sparse_file"
  "tests/parity|test_int8_quantization_and_bf16_rounding"
)

for suite in "${suites[@]}"; do
  IFS='|' read -r bin _ _ <<<"$suite"
  [ -x "$build/$bin" ] || { echo "missing $build/$bin: build it first" >&2; exit 2; }
done

runs=0 test_runs=0 failed_runs=0
: >"$log/failures"
for ((seed = first; seed <= last; seed++)); do
  for suite in "${suites[@]}"; do
    IFS='|' read -r bin filter heavy <<<"$suite"
    if [ "$heavy" = 1 ] && (((seed - first) % heavy_every != 0)); then continue; fi
    out=$log/$(basename "$bin").$seed.log
    PARLEY_TEST_SEED=$seed nice "$build/$bin" --gtest_filter="$filter" >"$out" 2>&1
    rc=$?
    runs=$((runs + 1))
    test_runs=$((test_runs + $(grep -c '^\[ RUN      \]' "$out")))
    if [ $rc -ne 0 ]; then
      failed_runs=$((failed_runs + 1))
      fails=$(grep '^\[  FAILED  \] [A-Za-z0-9_/.]* (' "$out" | awk '{print $4}')
      [ -n "$fails" ] || fails="$(basename "$bin")(rc=$rc)"
      for t in $fails; do echo "$t seed=$seed log=$out" >>"$log/failures"; done
    else
      rm -f "$out"
    fi
  done
  if [ "${SWEEP_PYTHON:-1}" = 1 ]; then
    for pt in "${python_tests[@]}"; do
      IFS='|' read -r dir expr <<<"$pt"
      out=$log/python.$(basename "$dir").$seed.log
      PARLEY_TEST_SEED=$seed PYTHONPATH=$src/formats/python PYTHONDONTWRITEBYTECODE=1 \
        nice "$build/venv/bin/python" -m pytest -q -p no:cacheprovider "$src/$dir" -k "$expr" >"$out" 2>&1
      rc=$?
      runs=$((runs + 1))
      test_runs=$((test_runs + $(grep -Eo '[0-9]+ (passed|failed)' "$out" | awk '{s += $1} END {print s + 0}')))
      if [ $rc -ne 0 ]; then
        failed_runs=$((failed_runs + 1))
        fails=$(grep -E '^FAILED ' "$out" | awk '{print $2}')
        [ -n "$fails" ] || fails="pytest:$dir(rc=$rc)"
        for t in $fails; do echo "$t seed=$seed log=$out" >>"$log/failures"; done
      else
        rm -f "$out"
      fi
    done
  fi
  (((seed - first + 1) % 10 == 0)) && echo "seed $seed: $runs runs, $test_runs test runs, $failed_runs failing runs so far"
done

echo "== seeds $first..$last: $runs process runs, $test_runs test runs, $failed_runs failing runs (logs: $log)"
if [ -s "$log/failures" ]; then
  echo "== failures (test: count)"
  awk '{print $1}' "$log/failures" | sort | uniq -c | sort -rn
  echo "== failures (test, seed, log)"
  cat "$log/failures"
  exit 1
fi
echo "no failures"
