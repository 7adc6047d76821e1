#!/bin/sh
# capture_ptxas.sh COMPILER ARGS...  (a CUDA_COMPILER_LAUNCHER)
# Runs the compile command, passes its output through, and also keeps it in
# <object>.ptxas.log (the object is the argument after -o), so that
# check_resources.py can read every kernel's ptxas -v report.
obj=
prev=
for arg in "$@"; do
  if [ "$prev" = "-o" ]; then obj=$arg; fi
  prev=$arg
done
if [ -z "$obj" ]; then
  exec "$@"
fi
log="$obj.ptxas.log"
tmp="$log.tmp.$$"
"$@" >"$tmp" 2>&1
rc=$?
cat "$tmp" >&2
if [ "$rc" -eq 0 ]; then
  mv "$tmp" "$log"
else
  rm -f "$tmp" "$log"
fi
exit "$rc"
