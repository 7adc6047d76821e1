#!/bin/sh
# install_test.sh BUILD_DIR SOURCE_DIR WORK_DIR LIBDIR CC CMAKE GENERATOR
#
# Installs the build tree into WORK_DIR/prefix, checks the layout, then builds
# samples/inspect_model.c against the installed tree twice (pkg-config, and a
# CMake project using find_package(Parley)) and runs both on
# $PARLEY_TEST_DATA_DIR/tiny_decoder.parley with PARLEY_PLUGIN_PATH unset: the
# model only loads if libparley finds the cpu plugin beside itself in the
# installed tree.
set -u
if [ "$#" -ne 7 ]; then
  echo "usage: $0 BUILD_DIR SOURCE_DIR WORK_DIR LIBDIR CC CMAKE GENERATOR" >&2
  exit 2
fi
build=$1 src=$2 work=$3 libdir=$4 cc=$5 cmake=$6 generator=$7
model=${PARLEY_TEST_DATA_DIR:-}/tiny_decoder.parley
prefix=$work/prefix
failures=0

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
pass() { echo "ok: $*"; }

[ -f "$model" ] || { echo "FAIL: $model missing (PARLEY_TEST_DATA_DIR not set or fixture not run)" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$work" || exit 1

# ---- install ----------------------------------------------------------------
if "$cmake" --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1; then
  pass "cmake --install into $prefix"
else
  cat "$work/install.log" >&2
  echo "FAIL: cmake --install failed" >&2
  exit 1
fi

# ---- layout -----------------------------------------------------------------
for f in include/parley/parley.h include/parley/plugin.h \
         "$libdir/libparley.so" "$libdir/parley/plugins/libparley_cpu.so" \
         "$libdir/cmake/Parley/ParleyConfig.cmake" "$libdir/cmake/Parley/ParleyConfigVersion.cmake" \
         "$libdir/cmake/Parley/ParleyTargets.cmake" "$libdir/pkgconfig/parley.pc"; do
  if [ -e "$prefix/$f" ]; then pass "installed $f"; else fail "$prefix/$f is missing"; fi
done
soname=$(readelf -d "$prefix/$libdir/libparley.so" 2>/dev/null | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
if [ "$soname" = "libparley.so.0" ]; then pass "SONAME $soname"; else fail "SONAME of libparley.so is '$soname', expected libparley.so.0"; fi
if [ -e "$prefix/$libdir/$soname" ] && [ -n "$soname" ]; then pass "$soname installed"; else fail "$prefix/$libdir/libparley.so.0 (the SONAME link) is missing"; fi
# Installed binaries must not point back into the build tree.
for f in "$prefix/$libdir/libparley.so" "$prefix/$libdir/parley/plugins/libparley_cpu.so"; do
  [ -e "$f" ] || continue
  if readelf -d "$f" | grep -E 'R(UN)?PATH' | grep -q "$build"; then
    fail "$f has an RPATH/RUNPATH into the build tree: $(readelf -d "$f" | grep -E 'R(UN)?PATH')"
  else
    pass "$(basename "$f") has no RPATH into the build tree"
  fi
done
# The build tree must not leak into the installed package files either.
for f in "$prefix/$libdir/pkgconfig/parley.pc" "$prefix/$libdir/cmake/Parley/"*.cmake; do
  [ -e "$f" ] || continue
  if grep -q "$build" "$f"; then fail "$f mentions the build tree $build"; fi
done

# Run a sample binary against the installed tree only.
run_sample() {
  name=$1 exe=$2
  if [ ! -x "$exe" ]; then
    fail "$name: $exe was not built"
    return
  fi
  if LD_LIBRARY_PATH="$prefix/$libdir" ldd "$exe" | grep 'libparley.so' | grep -q "$prefix/$libdir/libparley.so.0"; then
    pass "$name resolves libparley from the installed tree"
  else
    fail "$name does not resolve libparley from $prefix/$libdir: $(LD_LIBRARY_PATH="$prefix/$libdir" ldd "$exe" | grep parley)"
  fi
  out=$(env -u PARLEY_PLUGIN_PATH LD_LIBRARY_PATH="$prefix/$libdir" "$exe" "$model" 2>&1)
  rc=$?
  echo "$name output: $out"
  if [ "$rc" -eq 0 ] && echo "$out" | grep -q "LlamaForCausalLM"; then
    pass "$name loaded the model with the installed plugins"
  else
    fail "$name exited with $rc and did not print LlamaForCausalLM"
  fi
}

# ---- (a) pkg-config -----------------------------------------------------------
flags=$(PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig" pkg-config --cflags --libs parley 2>"$work/pkgconfig.err")
if [ $? -ne 0 ]; then
  cat "$work/pkgconfig.err" >&2
  fail "pkg-config --cflags --libs parley failed"
else
  echo "pkg-config flags: $flags"
  # The .pc file is relocatable (paths relative to ${pcfiledir}): compare
  # the directories it names after resolving them.
  inc=$(printf '%s\n' $flags | sed -n 's/^-I//p' | head -n 1)
  lib=$(printf '%s\n' $flags | sed -n 's/^-L//p' | head -n 1)
  if [ -n "$inc" ] && [ "$(realpath -m "$inc")" = "$(realpath -m "$prefix/include")" ]; then
    pass "pkg-config Cflags point into the install prefix"
  else
    fail "pkg-config Cflags '$flags' do not name $prefix/include (parley.pc is not relocatable?)"
  fi
  if [ -n "$lib" ] && [ "$(realpath -m "$lib")" = "$(realpath -m "$prefix/$libdir")" ]; then
    pass "pkg-config Libs point into the install prefix"
  else
    fail "pkg-config Libs '$flags' do not name $prefix/$libdir (parley.pc is not relocatable?)"
  fi
  # shellcheck disable=SC2086
  if "$cc" -std=c99 -Wall -Wextra -Werror -o "$work/inspect_pkgconfig" "$src/samples/inspect_model.c" $flags \
       >"$work/cc.log" 2>&1; then
    pass "built inspect_model with pkg-config flags"
  else
    cat "$work/cc.log" >&2
    fail "building inspect_model with pkg-config flags failed"
  fi
  run_sample "inspect_model (pkg-config)" "$work/inspect_pkgconfig"
fi

# ---- (b) CMake find_package ---------------------------------------------------
if "$cmake" -S "$src/tests/install/consumer" -B "$work/consumer" -G "$generator" \
     -DCMAKE_PREFIX_PATH="$prefix" -DPARLEY_SAMPLE_SOURCE="$src/samples/inspect_model.c" \
     -DCMAKE_C_COMPILER="$cc" >"$work/consumer-configure.log" 2>&1 &&
   "$cmake" --build "$work/consumer" >"$work/consumer-build.log" 2>&1; then
  pass "built inspect_model with find_package(Parley)"
  run_sample "inspect_model (CMake)" "$work/consumer/inspect_model"
else
  cat "$work/consumer-configure.log" "$work/consumer-build.log" >&2 2>/dev/null
  fail "configuring/building the find_package(Parley) consumer failed"
fi

# ---- control: without the installed plugins the same binary must fail -------
# (so the runs above prove the plugins were found beside the installed libparley)
control_exe=$work/consumer/inspect_model
[ -x "$control_exe" ] || control_exe=$work/inspect_pkgconfig
plugins=$prefix/$libdir/parley/plugins
if [ -x "$control_exe" ] && [ -d "$plugins" ]; then
  mv "$plugins" "$plugins.hidden"
  out=$(env -u PARLEY_PLUGIN_PATH LD_LIBRARY_PATH="$prefix/$libdir" "$control_exe" "$model" 2>&1)
  rc=$?
  mv "$plugins.hidden" "$plugins"
  if [ "$rc" -ne 0 ] && echo "$out" | grep -q "no device named 'cpu'"; then
    pass "control: with the installed plugins hidden, loading fails ($out)"
  else
    fail "control: with $plugins hidden the sample still exited $rc: $out"
  fi
else
  fail "control: no sample binary or plugin directory to run the control with"
fi

if [ "$failures" -ne 0 ]; then
  echo "install test: $failures failure(s)" >&2
  exit 1
fi
echo "install test: all checks passed"
