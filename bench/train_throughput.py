"""Width+depth training throughput of code trees, compared (issue 25): examples x sub-networks per second.

Runs the demo's width+depth stage ("depth" internally: the 12 grid sub-networks + 4 mid-biased space
samples per step, depth loss 1,0.1, tweets, 4000 training examples, batch 32 grouped by length, lr 1e-4)
for a fixed number of steps through the CLI, from one model dir, with the working directory at each
code root: `python -m dynasearch` imports the package from the working directory first, so each run
uses that tree's code. Same seed, so the same sub-networks and the same data order in every run.

The rate is state.json's throughput of the stage (examples per second of the training steps; the dev
evaluation and checkpoints are outside it) times its sub-networks per step. Variants run interleaved
(A, B, A, B, ...), the median of the repeats each; the ratio is against the first --code. Every run
also reports its dev scores and loss parts: the same code trained from the same start must agree,
and two trees that differ only in speed must agree to float rounding.

    .venv/bin/python bench/train_throughput.py --code before=/path/to/old-worktree --code after=.

A variant may add `dynasearch train` flags after its tree: `--code NAME=DIR:FLAGS`, the tree ending at the
first ':' (a DIR containing ':' cannot be given) and FLAGS split like a shell line (quote it when it holds
spaces). They come after the recipe's flags, so one given twice overrides the recipe's. float32 against
bfloat16 autocast, interleaved, on one tree:

    .venv/bin/python bench/train_throughput.py --code fp32=. --code bf16=.:--bf16

A variant whose flags change the numerics (--bf16) is not expected to match the first variant's dev scores.

Writes a Markdown table (atomically) to --out. Other processes on the machine slow every run; the
interleaving spreads that over the variants, so the ratio is fairer than the absolute rates.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEFAULT_MODEL = REPO / "runs" / "sweep" / "base-s42" / "rewired"


def train_args(out: Path, model: Path, steps: int) -> list[str]:
    return [
        "train",
        "--out",
        str(out),
        "--stages",
        "depth",
        "--model",
        str(model),
        "--task",
        "tweets",
        "--seed",
        "42",
        "--train-subset",
        "4000",
        "--dev-subset",
        "500",
        "--max-seq-length",
        "64",
        "--batch-size",
        "32",
        "--group-by-length",
        "--stage-lr",
        "depth=1e-4",
        "--max-steps",
        str(steps),
        "--space-samples",
        "4",
        "--space-bias",
        "mid",
        "--depth-loss",
        "1,0.1",
        "--no-progress",
    ]


def cpu_info() -> tuple[str, str]:
    """(model name, native-bf16 features): what `dynasearch train --bf16` decides by (dynabert.checks)."""
    from dynabert.checks import cpu_bf16_flags
    from dynasearch_runtime.fingerprint import _cpu_model

    return _cpu_model(), ", ".join(cpu_bf16_flags()) or "none"


def git_rev(root: Path) -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        return rev + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def imported_from(python: str, root: Path) -> str:
    """Where `python -m dynasearch` run in `root` imports dynabert from (must be that tree)."""
    r = subprocess.run(
        [python, "-c", "import dynabert, os; print(os.path.dirname(os.path.dirname(dynabert.__file__)))"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    return r.stdout.strip()


def one_run(python: str, root: Path, model: Path, steps: int, work: Path, tag: str, flags: list[str]) -> dict:
    out = work / tag
    cmd = [python, "-m", "dynasearch", *train_args(out, model, steps), *flags]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"error: run {tag} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    state = json.loads((out / "state.json").read_text())
    tp = state["throughput"]["depth"]
    hist = state["scores"]["depth"]["history"][-1]
    return {
        "examples_per_s": tp["examples_per_s"],
        "subnets_per_step": tp["subnets_per_step"],
        "rate": tp["examples_per_s"] * tp["subnets_per_step"],
        "seconds": tp["seconds"],
        "dev_sum": hist["score"],
        "scores": hist["scores"],
        "loss_parts": state.get("loss_parts", {}).get("depth", {}),
    }


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def report(
    args, variants: dict[str, Path], flags: dict[str, list[str]], runs: dict[str, list[dict]], torch_version: str
) -> str:
    cpu, bf16 = cpu_info()
    names = list(variants)
    med = {n: statistics.median(r["rate"] for r in runs[n]) for n in names}
    base = names[0]
    lines = [
        "# Width+depth training throughput (examples x sub-networks per second)",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- CPU: {cpu} ({os.cpu_count()} logical CPUs; native bf16 flags: {bf16}); torch {torch_version}",
        f"- recipe: width+depth stage, {args.steps} steps from `{args.model}`, tweets, --train-subset 4000 "
        "--max-seq-length 64 --batch-size 32 --group-by-length, 12 grid + 4 mid-biased space samples per step, "
        "--depth-loss 1,0.1, seed 42 (same sub-networks and data order in every run)",
        f"- runs interleaved ({', '.join(names)}) x {args.repeats}; rate = state.json throughput "
        "(training steps only, evaluation excluded) x sub-networks per step; median per variant",
        "",
        "| variant | code | commit | extra train flags | rates (ex x subnets / s) | median | vs " + base + " |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in names:
        rates = ", ".join(f"{r['rate']:.2f}" for r in runs[n])
        extra = f"`{shlex.join(flags[n])}`" if flags[n] else "none"
        lines.append(
            f"| {n} | `{variants[n]}` | {git_rev(variants[n])} | {extra} | {rates} | {med[n]:.2f} | "
            f"{med[n] / med[base]:.2f}x |"
        )
    lines += [
        "",
        "Numerics (each run's dev score sum over the 12 grid sub-networks after the last step, and its mean "
        "loss parts per step):",
        "",
        "| variant | run | dev sum | logit KL | teacher entropy | hidden MSE |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        for i, r in enumerate(runs[n]):
            p = r["loss_parts"]
            lines.append(
                f"| {n} | {i + 1} | {r['dev_sum']:.4f} | {p.get('logit_kl', float('nan')):.6f} | "
                f"{p.get('teacher_entropy', float('nan')):.6f} | {p.get('hidden_mse', float('nan')):.6f} |"
            )
    first = runs[base][0]
    same = {n: all(r["scores"] == first["scores"] for r in runs[n]) for n in names}
    lines += [
        "",
        "Per-sub-network dev scores identical to the first run of "
        + base
        + ": "
        + ", ".join(f"{n} {'yes' if same[n] else 'no'}" for n in names),
        "",
        "Other processes on the machine slow every run; compare ratios, not absolute rates, unless it ran alone.",
        "",
        "Command: `" + " ".join([".venv/bin/python", "bench/train_throughput.py", *sys.argv[1:]]) + "`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--code",
        action="append",
        required=True,
        metavar="NAME=DIR[:FLAGS]",
        help="a code tree to run, optionally with extra `dynasearch train` flags after the first ':' "
        "(e.g. bf16=.:--bf16); repeat",
    )
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model dir the stage starts from")
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps per run (default 12)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per variant, interleaved (default 3)")
    ap.add_argument("--python", default=sys.executable, help="interpreter (default: this one)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train_throughput.md")
    args = ap.parse_args(argv)
    variants: dict[str, Path] = {}
    flags: dict[str, list[str]] = {}
    for spec in args.code:
        name, sep, rest = spec.partition("=")
        root, colon, extra = rest.partition(":")
        if not sep or not name or not root:
            ap.error(f"--code {spec!r}: expected NAME=DIR or NAME=DIR:FLAGS")
        try:
            flags[name] = shlex.split(extra)
        except ValueError as e:
            ap.error(f"--code {spec!r}: the flags after ':' do not split ({e})")
        if colon and (not flags[name] or not flags[name][0].startswith("-")):
            ap.error(f"--code {spec!r}: after ':' give `dynasearch train` flags, e.g. {name}={root}:--bf16")
        path = Path(root).resolve()
        if not (path / "dynabert").is_dir():
            ap.error(f"--code {spec!r}: {path} has no dynabert package")
        if name in variants:
            ap.error(f"--code {spec!r}: variant name {name!r} given twice")
        src = imported_from(args.python, path)
        if Path(src).resolve() != path:
            ap.error(f"--code {spec!r}: python -m dynasearch in {path} imports dynabert from {src!r}")
        variants[name] = path
    if not args.model.is_dir():
        ap.error(f"--model {args.model}: not a directory")
    torch_version = subprocess.run(
        [args.python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    runs: dict[str, list[dict]] = {n: [] for n in variants}
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as tmp:
        for rep in range(args.repeats):
            for name, root in variants.items():
                r = one_run(
                    args.python, root, args.model.resolve(), args.steps, Path(tmp), f"{name}-{rep}", flags[name]
                )
                runs[name].append(r)
                print(
                    f"{name} run {rep + 1}/{args.repeats}: {r['rate']:.2f} examples x sub-networks/s "
                    f"({r['examples_per_s']:.3f} examples/s x {r['subnets_per_step']}), dev sum {r['dev_sum']:.4f}",
                    flush=True,
                )
    text = report(args, variants, flags, runs, torch_version)
    write_atomic(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
