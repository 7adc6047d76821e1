#!/bin/sh
# Regenerates src/bindings.rs from include/parley/parley.h with Debian 12's
# bindgen 0.60 (`apt install bindgen`). The output is committed so that
# building needs neither bindgen nor libclang; the ctest
# rust_sys_bindings_current fails when the header changed and this was not rerun.
# Usage: generate.sh [OUT]   (default: src/bindings.rs next to this script)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-$here/src/bindings.rs}
${BINDGEN:-bindgen} "$root/include/parley/parley.h" \
  --allowlist-function 'parley_.*' --allowlist-type 'parley_.*' --allowlist-var 'PARLEY_.*' \
  --no-prepend-enum-name --size_t-is-usize --no-doc-comments \
  -o "$out" -- -I"$root/include" -DPARLEY_NO_INLINE_INIT
