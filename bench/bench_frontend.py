"""Front-end speed: `dlspec check` as a whole process, and compile_source on generated specs.

    python bench/bench_frontend.py            # prints a report; --json for machine-readable output

(a) runs `dlspec check specs/resnet18.dls` as a fresh process N times, with `python -c pass`
    measured in the same run as the interpreter's floor;
(b) times `compile_source` (parse + lower + shape checks) on generated specs of 100, 1,000 and
    10,000 layers and fits the growth exponent (slope of log time over log layers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = (100, 1_000, 10_000)


def generated_spec(layers: int, per_line: int = 10) -> str:
    """A model of about `layers` layers: a long chain of residual graph blocks (conv → batchnorm →
    relu → conv → batchnorm, an add and a relu: 7 layers each) and a dense head.

    The chain is cut into named values of `per_line` blocks (`h1 = h0 -> Res(16) -> ...`), as a
    person writes a deep network; one `->` expression of hundreds of layers nests too deeply
    (see docs/benchmarks.md).
    """
    blocks = max(1, (layers - 3) // 7)
    lines, prev, i = [], "image", 0
    while blocks > 0:
        n = min(per_line, blocks)
        i += 1
        lines.append(f"    h{i} = {prev}" + " -> Res(16)" * n)
        prev, blocks = f"h{i}", blocks - n
    body = "\n".join(lines)
    return f"""
block Res(c: int) {{
    input x
    y = x -> conv2d(c, 3, padding=1, bias=false) -> batchnorm2d() -> relu()
          -> conv2d(c, 3, padding=1, bias=false) -> batchnorm2d()
    output relu(x + y)
}}

model Deep(classes: int = 10) {{
    input image: float32[batch, 16, 8, 8]
{body}
    logits = {prev} -> global_avgpool2d() -> flatten() -> dense(classes)
    output logits
}}
"""


def time_process(argv: list[str], runs: int, env: dict[str, str] | None = None) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - t0)
    return times


def cached_bytecode_env(prefix: str) -> dict[str, str]:
    """An environment where Python reads and writes bytecode under `prefix` (outside the repo),
    as after `pip install`, which compiles every module once. With PYTHONDONTWRITEBYTECODE=1 (this
    sandbox sets it) each run compiles dlspec's modules from source again."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = prefix
    return env


def spread(times: list[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "stdev_s": statistics.stdev(times) if len(times) > 1 else 0.0,
    }


def time_compile(layers: int, repeats: int) -> tuple[int, float]:
    from dlspec.program import compile_source
    from dlspec.source import SourceFile

    src = SourceFile(f"<generated {layers}>", generated_spec(layers))
    best = math.inf
    n_nodes = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        prog = compile_source(src)
        best = min(best, time.perf_counter() - t0)
        n_nodes = len(prog.models["Deep"].nodes)
    return n_nodes, best


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) over log(x)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10, help="process runs for part (a)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()

    check_argv = [sys.executable, "-m", "dlspec.cli", "check", "specs/resnet18.dls"]
    baseline = time_process([sys.executable, "-c", "pass"], args.runs)
    check = time_process(check_argv, args.runs)
    with tempfile.TemporaryDirectory(prefix="dlspec-pycache-") as prefix:
        env = cached_bytecode_env(prefix)
        time_process(check_argv, 1, env)  # writes the bytecode
        baseline_cached = time_process([sys.executable, "-c", "pass"], args.runs, env)
        check_cached = time_process(check_argv, args.runs, env)

    time_compile(100, 1)  # warm the grammar cache and imports
    rows = []
    for n in SIZES:
        nodes, secs = time_compile(n, 3 if n < 10_000 else 1)
        rows.append({"requested_layers": n, "nodes": nodes, "seconds": secs, "us_per_layer": 1e6 * secs / nodes})
    exponent = slope([r["nodes"] for r in rows], [r["seconds"] for r in rows])

    from importlib.metadata import version

    result = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: version(p) for p in ("lark", "pydantic", "click")},
        "dont_write_bytecode": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")),
        "process": {
            "runs": args.runs,
            "as_configured": {"python_c_pass": spread(baseline), "dlspec_check_resnet18": spread(check)},
            "bytecode_cached": {"python_c_pass": spread(baseline_cached), "dlspec_check_resnet18": spread(check_cached)},
        },
        "front_end": rows,
        "growth_exponent": exponent,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"python {result['python']} on {result['platform']}; {result['versions']}")
    print(f"(a) `dlspec check specs/resnet18.dls` as a process, {args.runs} runs each: median [min–max] ±stdev")
    for mode, label in (("as_configured", "environment as is"), ("bytecode_cached", "bytecode cached")):
        b, c = result["process"][mode]["python_c_pass"], result["process"][mode]["dlspec_check_resnet18"]
        extra = f" (PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE')})" if mode == "as_configured" else ""
        print(f"  {label}{extra}")
        for name, st in (("python -c pass", b), ("dlspec check", c)):
            print(f"    {name:16s} {st['median_s'] * 1e3:7.1f} ms [{st['min_s'] * 1e3:.1f}–{st['max_s'] * 1e3:.1f}] ±{st['stdev_s'] * 1e3:.1f}")
        print(f"    dlspec's own share (difference of medians): {(c['median_s'] - b['median_s']) * 1e3:.1f} ms")
    print("(b) compile_source on generated specs (best of 3; 1 run at 10,000)")
    for r in rows:
        print(f"    {r['nodes']:6d} layers  {r['seconds'] * 1e3:9.1f} ms  {r['us_per_layer']:7.1f} µs/layer")
    print(f"    growth exponent (log-log slope): {exponent:.2f}")


if __name__ == "__main__":
    main()
