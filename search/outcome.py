"""What a search leaves behind: the trials table (one row per finished trial), then `finish`:
the front re-scored on the whole dev split, the answer verified by measurement, search.json,
trials.csv, front.csv and the plots. Functions of a prepared `study.Search` (the study's seam
between running trials and reporting on them)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dynabert.killpoints import kill_point
from dynabert.subnet import SubnetConfig

from .errors import SearchError
from .pareto import hypervolume_history, pareto_mask
from .plots import plot_hypervolume, plot_search_front, plot_shapes
from .results import TRIAL_COLUMNS, answer_row, write_results
from .space import decode
from .storage import redact
from .verify import (
    anchor_reference,
    bias_warning,
    busy_note,
    drift_warning,
    measure_configs,
    read_measured,
    verify_candidates,
)


@dataclass
class SearchState:
    """What reporting on a search needs, handed over explicitly by `study.Search` (the seam between running
    trials and reporting on them): the settings, the study and its storage, the model and what scores and
    prices its sub-networks, the results folder, the counters and the warnings so far."""

    cfg: Any  # the SearchConfig
    out: Path
    study: Any
    url: str
    task: Any
    shape: Any
    space: Any
    model: Any
    digest: str
    evaluator: Any
    estimator: Any
    cache: Any
    settings: Any
    counters: Any
    identity: dict[str, Any]
    warnings: list[str]
    warn: Callable[[str], None]
    started: float
    dev_parts: Any = None  # dynabert.evaluate.DevParts: ranked and reported examples (None: built elsewhere)
    report_dev: dict[str, Any] | None = None  # search.json's report_dev (study.report_dev); None: not recorded


@dataclass
class SearchOutcome:
    results_dir: Path
    meta: dict[str, Any]
    trials: pd.DataFrame
    front: pd.DataFrame
    answer: dict[str, Any] | None  # None: no target, --no-verify without a feasible config, or nothing met it
    message: str  # what to tell the user about the answer
    met: bool  # False: a target was given and no verified (or, with --no-verify, predicted) config meets it
    warnings: list[str]


def trials_table(st: SearchState) -> pd.DataFrame:
    from optuna.trial import TrialState  # optuna: not on the --help path

    rows = []
    first: dict[str, int] = {}
    H, F = st.shape.num_heads, st.shape.intermediate_size
    for t in sorted(st.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
        ua = t.user_attrs
        if "key" not in ua:  # a trial completed by another tool: decode it ourselves
            s = decode(t.params, st.space)
            ua = dict(
                ua,
                key=s.key,
                subnet=s.to_json(),
                predicted_ms=t.values[1],
                metric_search=t.values[0],
                cache_hit=False,
                feasible=st.cfg.target_ms is None or t.values[1] <= st.cfg.target_ms,
            )
        sub = json.loads(ua["subnet"])
        key = ua["key"]
        depth = len(sub["layers"])
        rows.append(
            {
                "trial": t.number,
                "key": key,
                "subnet": ua["subnet"],
                "depth": depth,
                "width": round(float(np.mean(sub["heads"])) / H, 4) if depth else 0.0,
                "ffn_width": round(float(np.mean(sub["ffn"])) / F, 4) if depth else 0.0,
                "grid": ua.get("grid", ""),
                "metric_search": float(t.values[0]),
                "metric_full": math.nan,
                "predicted_ms": float(t.values[1]),
                "measured_ms": math.nan,
                "measured_raw_ms": math.nan,
                "feasible": bool(ua.get("feasible", True)),
                "on_front": False,
                "duplicate_of": first.get(key, ""),
                "cache_hit": bool(ua.get("cache_hit", False)),
                "examples": ua.get("examples", math.nan),
                "stopped": bool(ua.get("stopped", False)),
            }
        )
        first.setdefault(key, t.number)
    # examples and stopped (racing) stay in memory: search.json's summary counts them, trials.csv keeps its columns
    df = pd.DataFrame(rows, columns=[*_trial_columns(), "examples", "stopped"])
    # The grid label belongs to the config, whichever trial met it first.
    grid_of = df[df["grid"].astype(str) != ""].drop_duplicates("key").set_index("key")["grid"]
    df["grid"] = df["key"].map(grid_of).fillna("")
    return df


def finish(st: SearchState) -> SearchOutcome:
    cfg = st.cfg
    trials = trials_table(st)
    if trials.empty:
        raise SearchError(f"study {cfg.study!r} has no finished trials")
    uniq = trials.drop_duplicates("key").reset_index(drop=True)
    on_search_front = pareto_mask(uniq["metric_search"].to_numpy(), uniq["predicted_ms"].to_numpy())
    search_front_keys = set(uniq.loc[on_search_front, "key"])
    rescore = uniq[uniq["key"].isin(search_front_keys) | (uniq["grid"] != "")].reset_index(drop=True)
    full = {}
    for _, r in rescore.iterrows():
        full[r["key"]], _ = st.evaluator.score(SubnetConfig.from_json(r["subnet"]), full=True)
    trials["metric_full"] = trials["key"].map(full)
    # The front the user sees is the front of the REPORTED metric: a config the ranking put on its
    # front but that the report examples score below a faster one (the grid points included) is
    # dominated there and leaves the front (front.csv, front.png and the answer alike).
    reported = pareto_mask(rescore["key"].map(full).to_numpy(dtype=float), rescore["predicted_ms"].to_numpy())
    front_keys = set(rescore.loc[reported, "key"])
    trials["on_front"] = trials["key"].isin(front_keys)
    percentile = cfg.percentile
    measured = read_measured(st.out, percentile) if (st.out / "measured.csv").is_file() else {}
    answer, met, message = None, True, ""
    judged: list[str] = []  # the keys verification judged this run
    target = cfg.target_ms
    front = trials[trials["on_front"]].drop_duplicates("key").sort_values("predicted_ms").reset_index(drop=True)
    if target is not None:
        cands = front[front["predicted_ms"] <= target].sort_values(
            ["metric_full", "predicted_ms"], ascending=[False, True]
        )
        if cfg.verify:

            def measure_fn(subnets):
                t0 = time.perf_counter()
                got = measure_configs(
                    st.model,
                    st.shape,
                    subnets,
                    st.settings,
                    st.out,
                    percentile,
                    cfg.progress,
                    reference_ms=anchor_reference(st.estimator.predictor, st.settings),
                )
                st.counters.measurement_s += time.perf_counter() - t0
                return got

            verdict = verify_candidates(cands, target, measure_fn, measured, cfg.raw, max_candidates=cfg.max_candidates)
            measured = verdict.measured
            judged = list(verdict.tried)
            if verdict.answer is None:
                fastest = front.iloc[0]
                if fastest["key"] not in measured or measured[fastest["key"]].busy_throughout:
                    measured.update(measure_fn([SubnetConfig.from_json(fastest["subnet"])]))
                judged.append(fastest["key"])
                m = measured[fastest["key"]]
                met = False
                message = (
                    f"no config met {target:g} ms when measured ({len(verdict.tried)} candidate(s) tried); the fastest config "
                    f"found, {fastest['key']} ({SubnetConfig.from_json(fastest['subnet']).describe()}), has {st.task.metrics[0]} "
                    f"{fastest['metric_full']:.2f}, predicted {fastest['predicted_ms']:.3f} ms, measured "
                    f"{m.judged(cfg.raw):.3f} ms"
                )
            else:
                answer = verdict.answer
        else:
            if cands.empty:
                met = False
                message = f"no config of the front is predicted to meet {target:g} ms"
            else:
                answer = cands.iloc[0].to_dict()
                message = "not verified (--no-verify): the latency is a prediction"
    for name, col in (("measured_ms", lambda m: m.judged(cfg.raw)), ("measured_raw_ms", lambda m: m.raw_ms)):
        vals = {k: col(m) for k, m in measured.items()}
        trials[name] = trials["key"].map(vals)
    front = trials[trials["on_front"]].drop_duplicates("key").sort_values("predicted_ms").reset_index(drop=True)
    both = trials.drop_duplicates("key").dropna(subset=["measured_ms"])
    busy = busy_note(measured, judged) if target is not None and cfg.verify else None
    for warn in (drift_warning(measured), bias_warning(both["predicted_ms"], both["measured_ms"]), busy):
        if warn:
            st.warn(warn)
    # Hypervolume against distinct configs evaluated, reference point stated in search.json.
    ref = (float(uniq["metric_search"].min()) - 1.0, float(uniq["predicted_ms"].max()) * 1.05)
    hv = hypervolume_history(uniq["metric_search"].to_numpy(), uniq["predicted_ms"].to_numpy(), *ref)
    evals, distinct = st.cache.evaluation_counts(st.digest, st.evaluator.cache_selection(False))
    ans = None
    if answer is not None:
        row = front[front["key"] == answer["key"]].iloc[0].to_dict()
        ans = answer_row(
            row, target, {"study": {"metric": st.task.metrics[0]}, "rescore_dev": st.evaluator.selection(True)}
        )
        if cfg.verify:
            ans.update(measured[answer["key"]].answer_fields())
    meta = {
        "format": "dynasearch-search",
        "version": 1,
        "study": st.identity,
        "study_name": cfg.study,
        "storage": _redacted(st.url),
        "results_dir": str(st.out.resolve()),
        "summary": {
            "trials": int(len(trials)),
            "distinct_configs": int(len(uniq)),
            "front_size": int(len(front)),
            "search_front_size": int(len(search_front_keys)),
            **_ranking_counts(st, trials),
            "grid_points": int((uniq["grid"] != "").sum()),
            "cache_hits": int(trials["cache_hit"].sum()),
            **_state_counts(st),
            "evaluations_logged": evals,
            "distinct_evaluated": distinct,
            "repeat_evaluations": evals - distinct,
            "hypervolume": float(hv[-1]) if len(hv) else 0.0,
            "hypervolume_reference": {"metric": ref[0], "latency_ms": ref[1]},
        },
        "timing": {
            "evaluation_s": round(st.counters.evaluation_s, 3),
            "prediction_s": round(st.counters.prediction_s, 3),
            "measurement_s": round(st.counters.measurement_s, 3),
            "optimize_s": round(st.counters.extra.get("optimize_s", 0.0), 3),
            "sampler_and_storage_s": round(st.counters.extra.get("sampler_and_storage_s", 0.0), 3),
            "wall_s": round(time.perf_counter() - st.started, 3),
            "evaluations_this_run": st.counters.evaluations,
            "cache_hits_this_run": st.counters.cache_hits,
        },
        "rescore_dev": st.evaluator.selection(True),
        **({"report_dev": st.report_dev} if st.report_dev is not None else {}),
        "verified": bool(cfg.verify and target is not None),
        "raw": cfg.raw,
        "fingerprint": _fingerprint(st),
        "answer": ans,
        "met": met,
        "message": message,
        "warnings": st.warnings,
    }
    write_results(st.out, meta, trials, front)
    kill_point("results-written")  # test-only: a killed finish must be redone whole by the re-run
    title = (
        f"{st.task.name}: {st.task.metrics[0]} vs latency ({st.estimator.setting['backend']}, "
        f"{st.estimator.setting['threads']} thread(s), batch {st.estimator.batch}, seq {st.estimator.seq_len})"
    )
    plot_search_front(
        trials, front, st.out / "front.png", st.task.metrics[0], target, ans["key"] if ans else None, title
    )
    plot_hypervolume(hv, st.out / "hypervolume.png", ref)
    plot_shapes(front, st.shape.num_layers, st.shape.num_heads, st.shape.intermediate_size, st.out / "shapes.png")
    return SearchOutcome(st.out, meta, trials, front, ans, message, met, st.warnings)


def _ranking_counts(st: SearchState, trials: pd.DataFrame) -> dict[str, Any]:
    """What the ranking cost and on which examples the front is reported (search.json summary)."""
    ev = st.evaluator
    ex = pd.to_numeric(trials.get("examples", pd.Series(dtype=float)), errors="coerce")
    per_key = trials.assign(_ex=ex).groupby("key")["_ex"].max()
    stopped = trials.groupby("key")["stopped"].all() if "stopped" in trials else pd.Series(dtype=bool)
    parts = st.dev_parts
    return {
        "configs_proposed": int(len(trials)),
        "configs_evaluated": int(len(per_key)),
        "examples_scored_ranking": int(per_key.fillna(0).sum()),
        "stopped_early": int(stopped.sum()),
        "racing": bool(ev.racing),
        "rank_examples": int(ev.dev["search"].n),
        "report_examples": int(ev.dev["full"].n),
        "report_held_out": bool(parts.held_out) if parts is not None else False,
        "budget_stopped": bool(st.counters.extra.get("budget_stopped", False)),
    }


def _state_counts(st: SearchState) -> dict[str, int]:
    """Trials skipped by the budget (PRUNED: the study already had enough) and failed ones
    (a dead worker's trial, failed by the heartbeat check and retried)."""
    from optuna.trial import TrialState  # optuna: not on the --help path

    states = [t.state for t in st.study.get_trials(deepcopy=False)]
    return {
        "skipped_trials": states.count(TrialState.PRUNED),
        "failed_trials": states.count(TrialState.FAIL),
        "running_trials": states.count(TrialState.RUNNING),
    }


def _fingerprint(st: SearchState) -> dict[str, Any]:
    s = st.estimator.setting
    return {
        k: s.get(k)
        for k in (
            "cpu_model",
            "cpu_cores",
            "gpu_name",
            "backend",
            "device",
            "provider",
            "threads",
            "spinning",
            "dtype",
            "fingerprint",
            "target_id",
        )
    } | {"batch": st.estimator.batch, "seq_len": st.estimator.seq_len}


def _trial_columns():
    return TRIAL_COLUMNS


def _redacted(url: str) -> str:
    return redact(url)
