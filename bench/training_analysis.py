"""The numbers of bench/training_report.py's report, pure: the caches in, a dict out (no file, no model).

The grid and the budget the report is about, the paired bootstrap over dev examples, the grid front's
hypervolume, the depth rows, issue 25's targets and the winning recipe. Kept apart from the measuring
steps (training, scoring, timing) so that the statistics can be read, and tested, on their own;
bench/training_report.py puts the repo root and bench/ on sys.path before importing this module.
"""

from __future__ import annotations

import numpy as np

from dynabert.metrics import paired_bootstrap
from search.pareto import hypervolume_2d

WIDTHS = (1.0, 0.75, 0.5, 0.25)
DEPTHS = (1.0, 0.75, 0.5)
# The paper grid in dynabert.subnet.paper_grid's order (depth outer, width inner), named WxD.
POINTS = [f"{w:g}x{d:g}" for d in DEPTHS for w in WIDTHS]
# Issue 25 item 0: the depth < 1 shapes at widths >= 0.5, each trained alone as the reference.
DEPTH_ROWS = [(w, d) for d in (0.75, 0.5) for w in (1.0, 0.75, 0.5)]
ALONE_SEED = 42
TODAY = "today"
RESAMPLES = 1000
BOOT_SEED = 0
# The demo's budget (dynasearch/demo.py DemoConfig; bench/training_sweep.py's base run).
TASK = "tweets"
BUDGET = dict(train_subset=4000, dev_subset=500, max_seq_length=64, batch_size=32, lr=1e-4)


def name_of(w: float, d: float) -> str:
    return f"{w:g}x{d:g}"


def majority(labels: np.ndarray) -> float:
    return 100.0 * float(np.bincount(labels).max() / len(labels))


def boot_counts(n: int, resamples: int) -> np.ndarray:
    """(resamples, n) counts of each dev example in each resample: the SAME for every recipe (paired)."""
    idx = np.random.default_rng(BOOT_SEED).integers(0, n, size=(resamples, n))
    counts = np.zeros((resamples, n), dtype=np.float32)
    np.add.at(counts, (np.arange(resamples)[:, None], idx), 1.0)
    return counts


def hv_of(acc: np.ndarray, lat: np.ndarray, ref_s: float, ref_t: float) -> float:
    return hypervolume_2d(acc, lat, ref_s, ref_t)


def hv_boot(correct: np.ndarray, counts: np.ndarray, lat: np.ndarray, ref_s: float, ref_t: float) -> np.ndarray:
    """The hypervolume of the 12 grid points in each resample (their accuracies recomputed on it)."""
    acc = 100.0 * (counts @ correct.T.astype(np.float32)) / correct.shape[1]  # (resamples, 12)
    return np.array([hv_of(a, lat, ref_s, ref_t) for a in acc])


def interval(x: np.ndarray) -> tuple[float, float]:
    lo, hi = np.quantile(x, [0.025, 0.975])
    return float(lo), float(hi)


