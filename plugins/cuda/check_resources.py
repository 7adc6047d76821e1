#!/usr/bin/env python3
"""Gathers the ptxas -v reports of the cuda plugin and enforces the budgets.

usage: check_resources.py --logs DIR --report FILE [--self-test]

Reads every *.ptxas.log under DIR (written by capture_ptxas.sh, one per CUDA
object), writes one line per (kernel, architecture) to FILE and exits 1 when a
kernel
  - spills (spill stores or loads > 0) or has a stack frame / local memory
    (lmem) > 0, unless ALLOW_LOCAL names it, or
  - uses more than MAX_REGISTERS registers or MAX_STATIC_SMEM bytes of static
    shared memory (unless BUDGET_OVERRIDES gives it more), or
  - ptxas printed a warning for it (spills, local memory);
and also when no kernel at all was found (a broken capture must not pass).
"""
import argparse
import pathlib
import re
import shutil
import subprocess
import sys

# Budgets for the element-wise / row kernels of kernels.cu: 64 registers
# keeps >= 4 blocks of 256 threads per SM (occupancy 50% of 2048 threads)
# on sm_80..sm_90; their shared memory is a few reduction slots.
MAX_REGISTERS = 64
MAX_STATIC_SMEM = 48 * 1024
# Per-kernel overrides: regex on the demangled name -> (registers, smem bytes).
# The SIMT attention kernels keep 4 query rows x head_dim/32 dims of q and of
# the accumulator per lane in registers: 128 registers x 128 threads still
# lets 4 CTAs share an SM's 64K registers. No spills or local memory either way.
# The tensor-core prefill kernel holds Q fragments (D/16 x 4) and the output
# accumulator (D/8 x 4) per lane: ~160 registers at D = 128, as FlashAttention-2
# kernels do (3 CTAs of 128 threads per SM); 255 is the hardware limit.
# The LINEAR GEMV (m <= 8) keeps 2 output rows x M accumulators and the 16
# loaded weight bytes per lane (72-80 registers for I4 at M = 8): 96 x 128
# threads still lets 5 CTAs (20 warps) share an SM, enough loads in flight
# for a bandwidth-bound kernel. The tiled LINEAR kernel (m > 8) keeps a 4 x 4
# accumulator block plus the staging loads of 8 x and 8 weight elements
# (69-72 registers): 80 x 256 threads allows 3 CTAs per SM;
# __launch_bounds__(256, 2) keeps ptxas from capping it lower and spilling
# (it spilled at 48 registers on sm_90 without the second argument).
# The tensor-core LINEAR kernel (F16/BF16 weights, m > 8) keeps four n-tiles
# of C fragments (16 floats), the A fragment (4) and a B fragment (2) per lane
# plus the staging words (71-72 registers): the same 80 x 256 threads.
BUDGET_OVERRIDES = {
    r"attention_(split|combine|probs)_kernel": (128, 48 * 1024),
    r"attention_mma_kernel": (255, 48 * 1024),
    r"linear_gemv_kernel": (96, 48 * 1024),
    r"linear_(tiled|mma)_kernel": (80, 48 * 1024),
}
# Kernels allowed a stack frame / local memory: regex on the demangled name ->
# reason. Empty: no kernel of the plugin may use local memory or spill.
ALLOW_LOCAL = {}

RE_COMPILING = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
RE_PROPS = re.compile(r"Function properties for (\S+)")
RE_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
RE_USED = re.compile(r"Used (\d+) registers(.*)")
RE_SMEM = re.compile(r"(\d+) bytes smem")
RE_LMEM = re.compile(r"(\d+) bytes lmem")
RE_WARN = re.compile(r"ptxas warning\s*:\s*(.*)")


def parse(text, source):
    """Returns a list of dicts, one per (entry function, arch)."""
    kernels = []
    cur = None
    frames = {}
    warnings = []
    for line in text.splitlines():
        m = RE_COMPILING.search(line)
        if m:
            cur = {"mangled": m.group(1), "arch": m.group(2), "source": source, "regs": 0, "smem": 0, "lmem": 0,
                   "stack": 0, "spill_st": 0, "spill_ld": 0, "warnings": []}
            kernels.append(cur)
            continue
        m = RE_PROPS.search(line)
        if m:
            frames["current"] = m.group(1)
            continue
        m = RE_FRAME.search(line)
        if m and cur is not None and frames.get("current") == cur["mangled"]:
            cur["stack"], cur["spill_st"], cur["spill_ld"] = (int(g) for g in m.groups())
            continue
        m = RE_USED.search(line)
        if m and cur is not None:
            cur["regs"] = int(m.group(1))
            rest = m.group(2)
            s = RE_SMEM.search(rest)
            cur["smem"] = int(s.group(1)) if s else 0
            lm = RE_LMEM.search(rest)
            cur["lmem"] = int(lm.group(1)) if lm else 0
            continue
        m = RE_WARN.search(line)
        if m:
            warnings.append(m.group(1).strip())
    # Attach warnings that name a kernel to it; others fail globally.
    unattached = []
    for w in warnings:
        hit = [k for k in kernels if k["mangled"] in w]
        for k in hit:
            k["warnings"].append(w)
        if not hit:
            unattached.append(w)
    return kernels, unattached


