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
# the Python tests (run last, in one interpreter).
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
  "tests/decoding/test_decoding|Sampling.*:BeamCandidates.SparseSelectionEqualsDense:NonFiniteRows.*|0"
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
  (((seed - first + 1) % 10 == 0)) && echo "seed $seed: $runs runs, $test_runs test runs, $failed_runs failing runs so far"
done

# The Python tests: one interpreter for all seeds (pytest's start-up costs more
# than these tests), the base seed switched between pytest.main calls.
if [ "${SWEEP_PYTHON:-1}" = 1 ]; then
  PYTHONPATH=$src/formats/python:$src/tests/common PYTHONDONTWRITEBYTECODE=1 \
    nice "$build/venv/bin/python" - "$src" "$first" "$last" "$log" "${python_tests[@]}" <<'PY' >"$log/python.summary" 2>&1
import contextlib, io, os, sys
import pytest
import parley_test_seed
src, first, last, log, specs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
runs = tests = 0
for seed in range(first, last + 1):
    os.environ["PARLEY_TEST_SEED"] = str(seed)
    parley_test_seed._BASE = None
    for spec in specs:
        d, expr = spec.split("|")
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = pytest.main(["-q", "-p", "no:cacheprovider", "-rf", os.path.join(src, d), "-k", expr])
        runs += 1
        text = out.getvalue()
        tests += sum(int(w.split()[0]) for w in __import__("re").findall(r"\d+ (?:passed|failed)", text))
        if rc != 0:
            path = f"{log}/python.{os.path.basename(d)}.{seed}.log"
            open(path, "w").write(text)
            failed = [l.split()[1] for l in text.splitlines() if l.startswith("FAILED ")] or [f"pytest:{d}(rc={rc})"]
            with open(f"{log}/failures", "a") as f:
                for t in failed:
                    f.write(f"{t} seed={seed} log={path}\n")
print(runs, tests)
PY
  read -r py_runs py_tests <"$log/python.summary" || { cat "$log/python.summary"; py_runs=0 py_tests=0; }
  runs=$((runs + py_runs)) test_runs=$((test_runs + py_tests))
fi

echo "== seeds $first..$last: $runs runs (binary or pytest call x seed), $test_runs test runs, $failed_runs failing C++ runs (logs: $log)"
if [ -s "$log/failures" ]; then
  echo "== failures (test: count)"
  awk '{print $1}' "$log/failures" | sort | uniq -c | sort -rn
  echo "== failures (test, seed, log)"
  cat "$log/failures"
  exit 1
fi
echo "no failures"
