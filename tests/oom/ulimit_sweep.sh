#!/usr/bin/env bash
# Runs `test_oom --child` (runtime, the two demo models, a chat turn and a
# translation in a fresh process, so the GEMM's first call and its JIT
# kernels come under the limit too) under decreasing `ulimit -S -v` limits.
# Each run must end with the reference answers (exit 0), or with a call that
# returned PARLEY_ERROR_OUT_OF_MEMORY and then, the limit lifted again inside
# the same process, the reference answers (exit 3), or below the range where
# the setup fits, a setup that failed for want of memory (exit 4; the sweep
# stops there). A signal (SIGSEGV, abort), another status or another answer
# fails the test. At least one run must have reported the GEMM itself out of
# memory, so the limit does reach the GEMM's scratch.
# Usage: ulimit_sweep.sh TEST_OOM_BINARY
set -u
bin=$1
step_kb=${PARLEY_OOM_STEP_KB:-1024}

reference=$("$bin" --child) || { echo "reference run failed"; exit 1; }
peak=$(sed -n 's/^vmpeak_kb //p' <<<"$reference")
answers=$(grep -v '^vmpeak_kb ' <<<"$reference")
echo "reference (VmPeak ${peak} kB):"
echo "$answers"

failures=0 oom=0 gemm=0 ok=0
for ((limit = peak + 8 * step_kb; limit > 0; limit -= step_kb)); do
  out=$(bash -c "ulimit -S -v $limit && exec \"\$0\" --child" "$bin" 2>/tmp/oom_sweep_err.$$)
  rc=$?
  err=$(cat /tmp/oom_sweep_err.$$)
  got=$(grep -v '^vmpeak_kb ' <<<"$out")
  case $rc in
    0 | 3)
      if [ "$got" != "$answers" ]; then
        echo "limit ${limit} kB: answers differ:"; echo "$got"; failures=$((failures + 1))
      fi
      if [ $rc = 3 ]; then
        oom=$((oom + 1))
        grep -q "gemm" <<<"$err" && gemm=$((gemm + 1))
        echo "limit ${limit} kB: $(head -c 300 <<<"$err" | tr '\n' ' ')"
      else
        ok=$((ok + 1))
      fi
      ;;
    4)
      echo "limit ${limit} kB: setup does not fit: $(head -c 300 <<<"$err" | tr '\n' ' ')"
      break
      ;;
    *)
      echo "limit ${limit} kB: FAILED, exit status ${rc}: $(tail -c 600 <<<"$err")"
      failures=$((failures + 1))
      ;;
  esac
done
rm -f /tmp/oom_sweep_err.$$
echo "runs: ${ok} complete, ${oom} out of memory then recovered (${gemm} in the GEMM), ${failures} failed"
[ "$failures" = 0 ] || exit 1
[ "$oom" -gt 0 ] || { echo "no limit made a call run out of memory: the sweep tested nothing"; exit 1; }
[ "$gemm" -gt 0 ] || { echo "no limit made the GEMM run out of memory"; exit 1; }
echo ok
