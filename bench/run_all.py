"""Run the whole benchmark suite and summarize it.

    python bench/run_all.py [--quick] [--only NAME ...] [--out FILE]

Each benchmark runs as its own subprocess (so import times and memory stay separate) with
`--json`; its result is the JSON it prints last (one line, or the whole output as one JSON
document). A script that does not exist is reported as missing, and one that fails is reported
with its exit code and the end of its error output — neither is skipped silently. The summary
table is printed and written, with every raw result, machine and versions, to `--out` (default
bench/results/run_all.json, next to a Markdown copy of the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    args: tuple[str, ...] = ()
    what: str = ""
    #: what --quick passes (scripts without a --quick option get fewer rounds instead)
    quick: tuple[str, ...] = ("--quick",)


SUITE = (
    Benchmark("check", "bench_check.py", (), "dlspec check/summary vs Keras summary() and a PyTorch meta forward (processes)"),
    Benchmark("growth", "bench_growth.py", (), "front end + level-2 passes on 100–10,000 layers"),
    Benchmark("torch", "bench_torch.py", (), "generated vs hand-written PyTorch; dlspec train vs a hand loop"),
    Benchmark("onnx_level0", "bench_onnx.py", ("--opt-level", "0"), "dlspec ONNX vs torch.onnx.export, level 0"),
    Benchmark("onnx_level2", "bench_onnx.py", ("--opt-level", "2"), "dlspec ONNX vs torch.onnx.export, level 2"),
    Benchmark("keras", "bench_keras.py", (), "generated vs hand-written Keras training steps", ("--rounds", "3", "--inner", "5")),
    Benchmark("train_tf", "bench_train_tf.py", (), "dlspec train (TensorFlow) vs a hand-written model.fit",
              ("--rounds", "2", "--epochs", "1")),
    Benchmark("machine", "bench_machine.py", (), "ResNet-18 forward FLOP/s as a fraction of matmul FLOP/s"),
)


def last_json(text: str) -> Any:
    """The JSON a benchmark printed: its last line, else its whole output, else the JSON document
    that starts on the last line opening with `{` or `[` and runs to the end."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(("{", "[")):
            try:
                return json.loads("\n".join(lines[i:]))
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON result in its output")


def run(b: Benchmark, quick: bool, timeout: float) -> dict[str, Any]:
    path = BENCH / b.script
    entry: dict[str, Any] = {"name": b.name, "script": f"bench/{b.script}", "args": list(b.args), "what": b.what}
    if not path.exists():
        return {**entry, "status": "missing"}
    argv = [sys.executable, str(path), *b.args, "--json", *(b.quick if quick else ())]
    entry["command"] = " ".join(["python", f"bench/{b.script}", *argv[2:]])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    t0 = time.perf_counter()
    try:
        r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**entry, "status": "timeout", "seconds": time.perf_counter() - t0}
    entry["seconds"] = time.perf_counter() - t0
    if r.returncode != 0:
        return {**entry, "status": f"failed (exit {r.returncode})", "stderr_tail": r.stderr[-1500:]}
    try:
        entry["result"] = last_json(r.stdout)
    except ValueError as exc:
        return {**entry, "status": f"failed ({exc})", "stdout_tail": r.stdout[-1500:]}
    return {**entry, "status": "ok"}


def _get(d: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(d, dict) and k in d:
            d = d[k]
        elif isinstance(d, list) and isinstance(k, int) and -len(d) <= k < len(d):
            d = d[k]
        else:
            return None
    return d


def headline(entry: dict[str, Any]) -> str:
    """One line of the most telling figures of a result (the scripts' own JSON has everything)."""
    res = entry.get("result")
    name = entry["name"]
    if res is None:
        return ""
    if name == "check":
        parts = []
        for model, m in res["models"].items():
            for k, r in m["ratios"].items():
                if k.endswith("/dlspec_check"):
                    parts.append(f"{model} {k.split('/')[0]} ÷ check {r['median']:.1f}× [IQR {r['q1']:.1f}–{r['q3']:.1f}]")
        return "; ".join(parts) + f"; goal ≥ 10×: {'met' if res['goal_met'] else 'not met'}"
    if name == "growth":
        e = res["growth_exponent"]
        return (f"exponent total {e['total']:.2f} (front end {e['front_end']:.2f}, passes {e['passes']:.2f}); "
                f"goal ≤ 1.1: {'met' if res['goal_met'] else 'not met'}")
    if name == "machine":
        q = res["fraction_of_matmul"]
        return (f"ResNet-18 forward {res['resnet18_forward_gflops']['median']:.1f} GFLOP/s = {q['median']:.2f} "
                f"[IQR {q['q1']:.2f}–{q['q3']:.2f}] of matmul {res['matmul_gflops']['median']:.1f} GFLOP/s")
    if name == "torch":
        rows = [f"{r['model'].split(' ')[0]} hand÷generated {r['ratio_hand_over_generated']:.3f}"
                for r in res.get("modules", []) if "ratio_hand_over_generated" in r]
        t = _get(res, "train", "ratio_train_steps")
        if t is not None:
            rows.append(f"train step throughput dlspec÷hand {t:.3f}")
        return "; ".join(rows)
    if isinstance(res, list) and all(isinstance(r, dict) and "ratio_of_medians" in r for r in res):
        return "; ".join(f"{r.get('model')} batch {r.get('batch')}: ratio of medians {r['ratio_of_medians']:.3f}" for r in res)
    flat = {k: v for k, v in res.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)} if isinstance(res, dict) else {}
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(flat.items())[:6])


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str] = {"python": platform.python_version()}
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("torch", "tensorflow", "tensorflow-cpu", "keras", "onnx", "onnxruntime", "numpy"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "versions": versions,
            "load_avg": os.getloadavg()}


def table(entries: list[dict[str, Any]]) -> str:
    out = ["| Benchmark | Command | Status | Time | Headline (ratios against the baseline of the same run) |",
           "|---|---|---|---|---|"]
    for e in entries:
        secs = f"{e['seconds']:.0f} s" if "seconds" in e else "–"
        out.append(f"| {e['name']} | `{e.get('command', e['script'])}` | {e['status']} | {secs} | {headline(e) if e['status'] == 'ok' else ''} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="pass --quick to every benchmark (a smoke run)")
    ap.add_argument("--only", nargs="+", metavar="NAME", choices=[b.name for b in SUITE], help="run only these")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "run_all.json")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds allowed to each benchmark")
    args = ap.parse_args()
    info = machine()
    print(f"{info['cpu']}, {info['cores']} cores; " + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
          + f"; load average {info['load_avg'][0]:.2f}", flush=True)
    entries = []
    for b in SUITE:
        if args.only and b.name not in args.only:
            continue
        print(f"running {b.name} ({b.script} {' '.join(b.args)}) ...", flush=True)
        e = run(b, args.quick, args.timeout)
        print(f"  {e['status']}" + (f" in {e['seconds']:.0f} s: {headline(e)}" if e["status"] == "ok" else ""), flush=True)
        if e["status"].startswith("failed"):
            print("  " + (e.get("stderr_tail") or e.get("stdout_tail") or "").strip().replace("\n", "\n  "), flush=True)
        entries.append(e)
    info["load_avg_end"] = os.getloadavg()
    md = table(entries)
    print()
    print(md)
    from dlspec.train.run import atomic_write_json, atomic_write_text

    atomic_write_json(args.out, {"machine": info, "quick": args.quick, "benchmarks": entries})
    atomic_write_text(args.out.with_suffix(".md"), md + "\n")
    print(f"\nwrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
