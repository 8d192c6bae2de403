"""How steady is this machine? The noise floor under every latency number in bench/results.

Times ONE fixed workload (a 768 x 768 fp32 matrix product through torch, ~9 ms at 1 thread) back to
back for a while, at 1 and 2 threads, each in a fresh process, and reports what no protocol can
remove: the spread of single runs (CV), how far the machine's speed drifts (medians of 5-second
windows, largest over smallest) and how far apart the medians of the two halves are. It also counts
the runs during which the process waited for a CPU inside this VM (Linux schedstat run_delay > 0, or
an involuntary context switch): if the spread is large and those counts are small, the noise comes
from outside the VM (other tenants of the host) and is invisible to any in-VM check.

    flock /tmp/dynasearch-cpu.lock .venv/bin/python bench/host_noise.py [SECONDS_PER_SETTING]

Writes bench/results/host_noise.md (appends a dated section; machine fingerprint and commit included).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "host_noise.md"

PROBE = r"""
import json, os, resource, sys, time
import numpy as np
import torch
threads, seconds = int(sys.argv[1]), float(sys.argv[2])
torch.set_num_threads(threads)
a, b = torch.randn(768, 768), torch.randn(768, 768)

def delay_ns():
    total = 0
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total

for _ in range(20):
    torch.mm(a, b)
rows = []
t_end = time.perf_counter() + seconds
while time.perf_counter() < t_end:
    d0, c0 = delay_ns(), resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    t0 = time.perf_counter_ns()
    torch.mm(a, b)
    t1 = time.perf_counter_ns()
    d1, c1 = delay_ns(), resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    rows.append((t0 / 1e9, (t1 - t0) / 1e6, (d1 - d0) / 1e3, c1 - c0))
print(json.dumps(rows))
"""


def analyse(rows: list[list[float]]) -> dict:
    import numpy as np

    t = np.array([r[0] for r in rows])
    ms = np.array([r[1] for r in rows])
    delay_us = np.array([r[2] for r in rows])
    csw = np.array([r[3] for r in rows])
    t = t - t[0]
    windows = [np.median(ms[(t >= w) & (t < w + 5)]) for w in np.arange(0, t[-1] - 4.999, 5)]
    half = len(ms) // 2
    m1, m2 = float(np.median(ms[:half])), float(np.median(ms[half:]))
    waited = (delay_us > 50) | (csw > 0)
    return {
        "runs": len(ms),
        "median_ms": float(np.median(ms)),
        "p10_ms": float(np.percentile(ms, 10)),
        "p90_ms": float(np.percentile(ms, 90)),
        "cv": float(ms.std(ddof=1) / ms.mean()),
        "window_drift": float(max(windows) / min(windows) - 1) if len(windows) >= 2 else float("nan"),
        "halves": abs(m2 / m1 - 1),
        "waited": float(waited.mean()),
        "cv_not_waited": float(ms[~waited].std(ddof=1) / ms[~waited].mean()) if (~waited).sum() > 2 else float("nan"),
    }


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    results = {}
    for threads in (1, 2):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        out = subprocess.run(
            [sys.executable, "-c", PROBE, str(threads), str(seconds)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
        results[threads] = analyse(json.loads(out))
        print(threads, results[threads], flush=True)
    sys.path.insert(0, str(REPO))
    from dynabert.io import write_text
    from dynabert.tables import markdown_table
    from dynasearch_runtime.fingerprint import machine_info

    m = machine_info(with_torch=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    lines = [
        f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit `{commit}`",
        "",
        f"- machine: {m['cpu_model']}, {m['cpu_cores']} cores usable, {platform.platform()}, Python {m['python']}, "
        f"torch {m['torch_version']}; workload: torch.mm of two 768 x 768 fp32 matrices, back to back, {seconds:.0f} s per "
        "setting, each in a fresh process, under the machine lock",
        "",
        markdown_table(
            (
                "threads",
                "runs",
                "median ms",
                "p10 / p90 ms",
                "CV of single runs",
                "drift: largest / smallest 5-s window median",
                "first vs second half median",
                "runs that waited for a CPU in this VM",
                "CV of the other runs",
            ),
            (
                (
                    threads,
                    r["runs"],
                    f"{r['median_ms']:.2f}",
                    f"{r['p10_ms']:.2f} / {r['p90_ms']:.2f}",
                    f"{r['cv']:.1%}",
                    f"{r['window_drift']:+.1%}",
                    f"{r['halves']:.1%}",
                    f"{r['waited']:.1%}",
                    f"{r['cv_not_waited']:.1%}",
                )
                for threads, r in results.items()
            ),
        ),
        "",
    ]
    header = (
        ""
        if OUT.exists()
        else (
            "# Host noise: the floor under every latency number\n\n"
            "Written by `bench/host_noise.py` (see its docstring). A latency median can be no more repeatable than the "
            "machine's speed: compare the drift and half-to-half columns with the +-3% repeatability target.\n\n"
        )
    )
    write_text(OUT, header + (OUT.read_text() if OUT.exists() else "") + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
