"""Write bench/results/demo.md from a finished `make demo` (see bench/demo_timing.sh): the machine, the
install and per-step times against the 20-minute target, the grid against the majority class + 8
points, the full model against its teacher, the predictor's error and the verified answer."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mark(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", required=True, type=Path, help="the demo's OUT directory")
    ap.add_argument("--timing", required=True, type=Path, help="timing.env written by demo_timing.sh")
    ap.add_argument("--commit", required=True)
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args()
    from dynabert.tables import markdown_table

    t = dict(line.split("=", 1) for line in a.timing.read_text().split() if "=" in line)
    s = json.loads((a.demo / "summary.json").read_text())
    steps = json.loads((a.demo / "steps.json").read_text())
    m = s["metric"]
    install, demo = int(t["install_s"]), int(t["demo_s"])
    # `make install` (dev + demo extras) until commit c4c1224; `make install-demo` (demo extra only) since.
    install_cmd = t.get("install_cmd", "make_install").replace("_", " ")
    extras = "dynasearch[demo]" if install_cmd.endswith("install-demo") else "dynasearch[dev,demo]"
    total = install + demo
    lines = [
        "# `make demo` from a fresh clone (issue 10)",
        "",
        f"- written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; commit `{a.commit}`; `bench/demo_timing.sh` "
        f"(fresh `git clone`, `{install_cmd}` then `make demo`, under the machine's exclusive lock: nothing else ran)",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}",
        "",
        "## Time",
        "",
        f"Target: the whole demo within 20 minutes, install included: **{total / 60:.1f} min** ({mark(total <= 1200)}; "
        f"install {install} s, demo {demo} s, exit status {t.get('rc')}).",
        "",
        markdown_table(
            ("step", "seconds"),
            [(f"install (venv, torch, {extras})", install)]
            + [(k, f"{v.get('seconds', 0):.0f}") for k, v in steps.items()],
        ),
    ]
    lines += ["", "## Every grid sub-network works", ""]
    maj = s.get("dev_majority")
    teacher = (s.get("teacher") or {}).get(m)
    full = s["full"][m]
    worst = min(r[m] for r in s["grid"])
    lines.append(
        f"Majority class on dev: {maj:.2f}%. Target: every grid sub-network >= majority + 8 = {maj + 8:.2f}%: "
        f"worst {worst:.2f}% ({mark(worst >= maj + 8)}). Full model {full:.2f}% against its teacher "
        f"{teacher if teacher is None else f'{teacher:.2f}'}% (target within 1 point: "
        f"{mark(teacher is not None and full >= teacher - 1)})."
    )
    grid = [
        (
            f"{r['width']:g}",
            f"{r['depth']:g}",
            f"{r['params']:,}",
            f"{r[m]:.2f}",
            r.get("classes_predicted", ""),
            r.get("top_class_share", ""),
        )
        for r in s["grid"]
    ]
    lines += ["", markdown_table(("width", "depth", "params", m, "classes predicted", "top class share"), grid)]
    p = s["predictor"]
    lines += [
        "",
        "## Predictor and answer",
        "",
        f"- predictor {p['best']}: held-out MAPE {p['mape']:.2f}%, {100 * p['within_5']:.0f}% within +-5%, tau "
        f"{p['kendall_tau']:.3f} ({p['n_test']} held-out of {p['n_train'] + p['n_test']} timed configs)",
    ]
    c = s.get("chosen")
    if c:
        lines.append(
            f"- target {s['target_ms']:.2f} ms ({s['target_rule']}); answer {c['key']} (layers {c['subnet']['layers']}, "
            f"heads {c['subnet']['heads']}, FFN {c['subnet']['ffn']}): {m} {c[m]:.2f}, measured {c['measured_ms']:.2f} ms "
            f"corrected / {c['measured_raw_ms']:.2f} ms raw, predicted {c['predicted_ms']:.2f} ms, "
            f"{c['speedup']:.2f}x faster than the full model ({s['full']['median_ms']:.2f} ms): "
            f"meets the target: {mark(c['meets_target'])}"
        )
    else:
        lines.append(f"- target {s['target_ms']:.2f} ms: **no answer** ({s.get('search_message', '')})")
    g = s.get("against_grid")
    if c and g:
        kind = "a paper grid point" if g["answer_is_grid"] else "a per-layer config (not a grid point)"
        if g.get("grid") is None:
            lines.append(f"- the answer is {kind}; no grid point is predicted under the target")
        elif g["grid"]["key"] == c["key"]:
            lines.append(f"- the answer is {kind}: {g['grid']['label']}, the best grid point under the target")
        else:
            lo, hi = g["metric_diff_95"]
            ratio = g.get("latency_ratio")
            lines.append(
                f"- the answer is {kind}; against the best grid point under the target, {g['grid']['label']} ({m} "
                f"{g['grid'][m]:.2f}, predicted {g['grid']['predicted_ms']:.2f} ms): {g['metric_diff']:+.2f} points "
                f"[{lo:+.2f}, {hi:+.2f}] (paired bootstrap 95%, {g['examples']} report examples the search never ranked on)"
                + (f", latency x{ratio:.2f}" if ratio else "")
                + "; target: >= +1 point, or equal accuracy >= 15% faster"
            )
    q = s.get("int8")
    if c and q:
        lo, hi = q["metric_diff_95"]
        lines.append(
            f"- the same config at onnxruntime int8: {m} {q['metric_int8']:.2f} against fp32 {q['metric_fp32']:.2f} "
            f"({q['metric_diff']:+.2f} [{lo:+.2f}, {hi:+.2f}] paired, {q['examples']} report examples), "
            f"{q['int8_ms']:.2f} ms against {q['fp32_ms']:.2f} ms raw in consecutive runs"
            + (f" ({q['speedup']:.2f}x)" if q.get("speedup") else "")
        )
    for w in s.get("warnings", []):
        lines.append(f"- warning: {w}")
    a.out.write_text("\n".join(lines) + "\n")
    print(a.out.read_text())


if __name__ == "__main__":
    main()
