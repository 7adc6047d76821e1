#!/usr/bin/env python3
"""Checks libparley and the public headers against the committed ABI baseline.

Old binaries must keep working (DESIGN.md: append-only evolution). Two ABI
surfaces are recorded with libabigail's `abidw` (Debian `abigail-tools`):

  libparley.abi  the exported functions of libparley.so and every type they reach;
  headers.abi    every struct and enum of include/parley/parley.h and plugin.h, through
                 a probe library generated here (plugin argument structs are passed as
                 `const void *`, so no exported function reaches them).

`check` rebuilds both from the current build and compares them with the baseline
under the project's rules; `abidiff`'s own report is printed for humans. Allowed:
new functions, new enumerators, new struct members after the old ones in a struct
whose first member is `struct_size` (readers go by that size). Refused: a removed
or re-typed function, a removed/moved/re-typed member, any other size change, a
changed enumerator value, a changed typedef.

  check_abi.py check  --lib LIBPARLEY --include INCLUDE_DIR --baseline DIR [--cc CC]
  check_abi.py dump   --lib LIBPARLEY --include INCLUDE_DIR --out DIR      [--cc CC]
  check_abi.py selftest [--cc CC]   # proves the comparison refuses each breaking change

How to change the baseline deliberately: tests/abi/README.md.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

ABIDW = ["abidw", "--no-corpus-path", "--no-show-locs", "--no-comp-dir-path", "--no-elf-needed",
         "--exported-interfaces-only", "--type-id-style", "hash", "--drop-private-types"]
HEADERS = ("parley.h", "plugin.h")
TYPE_DECL = re.compile(r"^typedef\s+(struct|enum)\s+(\w+)\s*\{", re.M)
# Public typedefs of fixed-width integers (`typedef int32_t parley_status;`):
# probed too, so that a type that was an enum and became such a typedef keeps
# its probe and is compared under ENUM_AS_INT below.
SCALAR_TYPEDEF = re.compile(r"^typedef\s+u?int(?:8|16|32|64)_t\s+(parley_\w+)\s*;", re.M)


# ---- dumping -------------------------------------------------------------------
def probe_source(include_dir):
    """C source of a library with one exported function per public struct/enum."""
    lines = [f"#include <parley/{h}>" for h in HEADERS]
    seen = set()
    for h in HEADERS:
        text = open(os.path.join(include_dir, "parley", h)).read()
        for kind, name in TYPE_DECL.findall(text):
            if name in seen:
                continue
            seen.add(name)
            arg = f"const {name} *p" if kind == "struct" else f"{name} e"
            lines.append(f"__attribute__((visibility(\"default\"))) void parley_abi_probe_{name}({arg}) "
                         f"{{ (void){'p' if kind == 'struct' else 'e'}; }}")
        for name in SCALAR_TYPEDEF.findall(text):
            if name in seen:
                continue
            seen.add(name)
            lines.append(f"__attribute__((visibility(\"default\"))) void parley_abi_probe_{name}({name} e) "
                         "{ (void)e; }")
    return "\n".join(lines) + "\n", sorted(seen)


def dump(lib, include_dir, out_dir, cc):
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src, _ = probe_source(include_dir)
        c = os.path.join(tmp, "abi_probe.c")
        so = os.path.join(tmp, "libparley_abi_probe.so")
        open(c, "w").write(src)
        subprocess.run([cc, "-std=c99", "-g", "-O0", "-shared", "-fPIC", "-I", include_dir, c, "-o", so],
                       check=True)
        _abidw(so, include_dir, os.path.join(out_dir, "headers.abi"))
    _abidw(lib, include_dir, os.path.join(out_dir, "libparley.abi"))


def _abidw(binary, include_dir, out):
    subprocess.run(ABIDW + ["--headers-dir", os.path.join(include_dir, "parley"), "--out-file", out, binary],
                   check=True)


# ---- reading an abixml corpus --------------------------------------------------------
class Corpus:
    def __init__(self, path):
        root = ET.parse(path).getroot()
        self.by_id = {}
        self.functions = {}  # name -> element
        self.symbols = set()
        for e in root.iter():
            if e.get("id"):
                self.by_id[e.get("id")] = e
        for sym in root.iter("elf-symbol"):
            if sym.get("type") == "func-type" and sym.get("is-defined") == "yes":
                self.symbols.add(sym.get("name"))
        for instr in root.iter("abi-instr"):
            for f in instr.findall("function-decl"):
                if f.get("elf-symbol-id"):
                    self.functions[f.get("name")] = f
        self.structs, self.enums, self.typedefs = {}, {}, {}
        for e in self.by_id.values():
            name = e.get("name", "")
            if e.tag in ("class-decl", "union-decl") and name and e.get("is-declaration-only") != "yes":
                self.structs[name] = e
            elif e.tag == "enum-decl" and name:
                self.enums[name] = e
            elif e.tag == "typedef-decl" and name.startswith("parley_"):
                self.typedefs[name] = e

    def type_name(self, tid, depth=0):
        """A layout-relevant spelling of a type: equal strings mean the same ABI."""
        e = self.by_id.get(tid)
        if e is None or depth > 40:
            return f"?{tid}"
        t = e.tag
        if t == "type-decl":
            return e.get("name")
        if t == "typedef-decl":
            return self.type_name(e.get("type-id"), depth + 1)  # a typedef is its target
        if t == "pointer-type-def":
            return self.type_name(e.get("type-id"), depth + 1) + "*"
        if t == "qualified-type-def":
            quals = " ".join(q for q in ("const", "volatile", "restrict") if e.get(q) == "yes")
            return f"{quals} {self.type_name(e.get('type-id'), depth + 1)}"
        if t == "array-type-def":
            dims = "".join(f"[{s.get('length')}]" for s in e.findall("subrange"))
            return self.type_name(e.get("type-id"), depth + 1) + dims
        if t in ("class-decl", "union-decl", "enum-decl"):
            name = e.get("name") or ""
            if name and not name.startswith("__anonymous"):
                return f"{t.split('-')[0]} {name}"
            if t == "enum-decl":
                return "enum{" + ",".join(f"{x.get('name')}={x.get('value')}" for x in e.findall("enumerator")) + "}"
            return t.split("-")[0] + "{" + ";".join(
                f"{m.get('layout-offset-in-bits')}:{self.type_name(m.find('var-decl').get('type-id'), depth + 1)}"
                for m in e.findall("data-member")) + "}"
        if t in ("function-type", "function-decl"):
            params = [self.type_name(p.get("type-id"), depth + 1) if p.get("type-id") else "..."
                      for p in e.findall("parameter")]
            ret = e.find("return")
            return f"fn({', '.join(params)}) -> {self.type_name(ret.get('type-id'), depth + 1) if ret is not None else 'void'}"
        return f"<{t}>"

    def abi_name(self, tid):
        """type_name, with a 32-bit enum spelled as the int it travels as (ENUM_AS_INT)."""
        name = self.type_name(tid)
        e = self.by_id.get(tid)
        while e is not None and e.tag == "typedef-decl":
            e = self.by_id.get(e.get("type-id"))
        if e is not None and e.tag == "enum-decl":
            under = e.find("underlying-type")
            base = self.by_id.get(under.get("type-id")) if under is not None else None
            if base is not None and base.get("size-in-bits") == "32":
                return ENUM_AS_INT
        if name in ("int", "unsigned int"):
            return ENUM_AS_INT if name == "int" else name
        return name

    def signature(self, f):
        params = [self.abi_name(p.get("type-id")) if p.get("type-id") else "..." for p in f.findall("parameter")]
        ret = f.find("return")
        return f"fn({', '.join(params)}) -> {self.abi_name(ret.get('type-id')) if ret is not None else 'void'}"

    def members(self, struct):
        out = []
        for m in struct.findall("data-member"):
            v = m.find("var-decl")
            out.append((v.get("name"), int(m.get("layout-offset-in-bits", "0")), self.type_name(v.get("type-id"))))
        return out


# A 32-bit enum passed or returned by value is the same ABI as an int on every
# platform Parley supports: the System V x86-64 and AArch64 (AAPCS64)
# calling conventions and Windows x64 pass and return both as a 32-bit integer
# in the same register (eax / w0 / the first argument register), and the
# caller ignores the upper bits in both cases. So parley_status turning from
# `enum parley_status` into `typedef int32_t parley_status` (issue 14: the
# header had promised int32_t across the ABI) breaks no old binary: its
# values are unchanged (enum parley_status_code) and its storage is the same.
# Only by-value function parameters/returns and typedef targets get this
# equivalence; a struct member changing between enum and int is still
# reported (the members' spelling is kept exact), as is any change of width.
ENUM_AS_INT = "int32 (enum or int)"


def compare(old_path, new_path):
    """Incompatible changes from old to new corpus, as readable lines."""
    old, new = Corpus(old_path), Corpus(new_path)
    problems = []
    for name in sorted(old.symbols - new.symbols):
        problems.append(f"function {name} removed")
    for name, f in sorted(old.functions.items()):
        g = new.functions.get(name)
        if g is not None and old.signature(f) != new.signature(g):
            problems.append(f"function {name} changed: {old.signature(f)} -> {new.signature(g)}")
    for name, s in sorted(old.structs.items()):
        t = new.structs.get(name)
        if t is None:
            continue  # no longer reachable: the removed function or typedef is reported
        old_m, new_m = old.members(s), {m[0]: m for m in new.members(t)}
        for mname, off, typ in old_m:
            n = new_m.get(mname)
            if n is None:
                problems.append(f"{name}.{mname} removed")
            elif n[1] != off:
                problems.append(f"{name}.{mname} moved from bit {off} to bit {n[1]}")
            elif n[2] != typ:
                problems.append(f"{name}.{mname} changed type: {typ} -> {n[2]}")
        size_old, size_new = int(s.get("size-in-bits", "0")), int(t.get("size-in-bits", "0"))
        for mname, off, _ in new_m.values():
            if mname not in {m[0] for m in old_m} and off < size_old and not mname.startswith("reserved"):
                problems.append(f"{name}.{mname} added at bit {off}, inside the old {size_old // 8}-byte struct "
                                "(its padding: old binaries leave garbage there); add members after the old end")
        if size_new != size_old:
            grows_by_struct_size = size_new > size_old and old_m and old_m[0][0] == "struct_size"
            if not grows_by_struct_size:
                problems.append(f"{name} size changed from {size_old // 8} to {size_new // 8} bytes "
                                "(only structs whose first member is struct_size may grow)")
    for name, e in sorted(old.enums.items()):
        f = new.enums.get(name)
        if f is None:
            continue
        new_values = {x.get("name"): x.get("value") for x in f.findall("enumerator")}
        for x in e.findall("enumerator"):
            if x.get("name") not in new_values:
                problems.append(f"enumerator {name}::{x.get('name')} removed")
            elif new_values[x.get("name")] != x.get("value"):
                # A "*_COUNT_" sentinel is not a value (one past the last
                # valid one): it moves up when enumerators are appended.
                if x.get("name").endswith("_COUNT_") and int(new_values[x.get("name")]) > int(x.get("value")):
                    continue
                problems.append(f"enumerator {name}::{x.get('name')} changed value "
                                f"{x.get('value')} -> {new_values[x.get('name')]}")
    for name, e in sorted(old.typedefs.items()):
        f = new.typedefs.get(name)
        if f is not None and old.abi_name(e.get("type-id")) != new.abi_name(f.get("type-id")):
            problems.append(f"typedef {name} changed: {old.type_name(e.get('type-id'))} -> "
                            f"{new.type_name(f.get('type-id'))}")
    return problems


def check(args):
    with tempfile.TemporaryDirectory() as tmp:
        dump(args.lib, args.include, tmp, args.cc)
        problems = []
        for corpus in ("libparley.abi", "headers.abi"):
            base, cur = os.path.join(args.baseline, corpus), os.path.join(tmp, corpus)
            if not os.path.isfile(base):
                sys.exit(f"check_abi: baseline {base} missing (see tests/abi/README.md)")
            report = subprocess.run(["abidiff", "--no-unreferenced-symbols", base, cur],
                                    capture_output=True, text=True)
            print(f"== abidiff {corpus} (exit {report.returncode})")
            print(report.stdout.strip() or "(no change)")
            if report.returncode & 8:  # abidiff's own ABIDIFF_ABI_INCOMPATIBLE_CHANGE
                problems.append(f"{corpus}: abidiff reports an incompatible change (above)")
            elif report.returncode & 3:
                problems.append(f"{corpus}: abidiff failed: {report.stderr.strip()}")
            problems += [f"{corpus}: {p}" for p in compare(base, cur)]
    for p in problems:
        print("check_abi: INCOMPATIBLE:", p)
    if problems:
        print(f"check_abi: {len(problems)} incompatible ABI change(s) against {args.baseline}")
        return 1
    print("check_abi: ABI compatible with the baseline")
    return 0


# ---- self-test: each breaking change must be refused, each compatible one accepted ------
V1 = """
#include <stdint.h>
#include <stddef.h>
typedef enum demo_status { DEMO_OK = 0, DEMO_ERR = 1, DEMO_COUNT_ = 2 } demo_status;
typedef struct demo_options { size_t struct_size; int32_t beam; float temp; } demo_options;
typedef struct demo_pair { int32_t a; int32_t b; } demo_pair;
typedef struct demo_load { size_t struct_size; int32_t verify; } demo_load;
typedef void (*demo_cb)(void *user, const char *text);
typedef struct demo_hooks { size_t struct_size; demo_cb on_text; } demo_hooks;
__attribute__((visibility("default"))) demo_status demo_run(const demo_options *o, demo_pair *p, const demo_hooks *h) { return DEMO_OK; }
__attribute__((visibility("default"))) int32_t demo_count(const char *s) { return 0; }
__attribute__((visibility("default"))) void demo_load_file(const demo_load *o) {}
"""
CASES = [  # (description, replacement of V1 text, expect_refused)
    ("no change", [], False),
    ("append a member to a struct_size struct", [("float temp; }", "float temp; int32_t extra; }")], False),
    ("name the padding reserved, then append", [("int32_t verify; }", "int32_t verify; int32_t reserved0; int32_t extra; }")], False),
    ("add a member in the padding of a struct_size struct", [("int32_t verify; }", "int32_t verify; int32_t extra; }")], True),
    ("add a function", [("int32_t demo_count", "int32_t demo_new(void) { return 1; }\n"
                         "__attribute__((visibility(\"default\"))) int32_t demo_count")], False),
    ("add an enumerator", [("DEMO_ERR = 1, DEMO_COUNT_ = 2 }", "DEMO_ERR = 1, DEMO_BUSY = 2, DEMO_COUNT_ = 3 }")], False),
    ("remove a function", [("__attribute__((visibility(\"default\"))) int32_t demo_count", "static int32_t demo_count")], True),
    ("insert a member in the middle", [("int32_t beam;", "int32_t flags; int32_t beam;")], True),
    ("change a member's type", [("float temp;", "int32_t temp;")], True),
    ("widen a member", [("float temp;", "double temp;")], True),
    ("grow a struct without struct_size", [("int32_t b; }", "int32_t b; int32_t c; }")], True),
    ("renumber an enumerator", [("DEMO_ERR = 1", "DEMO_ERR = 2")], True),
    ("shrink a COUNT_ sentinel", [("DEMO_COUNT_ = 2", "DEMO_COUNT_ = 1")], True),
    ("change a parameter type", [("int32_t demo_count(const char *s)", "int32_t demo_count(const char *s, int x)")], True),
    ("change a callback signature", [("(void *user, const char *text)", "(void *user, const char *text, size_t n)")], True),
    ("change a return type", [("int32_t demo_count(", "int64_t demo_count(")], True),
    ("return an enum as int32_t", [("typedef enum demo_status {", "typedef int32_t demo_status; enum demo_status_code {"),
                                   ("DEMO_COUNT_ = 2 } demo_status;", "DEMO_COUNT_ = 2 };")], False),
    ("return an enum as int64_t", [("typedef enum demo_status {", "typedef int64_t demo_status; enum demo_status_code {"),
                                   ("DEMO_COUNT_ = 2 } demo_status;", "DEMO_COUNT_ = 2 };")], True),
    ("return an int as unsigned", [("int32_t demo_count(", "uint32_t demo_count(")], True),
]


def selftest(args):
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        def build(src, tag):
            c, so, out = (os.path.join(tmp, f"{tag}.{x}") for x in ("c", "so", "abi"))
            open(c, "w").write(src)
            subprocess.run([args.cc, "-g", "-O0", "-shared", "-fPIC", c, "-o", so], check=True)
            subprocess.run(ABIDW[:-1] + ["--out-file", out, so], check=True)  # no headers dir
            return out
        base = build(V1, "v1")
        for i, (what, edits, expect) in enumerate(CASES):
            src = V1
            for a, b in edits:
                assert a in src, (what, a)
                src = src.replace(a, b)
            problems = compare(base, build(src, f"v2_{i}"))
            ok = bool(problems) == expect
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {what}: {'refused' if problems else 'accepted'}"
                  f"{' (' + '; '.join(problems) + ')' if problems else ''}")
    print("check_abi selftest:", "passed" if not failures else f"{failures} case(s) wrong")
    return 1 if failures else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["check", "dump", "selftest"])
    p.add_argument("--lib")
    p.add_argument("--include")
    p.add_argument("--baseline")
    p.add_argument("--out")
    p.add_argument("--cc", default=os.environ.get("CC", "cc"))
    a = p.parse_args()
    if a.mode == "selftest":
        return selftest(a)
    if not (a.lib and a.include):
        p.error("--lib and --include are required")
    if a.mode == "dump":
        dump(a.lib, a.include, a.out or p.error("--out is required"), a.cc)
        return 0
    return check(a) if a.baseline else p.error("--baseline is required")


if __name__ == "__main__":
    sys.exit(main())