def analyse(data: dict, resamples: int = RESAMPLES) -> dict:
    """The numbers of the report (pure: the caches in, a dict out)."""
    runs, labels = data["runs"], data["labels"]
    out: dict = {"recipes": {}, "seeds": sorted({int(r["seed"]) for r in runs.values()})}
    if labels is None:
        return out
    n = len(labels)
    out["n_dev"], out["majority"] = n, majority(labels)
    by_recipe: dict[str, dict[int, dict]] = {}
    for r in sorted(runs.values(), key=lambda r: (r["recipe"] != TODAY, r["recipe"], int(r["seed"]))):
        by_recipe.setdefault(r["recipe"], {})[int(r["seed"])] = r
    lat = data["latency"]
    counts = boot_counts(n, resamples)
    if lat is not None:
        t = np.array([lat["points"][p]["ms"] for p in POINTS])
        ref_t = lat["points"]["1x1"]["ms"]
        out["ref"] = (out["majority"], ref_t)
    for name, seeds in by_recipe.items():
        rec: dict = {"seeds": sorted(seeds), "per_seed": {}}
        for seed, r in sorted(seeds.items()):
            c = r["correct"]
            ps = {"acc": 100.0 * c.mean(axis=1), "record": r}
            comp = r.get("compute") or {}
            ps["flops"] = sum(v["flops"] for s, v in comp.items() if s in ("width", "depth", "final"))
            ps["seconds"] = (comp.get("total") or {}).get("seconds")
            if lat is not None:
                ps["hv"] = hv_of(ps["acc"], t, out["majority"], ref_t)
                ps["hv_boot"] = hv_boot(c, counts, t, out["majority"], ref_t)
            teacher = data["teachers"].get(seed)
            if teacher is not None:
                ps["teacher"] = 100.0 * teacher["correct"].mean()
            rec["per_seed"][seed] = ps
        # the mean over seeds: per-example mean correctness (same dev examples), so bootstraps stay paired
        rec["correct_mean"] = np.mean([seeds[s]["correct"].astype(float) for s in sorted(seeds)], axis=0)
        rec["acc"] = 100.0 * rec["correct_mean"].mean(axis=1)
        if lat is not None:
            rec["hv"] = float(np.mean([rec["per_seed"][s]["hv"] for s in seeds]))
            rec["hv_boot"] = np.mean([rec["per_seed"][s]["hv_boot"] for s in seeds], axis=0)
        out["recipes"][name] = rec
    today = out["recipes"].get(TODAY)
    for name, rec in out["recipes"].items():
        for seed, ps in rec["per_seed"].items():
            ref = today["per_seed"].get(seed) if today else None
            ps["flops_ratio"] = ps["flops"] / ref["flops"] if ref and ref["flops"] else None
            if lat is not None and ref is not None:
                ps["hv_ratio"] = ps["hv"] / ref["hv"] if ref["hv"] else float("nan")
                ps["hv_ratio_ci"] = interval(ps["hv_boot"] / ref["hv_boot"])
        if lat is not None:
            rec["hv_ci"] = interval(rec["hv_boot"])
            if today is not None:
                rec["hv_ratio"] = rec["hv"] / today["hv"] if today["hv"] else float("nan")
                rec["hv_ratio_ci"] = interval(rec["hv_boot"] / today["hv_boot"])
        # depth rows: the gap to the full-depth sibling, and the paired difference against the alone shape
        rec["depth"] = {}
        for w, d in DEPTH_ROWS:
            pt, sib = POINTS.index(name_of(w, d)), POINTS.index(name_of(w, 1.0))
            row = {"gap": float(rec["acc"][sib] - rec["acc"][pt]), "limit": 3.0 if d == 0.75 else 5.0}
            alone = data["alone"].get(name_of(w, d))
            if alone is not None:
                row["alone_acc"] = 100.0 * alone["correct"].mean()
                row["vs_alone"] = paired_bootstrap(
                    rec["correct_mean"][pt], alone["correct"].astype(float), resamples, BOOT_SEED
                )
            rec["depth"][name_of(w, d)] = row
        # the full-depth points against today's (on the mean over seeds)
        rec["vs_today"] = {}
        if today is not None and name != TODAY:
            common = sorted(set(rec["per_seed"]) & set(today["per_seed"]))
            if common:
                mine = np.mean([rec["per_seed"][s]["record"]["correct"].astype(float) for s in common], axis=0)
                theirs = np.mean([today["per_seed"][s]["record"]["correct"].astype(float) for s in common], axis=0)
                for w in WIDTHS:
                    i = POINTS.index(name_of(w, 1.0))
                    rec["vs_today"][name_of(w, 1.0)] = paired_bootstrap(mine[i], theirs[i], resamples, BOOT_SEED)
                rec["vs_today_seeds"] = common
    out["bf16"] = bf16_against_fp32(out["recipes"], resamples)
    for name, rec in out["recipes"].items():
        rec["targets"] = targets(rec, out, name)
        for x in rec["targets"]:  # numpy booleans would print as n/a
            x["met"] = None if x["met"] is None else bool(x["met"])
    out["winner"] = winner(out["recipes"])
    return out


def bf16_against_fp32(recipes: dict, resamples: int) -> dict:
    """Item 2's rule for --bf16: every grid point of a bf16 recipe (NAMEbf16; plain `bf16` is today's under
    bf16) against the same recipe in float32, paired over dev examples on their common seeds, held to the
    full-depth rule of the targets (point estimate >= -0.5, the interval's lower end >= -1.5)."""
    out = {}
    for name, rec in recipes.items():
        if not name.endswith("bf16"):
            continue
        fp32 = name[: -len("bf16")] or TODAY
        ref = recipes.get(fp32)
        common = sorted(set(rec["per_seed"]) & set(ref["per_seed"])) if ref else []
        if not common:
            continue
        mine = np.mean([rec["per_seed"][s]["record"]["correct"].astype(float) for s in common], axis=0)
        theirs = np.mean([ref["per_seed"][s]["record"]["correct"].astype(float) for s in common], axis=0)
        rows = {p: paired_bootstrap(mine[i], theirs[i], resamples, BOOT_SEED) for i, p in enumerate(POINTS)}
        out[name] = {
            "fp32": fp32,
            "seeds": common,
            "rows": rows,
            "met": all(m >= -0.5 and lo >= -1.5 for m, lo, _ in rows.values()),
        }
    return out


