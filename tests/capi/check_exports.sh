#!/bin/sh
# check_exports.sh LIB PREFIX...
# Fails unless every defined dynamic symbol of LIB starts with one of the
# PREFIXes. A PREFIX ending in '$' must match the whole name, e.g.
# 'parley_plugin_entry$' allows exactly that symbol. Version-node symbols (type A, e.g. PARLEY_0) are
# not code or data and are ignored. Also fails if LIB exports nothing at all.
set -u
if [ "$#" -lt 2 ]; then
  echo "usage: $0 LIB PREFIX..." >&2
  exit 2
fi
lib=$1
shift
PREFIXES="$*"
if [ ! -f "$lib" ]; then
  echo "check_exports: $lib does not exist" >&2
  exit 1
fi
NM=${NM:-nm}
symbols=$("$NM" -D --defined-only "$lib") || {
  echo "check_exports: $NM -D --defined-only $lib failed" >&2
  exit 1
}
total=0
bad=0
# nm -D prints "ADDRESS TYPE NAME[@VERSION]" (ADDRESS may be blank for some types).
while read -r line; do
  [ -n "$line" ] || continue
  set -- $line
  if [ "$#" -ge 3 ]; then type=$2; name=$3; else type=$1; name=$2; fi
  name=${name%%@*}
  [ "$type" = "A" ] && continue
  total=$((total + 1))
  ok=0
  for prefix in $PREFIXES; do
    case "$prefix" in
      *'$') [ "$name" = "${prefix%?}" ] && ok=1 ;;
      *) case "$name" in "$prefix"*) ok=1 ;; esac ;;
    esac
  done
  if [ "$ok" -eq 0 ]; then
    echo "check_exports: $lib exports '$name' (type $type), which does not start with: $PREFIXES" >&2
    bad=$((bad + 1))
  fi
done <<SYMBOLS
$symbols
SYMBOLS
if [ "$total" -eq 0 ]; then
  echo "check_exports: $lib exports no symbols at all" >&2
  exit 1
fi
if [ "$bad" -ne 0 ]; then
  echo "check_exports: $bad of $total exported symbols of $lib are not allowed" >&2
  exit 1
fi
echo "check_exports: $lib: $total exported symbols, all start with: $PREFIXES"
