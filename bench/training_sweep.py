"""Issue 25, item 1: training recipes compared at EQUAL training compute on the demo's budget (resumable).

    python bench/training_sweep.py --list                      # the planned runs and their compute
    python bench/training_sweep.py                             # every recipe, seed 42 (hours on 2 cores)
    python bench/training_sweep.py --only today,a2 --seeds 42,43

Recipes (the width+depth and final stages; the teacher and rewire stages are the demo's and are trained
once per seed, in OUT/base-sSEED, every recipe starting from its OUT/base-sSEED/rewired):
  today  the demo's recipe before issue 25 (the reference): width 0.25 epoch, width+depth 0.25 epoch, 12 grid points + 4 mid-biased samples/step
  aK     (a) largest + smallest + K rotating grid points per step (--subnets-per-step K), more steps
  b      (b) samples stratified over the kept-layer counts (--space-depths stratified), weight 0.5
  c      (c) a larger width+depth share: the width stage halved, its compute given to width+depth
  e      (e) the final stage (gold labels, 12 grid points) given a quarter of the width+depth compute
  lr3    today's steps at learning rate 3e-4 in the width and width+depth stages: the gradient of the summed loss of 16
         sub-networks is clipped to norm 1, so each one's share of a step shrinks as sub-networks are added
  a2lr3  (a) with K=2 at learning rate 3e-4
  a2c    (a) with K=2 and (c): the width stage halved
  a2lr3d (a) with K=2, the width+depth stage at 3e-4 and the width stage at today's 1e-4
  a2lr3de a2lr3d with a quarter of the width+depth compute to the final stage (lr 1e-4)
  a2lr3dwW a2lr3d with the largest sub-network's loss weighted W (--largest-weight W; W = 2, 3)
  a4lr3  (a) with K=4 at learning rate 3e-4;  a2lr2: (a) with K=2 at 2e-4;  a2lr3bf16: a2lr3 under --bf16
  bf16   today's recipe with --bf16 (bfloat16 autocast; only on CPUs with native bf16): item 2's check that
         grid accuracy holds against fp32
Every recipe's width+depth(+final) compute equals today's: its steps are chosen from the mean step cost
(dynabert.distill.mean_step_flops at --length tokens); the compute each run counted (RUN/state.json) is
recorded beside it, with its ratio to today's (the sweep's rule: within 2%).

Each run is `dynasearch train ... --out OUT/NAME-sSEED` (skipped when its state.json says its stages are
done, resumed when it has a run.json), then `dynasearch evaluate RUN --grid` on the whole dev split
(skipped when its CSV exists); each result is written into --results (a JSON object keyed by run,
replaced atomically), so a killed sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynabert.train_config import TrainConfig  # noqa: E402

# The demo's training before issue 25 (dynasearch/demo.py at ce5f909), every recipe's reference; the demo now
# trains a2lr3d, the sweep's winner (DEMO_SUBNETS_PER_STEP, DEMO_LEARNING_RATES, DEMO_STAGE_EPOCHS).
DEMO_LR = "teacher=1e-4,width=1e-4,depth=1e-4,final=1e-4"
DEMO = dict(width=0.25, depth=0.25)
SAMPLES = ["--space-samples", "4", "--space-bias", "mid", "--depth-loss", "1,0.1"]
RECIPES = {
    "today": dict(args=[], shares=None),
    "a2": dict(args=["--subnets-per-step", "2"], shares=None),
    "a4": dict(args=["--subnets-per-step", "4"], shares=None),
    "b": dict(args=["--space-depths", "stratified", "--space-weight", "0.5"], shares=None),
    "c": dict(args=[], shares=dict(width=0.5)),  # width stage at half its steps, the rest to width+depth
    "e": dict(args=[], shares=dict(final=0.25)),  # a quarter of the width+depth compute to the final stage
    "lr3": dict(args=[], shares=None, lr=3e-4),
    "a2lr3": dict(args=["--subnets-per-step", "2"], shares=None, lr=3e-4),
    "a2c": dict(args=["--subnets-per-step", "2"], shares=dict(width=0.5)),
    "bf16": dict(args=["--bf16"], shares=None),  # today's recipe under bf16 autocast (item 2's accuracy rule)
    # a2lr3 with the width stage at today's 1e-4 (a2lr3 cost the full model a point) or K=4
    "a2lr3d": dict(args=["--subnets-per-step", "2"], shares=None, lr=dict(width=1e-4, depth=3e-4)),
    "a4lr3": dict(args=["--subnets-per-step", "4"], shares=None, lr=3e-4),
    "a2lr2": dict(args=["--subnets-per-step", "2"], shares=None, lr=2e-4),
    # a2lr3d with a quarter of its width+depth compute given to the final stage (gold labels, 12 grid points)
    "a2lr3de": dict(
        args=["--subnets-per-step", "2"], shares=dict(final=0.25), lr=dict(width=1e-4, depth=3e-4, final=1e-4)
    ),
    "a2lr3bf16": dict(args=["--subnets-per-step", "2", "--bf16"], shares=None, lr=3e-4),
    # a2lr3d (the demo's recipe since issue 25) with the full model's loss weighted W: it cost the full model a point
    "a2lr3dw2": dict(
        args=["--subnets-per-step", "2", "--largest-weight", "2"], shares=None, lr=dict(width=1e-4, depth=3e-4)
    ),
    "a2lr3dw3": dict(
        args=["--subnets-per-step", "2", "--largest-weight", "3"], shares=None, lr=dict(width=1e-4, depth=3e-4)
    ),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/sweep"))
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "training_sweep.json")
    p.add_argument("--only", default=",".join(RECIPES), help=f"recipes, comma-separated ({','.join(RECIPES)})")
    p.add_argument("--seeds", default="42")
    p.add_argument("--model", default=None, help="backbone (default the packaged MiniLM-L6)")
    p.add_argument("--task", default="tweets")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--train-subset", type=int, default=4000)
    p.add_argument("--dev-subset", type=int, default=500, help="checkpoint selection (the final scoring uses all)")
    p.add_argument("--max-seq-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every stage's epochs (a smoke: 0.05)")
    p.add_argument("--length", type=int, default=30, help="tokens per example for the planned compute")
    p.add_argument("--list", action="store_true", help="print the planned runs and their compute, run nothing")
    p.add_argument("--no-eval", action="store_true", help="train only")
    return p.parse_args()


def shape_of(model: str | None):
    from dynabert.backbone import load_model, resolve_model_dir
    from dynabert.subnet import BackboneShape

    return BackboneShape.from_config(load_model(resolve_model_dir(model)).config)


def plan(args, shape) -> dict:
    """name -> {"args": recipe flags, "steps": {stage: steps}, "epochs": {stage: epochs}, "flops": planned}."""
    from dynabert.distill import mean_step_flops

    per_epoch = math.ceil(args.train_subset / args.batch_size)
    lengths = [args.length] * args.batch_size

    def cfg_of(flags: list[str]) -> TrainConfig:
        kw: dict = dict(space_samples=4, space_bias="mid")
        for flag, field, conv in (
            ("--subnets-per-step", "subnets_per_step", int),
            ("--space-depths", "space_depths", str),
            ("--space-weight", "space_weight", float),
        ):
            if flag in flags:
                kw[field] = conv(flags[flags.index(flag) + 1])
        return TrainConfig(**kw)

    today = cfg_of([])
    ref_steps = {s: math.ceil(DEMO[s] * args.scale * per_epoch) for s in DEMO}
    cost = {s: mean_step_flops(shape, s, today, lengths) for s in DEMO}
    budget = sum(ref_steps[s] * cost[s] for s in DEMO)
    out = {}
    for name, r in RECIPES.items():
        cfg = cfg_of(r["args"])
        c = {s: mean_step_flops(shape, s, cfg, lengths) for s in ("width", "depth", "final")}
        shares = r["shares"] or {}
        steps = {"width": round(ref_steps["width"] * shares.get("width", 1.0) * cost["width"] / c["width"])}
        rest = budget - steps["width"] * c["width"]
        if "final" in shares:
            steps["final"] = max(1, round(shares["final"] * rest / c["final"]))
            rest -= steps["final"] * c["final"]
        steps["depth"] = max(1, round(rest / c["depth"]))
        steps["width"] = max(1, steps["width"])
        planned = sum(steps[s] * c[s] for s in steps)
        # epochs whose ceil(epochs * per_epoch) is exactly the planned steps
        epochs = {s: (n - 0.5) / per_epoch for s, n in steps.items()}
        out[name] = dict(
            args=r["args"], steps=steps, epochs=epochs, flops=planned, ratio=planned / budget, lr=r.get("lr", 1e-4)
        )
    return out


def finished(run: Path, stages: list[str]) -> bool:
    p = run / "state.json"
    return p.is_file() and set(stages) <= set(json.loads(p.read_text()).get("completed", []))


def sh(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def dynasearch() -> list[str]:
    return [sys.executable, "-m", "dynasearch"]


def common(args, seed: int) -> list[str]:
    out = ["--task", args.task, "--seed", str(seed), "--no-progress"]
    out += ["--data-dir", args.data_dir] if args.data_dir else []
    out += ["--train-subset", str(args.train_subset), "--dev-subset", str(args.dev_subset)]
    out += ["--max-seq-length", str(args.max_seq_length), "--batch-size", str(args.batch_size), "--group-by-length"]
    return out


def train(run: Path, stages: list[str], cmd: list[str]) -> None:
    if finished(run, stages):
        print(f"{run}: done", flush=True)
        return
    if (run / "run.json").is_file():
        sh([*dynasearch(), "train", "--out", str(run), "--resume", "--no-progress"])
    else:
        sh([*dynasearch(), "train", "--out", str(run), "--stages", ",".join(stages), *cmd])


def write_result(path: Path, key: str, record: dict) -> None:
    """results[key] = record, atomically (a temporary file beside it, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[key] = record
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def main() -> int:
    args = parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    planned = plan(args, shape_of(args.model))
    if args.list:
        print(f"{'run':<12} {'steps (width/depth/final)':<28} {'planned TFLOPs':>15} {'vs today':>9}  flags")
        for seed in seeds:
            for n in names:
                p = planned[n]
                st = "/".join(str(p["steps"].get(s, "-")) for s in ("width", "depth", "final"))
                print(
                    f"{n + '-s' + str(seed):<12} {st:<28} {p['flops'] / 1e12:>15.3f} {p['ratio']:>9.4f}  "
                    f"lr {p['lr'] if isinstance(p['lr'], dict) else format(p['lr'], 'g')} {' '.join(p['args'])}"
                )
        return 0
    for seed in seeds:
        base = args.out / f"base-s{seed}"
        base_cmd = [*common(args, seed), "--stage-lr", "teacher=1e-4", "--stage-epochs", f"teacher={args.scale:g}"]
        base_cmd += ["--model", args.model] if args.model else []
        train(base, ["teacher", "rewire"], base_cmd)
        for n in names:
            p = planned[n]
            run = args.out / f"{n}-s{seed}"
            stages = [s for s in ("width", "depth", "final") if s in p["steps"]]
            lr = ",".join(f"{s}={p['lr'].get(s, 1e-4) if isinstance(p['lr'], dict) else p['lr']:g}" for s in stages)
            ep = ",".join(f"{s}={p['epochs'][s]:.6g}" for s in stages)
            cmd = [*common(args, seed), "--model", str(base / "rewired"), "--stage-lr", lr, "--stage-epochs", ep]
            t0 = time.time()
            train(run, stages, [*cmd, *SAMPLES, *p["args"]])
            record = {"recipe": n, "seed": seed, "flags": p["args"], "planned": p, "train_wall_s": time.time() - t0}
            state = json.loads((run / "state.json").read_text())
            record["compute"] = state.get("compute")
            grid = run / "eval-whole" / f"{args.task}-grid.csv"
            if not args.no_eval:
                if not grid.is_file():
                    sh([*dynasearch(), "evaluate", str(run), "--grid", "--out", str(run / "eval-whole")])
                with grid.open() as f:
                    record["grid"] = list(csv.DictReader(f))
            write_result(args.results, f"{n}-s{seed}", record)
    # each run's counted width+depth(+final) compute against today's of the same seed (the rule: within 2%)
    if args.results.is_file():
        results = json.loads(args.results.read_text())
        for key, r in sorted(results.items()):
            ref = results.get(f"today-s{r['seed']}")
            if ref and r.get("compute") and ref.get("compute"):
                mine = sum(v["flops"] for s, v in r["compute"].items() if s in ("width", "depth", "final"))
                theirs = sum(v["flops"] for s, v in ref["compute"].items() if s in ("width", "depth", "final"))
                print(f"{key}: compute {mine / 1e12:.4g} TFLOPs, {mine / theirs:.4f} x today's")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