def targets(rec: dict, out: dict, name: str) -> list[dict]:
    """Each target of issue 25 item 4: what it asks, the measured value, met (True/False) or None (no data)."""
    t = []
    gaps = rec["depth"]
    worst75 = max(gaps[name_of(w, 0.75)]["gap"] for w in (1.0, 0.75, 0.5))
    worst50 = max(gaps[name_of(w, 0.5)]["gap"] for w in (1.0, 0.75, 0.5))
    t.append(
        dict(
            target="at widths >= 0.5 every depth-0.75 grid point within 3 points of its full-depth sibling",
            value=f"largest gap {worst75:.2f}",
            met=worst75 <= 3.0,
            depth_row=True,
        )
    )
    t.append(
        dict(
            target="at widths >= 0.5 every depth-0.5 point within 5 points of its full-depth sibling",
            value=f"largest gap {worst50:.2f}",
            met=worst50 <= 5.0,
            depth_row=True,
        )
    )
    va = [(pt, r["vs_alone"]) for pt, r in gaps.items() if "vs_alone" in r]
    if len(va) == len(gaps):
        pt, (m, lo, hi) = min(va, key=lambda x: (x[1][0] >= -0.5 and x[1][1] > -2, x[1][0]))
        met = all(v[0] >= -0.5 and v[1] > -2 for _, v in va)
        value = f"weakest {pt}: {m:+.2f} [{lo:+.2f}, {hi:+.2f}]"
    else:
        met, value = None, f"alone references for {len(va)} of {len(gaps)} shapes"
    t.append(
        dict(
            target="each of them at least as accurate as the same shape trained alone (paired point estimate >= -0.5, "
            "interval's lower end > -2)",
            value=value,
            met=met,
            depth_row=True,
        )
    )
    if name == TODAY:
        t.append(dict(target="every full-depth point not worse than today's recipe", value="(is today's)", met=None))
    elif rec["vs_today"]:
        vt = rec["vs_today"]
        pt, (m, lo, hi) = min(vt.items(), key=lambda x: (x[1][0] >= -0.5 and x[1][1] >= -1.5, x[1][0]))
        met = all(v[0] >= -0.5 and v[1] >= -1.5 for v in vt.values())
        seeds = "two-seed mean" if len(rec["vs_today_seeds"]) > 1 else f"seed {rec['vs_today_seeds'][0]} only"
        t.append(
            dict(
                target="every full-depth point not worse than today's recipe (judged on the two-seed mean: paired point "
                "estimate >= -0.5 and the interval's lower end >= -1.5)",
                value=f"weakest {pt}: {m:+.2f} [{lo:+.2f}, {hi:+.2f}] ({seeds})",
                met=met,
            )
        )
    else:
        t.append(dict(target="every full-depth point not worse than today's", value="no today run", met=None))
    diffs = {s: ps["teacher"] - ps["acc"][0] for s, ps in rec["per_seed"].items() if "teacher" in ps}
    if diffs:
        worst = max(diffs.values())
        value = ", ".join(
            f"s{s}: {rec['per_seed'][s]['acc'][0]:.2f} vs {rec['per_seed'][s]['teacher']:.2f}" for s in sorted(diffs)
        )
        t.append(
            dict(
                target="the full model within 1 point of its teacher (every seed; not more than 1 below it)",
                value=value,
                met=worst <= 1.0,
            )
        )
    else:
        t.append(dict(target="the full model within 1 point of its teacher", value="no teacher scored", met=None))
    floor = out["majority"] + 8
    low = min(float(ps["acc"].min()) for ps in rec["per_seed"].values())
    t.append(
        dict(
            target=f"no grid point below the majority class + 8 (= {floor:.2f}; every seed)",
            value=f"lowest {low:.2f}",
            met=low >= floor,
        )
    )
    if "hv_ratio" in rec and name != TODAY:
        lo_r, hi_r = rec["hv_ratio_ci"]
        today = out["recipes"][TODAY]
        outside = rec["hv_ci"][0] > today["hv_ci"][1]
        t.append(
            dict(
                target="the grid front's hypervolume >= 10% above today's recipe (outside both intervals: its 95% lower "
                "end above today's upper end)",
                value=f"x{rec['hv_ratio']:.3f} [x{lo_r:.3f}, x{hi_r:.3f}]; intervals "
                f"{'apart' if outside else 'overlap'}",
                met=rec["hv_ratio"] >= 1.10 and outside,
            )
        )
    else:
        t.append(
            dict(
                target="grid-front hypervolume >= 10% above today's",
                value="(is today's)" if name == TODAY else "no latency or no today run",
                met=None,
            )
        )
    return t


def winner(recipes: dict) -> dict | None:
    """The recipe that best meets the targets; where hypervolume and depth rows disagree, the depth rows
    decide (so they are compared first), then the other targets, then the number of seeds (a target met on
    two seeds is stronger evidence than one met on one), then the hypervolume ratio."""
    if not recipes:
        return None

    def rank(item: tuple[str, dict]) -> tuple[int, int, int, float]:
        name, rec = item
        depth_met = sum(bool(x["met"]) for x in rec["targets"] if x.get("depth_row"))
        other_met = sum(bool(x["met"]) for x in rec["targets"] if not x.get("depth_row"))
        return (depth_met, other_met, len(rec["seeds"]), rec.get("hv_ratio", 0.0))

    name, rec = max(recipes.items(), key=rank)
    misses = [x["target"] for x in rec["targets"] if x["met"] is False]
    unjudged = [x["target"] for x in rec["targets"] if x["met"] is None]
    return {
        "recipe": name,
        "met": sum(bool(x["met"]) for x in rec["targets"]),
        "of": len(rec["targets"]),
        "misses": misses,
        "unjudged": unjudged,
    }
