#!/bin/sh
# check_header_exports.sh LIB HEADER
# Fails unless every function HEADER declares with PARLEY_API is a defined
# dynamic symbol of LIB (a new entry point that was declared but not built,
# or hidden by the version script, would only show up at a host's link time).
set -u
if [ "$#" -ne 2 ]; then
  echo "usage: $0 LIB HEADER" >&2
  exit 2
fi
lib=$1
header=$2
NM=${NM:-nm}
symbols=$("$NM" -D --defined-only "$lib" | awk '{ n = $NF; sub(/@.*/, "", n); print n }') || {
  echo "check_header_exports: $NM -D --defined-only $lib failed" >&2
  exit 1
}
# A name in parentheses (`parley_status(parley_x_init)(...)`: a macro of the
# same name serves C callers) is the declared function, not the return type.
declared=$(sed -n -e 's/^PARLEY_API[^(]*(\(parley_[a-z0-9_]*\))(.*/\1/p' \
  -e 's/^PARLEY_API[^(]*[ *]\(parley_[a-z0-9_]*\)(.*/\1/p' "$header" | sort -u)
if [ -z "$declared" ]; then
  echo "check_header_exports: $header declares no PARLEY_API function" >&2
  exit 1
fi
total=0
missing=0
for name in $declared; do
  total=$((total + 1))
  if ! printf '%s\n' "$symbols" | grep -qx "$name"; then
    echo "check_header_exports: $header declares $name but $lib does not export it" >&2
    missing=$((missing + 1))
  fi
done
if [ "$missing" -ne 0 ]; then
  echo "check_header_exports: $missing of $total declared functions are missing from $lib" >&2
  exit 1
fi
echo "check_header_exports: $lib exports all $total functions $header declares"