def demangle(names):
    tool = shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, check=False).stdout
    lines = out.splitlines()
    if len(lines) != len(names):
        return {n: n for n in names}
    return dict(zip(names, lines))


def short(name):
    # Drop the parameter list and the anonymous namespace for the table.
    name = name.replace("(anonymous namespace)::", "")
    depth = 0
    for i, ch in enumerate(name):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            return name[:i]
    return name


def check(kernels, unattached):
    failures = []
    for k in kernels:
        name = k["name"]
        regs_budget, smem_budget = MAX_REGISTERS, MAX_STATIC_SMEM
        for pattern, (r, s) in BUDGET_OVERRIDES.items():
            if re.search(pattern, name):
                regs_budget, smem_budget = r, s
        allowed_local = any(re.search(p, name) for p in ALLOW_LOCAL)
        problems = []
        if k["spill_st"] or k["spill_ld"]:
            problems.append(f"spills {k['spill_st']} B stores / {k['spill_ld']} B loads")
        if (k["stack"] or k["lmem"]) and not allowed_local:
            problems.append(f"local memory: {k['stack']} B stack frame, {k['lmem']} B lmem")
        if k["regs"] > regs_budget:
            problems.append(f"{k['regs']} registers > budget {regs_budget}")
        if k["smem"] > smem_budget:
            problems.append(f"{k['smem']} B static smem > budget {smem_budget}")
        if k["warnings"] and not allowed_local:
            problems.append("ptxas warning: " + "; ".join(k["warnings"]))
        k["verdict"] = "ok" if not problems else "FAIL: " + ", ".join(problems)
        if problems:
            failures.append(f"{short(name)} [{k['arch']}]: " + ", ".join(problems))
    for w in unattached:
        failures.append("ptxas warning: " + w)
    if not kernels:
        failures.append("no kernel found in the ptxas logs (is capture_ptxas.sh the CUDA compiler launcher?)")
    return failures


def render(kernels, failures):
    lines = [
        "# ptxas resource report of libparley_cuda (generated by plugins/cuda/check_resources.py)",
        f"# budgets: registers <= {MAX_REGISTERS}, static smem <= {MAX_STATIC_SMEM} B, no spills, no local memory"
        f" (overrides: {len(BUDGET_OVERRIDES)}, local-memory allow-list: {len(ALLOW_LOCAL)})",
        f"# {'arch':<6} {'regs':>4} {'smem':>6} {'stack':>5} {'spill_st':>8} {'spill_ld':>8} {'lmem':>5}  kernel  verdict",
    ]
    for k in sorted(kernels, key=lambda k: (short(k["name"]), k["arch"])):
        lines.append(f"  {k['arch']:<6} {k['regs']:>4} {k['smem']:>6} {k['stack']:>5} {k['spill_st']:>8} "
                     f"{k['spill_ld']:>8} {k['lmem']:>5}  {short(k['name'])} [{k['source']}]  {k['verdict']}")
    lines.append(f"# {len(kernels)} kernel compilations, {len(failures)} failures")
    for f in failures:
        lines.append("# FAIL " + f)
    return "\n".join(lines) + "\n"


def self_test():
    sample = """ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_80'
ptxas info    : Function properties for _Z3fooPf
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 64 bytes smem, 360 bytes cmem[0]
ptxas warning : Registers are spilled to local memory in function '_Z3fooPf', 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Compiling entry function '_Z3barPf' for 'sm_80'
ptxas info    : Function properties for _Z3barPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 20 registers, used 1 barriers, 128 bytes smem, 360 bytes cmem[0]
"""
    kernels, unattached = parse(sample, "sample.cu")
    for k in kernels:
        k["name"] = k["mangled"]
    failures = check(kernels, unattached)
    assert len(kernels) == 2, kernels
    assert kernels[0]["regs"] == 255 and kernels[0]["spill_st"] == 4 and kernels[0]["stack"] == 8, kernels[0]
    assert kernels[1]["regs"] == 20 and kernels[1]["smem"] == 128, kernels[1]
    assert len(failures) == 1 and "_Z3fooPf" in failures[0], failures
    assert kernels[1]["verdict"] == "ok"
    print("check_resources self-test: ok (a spilling kernel is caught, a clean one passes)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logs")
    ap.add_argument("--report")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        self_test()
        return 0
    if not args.logs or not args.report:
        ap.error("--logs and --report are required")
    kernels, unattached = [], []
    for log in sorted(pathlib.Path(args.logs).rglob("*.ptxas.log")):
        source = log.name[: -len(".ptxas.log")]
        source = re.sub(r"\.o$", "", source)
        k, u = parse(log.read_text(errors="replace"), source)
        kernels += k
        unattached += u
    names = demangle(sorted({k["mangled"] for k in kernels}))
    for k in kernels:
        k["name"] = names[k["mangled"]]
    failures = check(kernels, unattached)
    text = render(kernels, failures)
    pathlib.Path(args.report).write_text(text)
    if failures:
        sys.stderr.write(text)
        sys.stderr.write(f"check_resources: {len(failures)} resource budget violations, see {args.report}\n")
        return 1
    print(f"check_resources: {len(kernels)} kernel compilations within budget; report: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
