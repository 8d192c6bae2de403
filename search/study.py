"""The search: an Optuna 5 multi-objective study (maximise the task metric, minimise predicted
latency) over the per-layer space, the paper's 12 grid points enqueued first, a target latency as
the constraint `latency = predicted - target` set on EVERY trial (a trial without constraints
counts as feasible in Optuna 5), resumable and shareable through its storage.

`run_search(SearchConfig)` does everything `dynasearch search` does: cheap checks first (options,
predictor, space, target, storage), then the model is loaded once, the study created or resumed
(its identity checked against ours), trials run until the study holds `trials` finished ones,
the front re-scored on the whole dev split, results written, and the answer verified by
measurement on this machine.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from dynabert.checks import differences
from dynabert.errors import DynasearchError
from dynabert.io import check_writable, process_dead, process_tag, remove_stale_temporaries
from dynabert.killpoints import kill_point
from dynabert.runs import is_dynabert_trained, model_digest, read_run_record, resolve_run, trained_space
from dynabert.subnet import SubnetConfig
from dynabert.tasks import get_task
from predictors import load_shape, predictor_settings

from .config import (
    DEFAULT_SAMPLER,
    OPTUNA_SAMPLERS,
    RESCORE_SEED,
    SearchConfig,
    check_positions,
    check_uniform_backbone,
    digest_file,
    find_search_predictor,
    make_sampler,
)
from .errors import SearchError
from .objectives import AccuracyEvaluator, Counters, LatencyEstimator, check_widths, cpu_clock_note
from .outcome import SearchOutcome, SearchState, finish, trials_table
from .racing import CHUNK_FRACTIONS, RACEABLE_METRICS, best_at_latency
from .space import encode, grid_points, suggest
from .storage import AccuracyCache, claim_study, default_storage_url, engine_kwargs, is_claimed, open_storage, redact
from .verify import check_machine

STUDY_FORMAT = "dynasearch-study"
STUDY_ATTR = "dynasearch"
GRID_ATTR = "dynasearch_grid_queued"  # set once all 12 grid trials are enqueued
IDENTITY_WAIT_S = (
    5.0  # a live creator writes its identity (and queues the grid) within milliseconds of creating the study
)
log = logging.getLogger("search.study")


class Search:
    """One search, step by step (run_search calls these in order; notebooks may too)."""

    def __init__(self, cfg: SearchConfig):
        cfg.check()
        self.cfg = cfg
        self.warnings: list[str] = []
        self.out = Path(cfg.out)
        self.counters = Counters()
        self.started = time.perf_counter()  # search.json's timing.wall_s: this invocation, checks to results

    # ---- cheap checks, no model weights read
    def prepare(self) -> None:
        cfg = self.cfg
        self.info = resolve_run(cfg.run, cfg.stage)
        check_uniform_backbone(self.info.model_dir)
        reason = is_dynabert_trained(self.info, need_depth=self.cfg.space.allow_drop)
        if reason:
            if not cfg.allow_untrained:
                raise SearchError(reason + "; train it (dynasearch train) or pass --allow-untrained")
            self._warn(reason + " (searching anyway: --allow-untrained)")
        task = self.info.task
        if cfg.task is not None:
            asked = get_task(cfg.task)
            if task is not None and task.name != asked.name:
                raise SearchError(f"run {cfg.run} was trained on task {task.name!r}, not {asked.name!r}")
            task = task or asked
        if task is None:
            raise SearchError(f"{cfg.run} is a model directory: name its task with --task")
        self.task = task
        rec = read_run_record(self.info.run_dir) if self.info.run_dir else None
        data = (rec or {}).get("data", {})
        self.data_dir = cfg.data_dir if cfg.data_dir is not None else data.get("data_dir")
        self.dev_file = cfg.dev_file if cfg.dev_file is not None else data.get("dev_file")
        self.max_len = cfg.max_seq_length or self.info.max_seq_length or 128
        check_positions(self.max_len, self.info.model_dir)
        self.shape = load_shape(self.info.model_dir)
        self.space = cfg.space.build(self.shape)
        try:
            self.trained_space = trained_space((rec or {}).get("config"), self.shape)
        except DynasearchError as e:  # a run.json config this version cannot read: say so, search anyway
            self.trained_space = None
            self._warn(f"the space run {cfg.run} was trained for cannot be read ({e})")
        if self.trained_space is not None and not self.trained_space.covers(self.space):
            self._warn(
                f"searching a space the model was not trained for: searched {self.space.describe()}; trained for "
                f"{self.trained_space.describe()} (configs outside it were never trained; search that space, or "
                "train with these options)"
            )
        pred, self.predictor_dir = find_search_predictor(cfg.predictor)
        self.estimator = LatencyEstimator(pred, self.shape, cfg.batch, cfg.seq_len, self.counters, self.predictor_dir)
        if pred.fitted_on.clock == "cpu":
            self._warn(cpu_clock_note(self.predictor_dir))
        note = check_widths(self.estimator, self.space, cfg.allow_unmeasured_widths)
        if note:
            self._warn(note)
        fast, fast_ms = self.estimator.fastest(self.space)
        self.fastest = (fast, fast_ms)
        if cfg.target_ms is not None and cfg.target_ms < fast_ms:
            raise SearchError(
                f"target {cfg.target_ms:g} ms is below the fastest sub-network of the space ({fast.describe()}: "
                f"predicted {fast_ms:.3f} ms)"
            )
        self.settings = None
        if cfg.verify and cfg.target_ms is not None:
            self.settings = predictor_settings(pred, batch=self.estimator.batch, seq_len=self.estimator.seq_len)
            check_machine(pred, self.settings)
        self._open_storage()

    def _warn(self, msg: str) -> None:
        self.warnings.append(msg)
        warnings.warn(msg, stacklevel=3)

    def _open_storage(self) -> None:
        if self.cfg.storage not in (None, ":memory:"):
            engine_kwargs(self.cfg.storage)  # a URL that cannot work: refuse before creating anything
        created = not self.out.exists()
        try:
            self._open_storage_in(default_storage_url, open_storage, AccuracyCache)
        except BaseException:
            if created:  # nothing half-written: a results directory this run made goes with it
                shutil.rmtree(self.out, ignore_errors=True)
            raise

    def _open_storage_in(self, default_storage_url, open_storage, AccuracyCache) -> None:  # noqa: N803
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            check_writable(self.out)
            remove_stale_temporaries(self.out)  # killed runs' leftovers beside it (any command's)
        except OSError as e:
            raise SearchError(f"results directory {self.out} cannot be written: {e.strerror or e}") from None
        self.url = self.cfg.storage or default_storage_url(self.out)
        if self.url == ":memory:":  # benchmarks and notebooks: no storage round trips, nothing to resume
            import optuna  # optuna: not on the --help path

            self.storage = optuna.storages.InMemoryStorage()
            cache_url = self.cfg.cache or default_storage_url(self.out)
        else:
            self.storage = open_storage(self.url, self.cfg.heartbeat_interval, self.cfg.grace_period)
            cache_url = self.cfg.cache or self.url
        self.cache = AccuracyCache(cache_url)

    # ---- the model and dev sets (slow)
    def load(self) -> None:
        from dynabert.backbone import load_model  # torch: not on the --help path
        from dynabert.evaluate import load_dev_parts  # torch: not on the --help path

        cfg = self.cfg
        self.digest = model_digest(self.info.model_dir)
        self.model = load_model(self.info.model_dir).eval()
        if self.model.config.num_labels != self.task.num_labels:
            raise SearchError(
                f"model {self.info.model_dir} has {self.model.config.num_labels} output(s) but task {self.task.name} "
                f"needs {self.task.num_labels}"
            )
        parts = load_dev_parts(
            self.task,
            self.info.model_dir,
            rank=cfg.search_dev,
            rank_seed=cfg.search_dev_seed or 0,
            report_subset=cfg.rescore_dev,
            report_seed=RESCORE_SEED,
            chunk_fractions=CHUNK_FRACTIONS if cfg.racing else None,
            data_dir=self.data_dir,
            dev_file=self.dev_file,
            max_seq_length=self.max_len,
        )
        self.dev_parts = parts
        self.report_dev = report_dev(self.task.name, self.data_dir, self.dev_file, cfg, parts)
        if cfg.search_dev is not None and not parts.held_out:
            self._warn(
                f"--search-dev {cfg.search_dev} is not below the dev split's {parts.rank.n} examples: the configs are "
                "ranked and reported on all of them (nothing held out); pass a smaller N to hold some out"
            )
        elif cfg.rescore_dev is not None and cfg.rescore_dev > parts.dev_examples - parts.rank.n:
            # more than are held out (the report part is then all of them, fewer than asked); exactly as
            # many is what was asked (the demo reports on all 1,000 it holds out)
            self._warn(
                f"--rescore-dev {cfg.rescore_dev} is more than the {parts.report.n} dev examples --search-dev "
                f"{cfg.search_dev} holds out: the front is reported on all of them (no subset); pass a smaller N "
                "to report on a subset"
            )
        if cfg.racing and self.task.metrics[0] not in RACEABLE_METRICS:
            self._warn(
                f"--racing scores a mean over examples; {self.task.metrics[0]} is not one: every config is scored "
                "on all the ranking examples"
            )
        self.evaluator = AccuracyEvaluator(
            self.model,
            self.task.metrics,
            parts.rank,
            parts.report,
            self.digest,
            self.cache,
            cfg.bf16,
            self.counters,
            chunks=parts.chunks,
            precision=cfg.precision,
        )

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same study: a resumed study must match all of it."""
        cfg = self.cfg
        return (
            {
                "format": STUDY_FORMAT,
                "version": 1,
                "space": self.space.to_dict(),
                "task": self.task.name,
                "metric": self.task.metrics[0],
                "checkpoint": self.digest,
                "model_dir": str(Path(self.info.model_dir).resolve()),
                "predictor": digest_file(Path(self.predictor_dir) / "predictor.json"),
                "predictor_dir": str(Path(self.predictor_dir).resolve()),
                "latency": {"batch": self.estimator.batch, "seq_len": self.estimator.seq_len},
                "target_ms": cfg.target_ms,
                "percentile": cfg.percentile,
                "search_dev": self.evaluator.selection(False),
                "max_seq_length": self.max_len,
                "dev": self.evaluator.cache_selection(False),
                "sampler": cfg.sampler,
                "seed": cfg.seed,
            }
            | ({"racing": True} if self.evaluator.racing else {})
            | (  # absent when off: older studies resume
                {"precision": self.cfg.precision} if self.cfg.precision != "fp32" else {}
            )
        )

    # ---- the study
    def open_study(self):
        import optuna  # optuna: not on the --help path

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        ident = self.identity()
        ident_cmp = {k: v for k, v in ident.items() if k not in ("model_dir", "predictor_dir")}
        directions = ["maximize", "minimize"]
        if not self._study_exists():
            claim_study(self.storage, self.cfg.study)  # before the study exists: see _wait_for_identity
        try:
            study = optuna.create_study(
                study_name=self.cfg.study,
                storage=self.storage,
                directions=directions,
                sampler=make_sampler(self.cfg.sampler, self.cfg.seed, self.cfg.trials),
            )
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            created = False
            study = None
        if created:
            # Identity FIRST, grid second, "grid complete" last: a run killed at any point leaves a
            # study its own re-run recognises (the identity) and completes (the grid, idempotent).
            # Killed between create_study and the identity (one statement apart) it leaves an empty
            # study without attributes: the re-run adopts exactly that (see _wait_for_identity).
            kill_point("study-created")
            self._write_identity(study, ident)
            self._enqueue_grid(study)
            self._enqueue_warm(study)
            self.resumed = False
        else:
            saved = self._wait_for_identity(ident)
            # "dev" (the digest of the tokenised dev selection) joined the identity later: a study made
            # before it is resumed on its other keys (its scores were cached under the old keys, never reused).
            keys = [k for k in ident_cmp if not (k == "dev" and k not in saved)]
            diffs = differences({k: saved.get(k) for k in keys}, {k: ident_cmp[k] for k in keys})
            if diffs:
                raise SearchError(
                    f"study {self.cfg.study!r} in {_redacted(self.url)} was created with other settings than asked "
                    f"({'; '.join(diffs)}); use another --study name (the accuracy cache is shared) or the same options"
                )
            self._complete_grid(ident)
            if self.cfg.warm_start:
                self._enqueue_warm(optuna.load_study(study_name=self.cfg.study, storage=self.storage))
            trials = optuna.load_study(study_name=self.cfg.study, storage=self.storage).get_trials(deepcopy=False)
            seed = self.cfg.seed + len(trials)  # a resumed run must not replay the first one's random stream
            if any(t.state == optuna.trial.TrialState.RUNNING for t in trials):
                # Other workers are live (or a dead one's trial awaits its retry): workers joining at
                # the same moment see the same count, so mix in who we are, or they propose alike.
                seed = int(
                    np.random.SeedSequence(
                        [self.cfg.seed, len(trials), os.getpid(), zlib.crc32(socket.gethostname().encode())]
                    ).generate_state(1)[0]
                )
            study = optuna.load_study(
                study_name=self.cfg.study,
                storage=self.storage,
                sampler=make_sampler(self.cfg.sampler, seed, self.cfg.trials),
            )
            self.resumed = True
        self.study = study
        return study

    def _study_exists(self) -> bool:
        try:
            self.storage.get_study_id_from_name(self.cfg.study)
            return True
        except KeyError:
            return False

    def _write_identity(self, study, ident: dict[str, Any]) -> None:
        study.set_user_attr(STUDY_ATTR, {**ident, "creator": process_tag()})
        kill_point("study-identity")

    def _enqueue_grid(self, study) -> None:
        """The paper's 12 grid points, queued once (skip_if_exists: a re-run completing a grid that
        a killed run half-queued adds only the missing ones), then the mark that the grid is whole."""
        for w, d, s in grid_points(self.space):
            study.enqueue_trial(encode(s, self.space), user_attrs={"grid": f"{w:g}x{d:g}"}, skip_if_exists=True)
            kill_point("grid-enqueued")
        study.set_user_attr(GRID_ATTR, True)

    def _enqueue_warm(self, study) -> None:
        """The warm-start configs (SearchConfig.warm_start), queued once each (skip_if_exists)."""
        for j in self.cfg.warm_start:
            s = SubnetConfig.from_json(j)
            if self.space.contains(s):
                study.enqueue_trial(encode(s, self.space), user_attrs={"warm": True}, skip_if_exists=True)

    def _complete_grid(self, ident: dict[str, Any], timeout_s: float = IDENTITY_WAIT_S) -> None:
        """A study whose grid is not marked whole: its creator is still queueing it (wait), or was
        killed doing so (its process is gone, or the wait ran out): queue what is missing."""
        import optuna  # optuna: not on the --help path

        t0 = time.monotonic()
        while True:
            study = optuna.load_study(study_name=self.cfg.study, storage=self.storage)
            attrs = study.user_attrs
            if attrs.get(GRID_ATTR):
                return
            creator = (attrs.get(STUDY_ATTR) or {}).get("creator")
            if process_dead(creator) or time.monotonic() - t0 > timeout_s:
                log.warning(
                    "study %r: its grid was not wholly queued (the creating run %s stopped); queueing the rest",
                    self.cfg.study,
                    creator or "?",
                )
                self._enqueue_grid(study)
                return
            time.sleep(0.25)

    def _wait_for_identity(self, ident: dict[str, Any], timeout_s: float = IDENTITY_WAIT_S) -> dict[str, Any]:
        """The identity of an existing study. Its creator writes it one statement after creating the
        study, so a study without one is either being created (wait) or was created by a run killed
        in between. An empty study without attributes that dynasearch claimed before creating it
        (storage.claim_study) is adopted as ours; anything else is another tool's study: refused."""
        import optuna  # optuna: not on the --help path

        t0 = time.monotonic()
        while True:
            study = optuna.load_study(study_name=self.cfg.study, storage=self.storage)
            saved = study.user_attrs.get(STUDY_ATTR)
            if isinstance(saved, dict) and saved.get("format") == STUDY_FORMAT:
                return saved
            if time.monotonic() - t0 > timeout_s:
                if (
                    not study.user_attrs
                    and not study.get_trials(deepcopy=False)
                    and is_claimed(self.storage, self.cfg.study)
                ):
                    log.warning(
                        "study %r has no dynasearch metadata and no trials (a run was killed while creating it): "
                        "adopting it",
                        self.cfg.study,
                    )
                    self._write_identity(study, ident)
                    return {**ident, "creator": process_tag()}
                raise SearchError(
                    f"study {self.cfg.study!r} in {_redacted(self.url)} was not created by dynasearch search "
                    "(no dynasearch metadata); use another --study name"
                )
            time.sleep(0.25)

    def objective(self, trial) -> tuple[float, float]:
        subnet = suggest(trial, self.space)
        self._check_evaluation_budget(trial, subnet.key)
        trial.set_user_attr("key", subnet.key)  # first: other workers count it against --evaluations
        pred = float(self.estimator.predict([subnet])[0])
        target = self.cfg.target_ms
        feasible = target is None or pred <= target
        if target is not None:
            with (
                warnings.catch_warnings()
            ):  # a retried trial carries its first try's constraint (same params, same value)
                warnings.filterwarnings("ignore", message="The constraint value is ignored")
                trial.set_constraint("latency", pred - target)  # every trial, cache hits included
        best = best_at_latency(self._ranked_points(), pred) if self.evaluator.racing else None
        r = self.evaluator.rank(subnet, best)
        for k, v in (
            ("subnet", subnet.to_json()),
            ("predicted_ms", pred),
            ("feasible", feasible),
            ("cache_hit", r.cached),
            ("examples", r.examples),
            ("stopped", r.stopped),
        ):
            trial.set_user_attr(k, v)
        return r.metric, pred

    def _ranked_points(self) -> list[tuple[float, float]]:
        """(ranking metric, predicted ms) of the finished trials scored on every ranking example."""
        from optuna.trial import TrialState  # optuna: not on the --help path

        return [
            (t.values[0], t.values[1])
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if not t.user_attrs.get("stopped")
        ]

    def _check_evaluation_budget(self, trial, key: str) -> None:
        """--evaluations N: a proposal of a config the study has not met yet, once N distinct configs'
        evaluations have started (by any worker), is skipped and the study stops."""
        if self.cfg.evaluations is None:
            return
        import optuna  # optuna: not on the --help path
        from optuna.trial import TrialState  # optuna: not on the --help path

        from .workers import SKIPPED_ATTR  # imports optuna: not on the --help path

        started = {
            t.user_attrs["key"]
            for t in self.study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL)
            )
            if "key" in t.user_attrs and t.number != trial.number  # FAIL: a killed worker's evaluation started too
        }
        if key not in started and len(started) >= self.cfg.evaluations:
            self.study.stop()
            why = f"the study has evaluated its {self.cfg.evaluations} distinct configs (--evaluations)"
            trial.set_user_attr(SKIPPED_ATTR, why)
            self.counters.extra["budget_stopped"] = True
            raise optuna.TrialPruned(why)

    def optimize(self) -> None:
        from optuna.study import MaxTrialsCallback  # optuna: not on the --help path
        from optuna.trial import TrialState  # optuna: not on the --help path

        from .workers import TrialBudget, claim_trial  # imports optuna: not on the --help path

        done = len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        total = self.cfg.trials
        if self.cfg.queued_only:  # exactly the queued configs (grid + warm start), no proposal of the sampler
            live = (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)
            total = len(self.study.get_trials(deepcopy=False, states=live))
        remaining = max(0, total - done)
        if remaining == 0:
            return
        bar = tqdm(total=total, initial=done, desc="search", unit="trial", disable=not self.cfg.progress)

        budget = TrialBudget(total)  # exactly `trials` COMPLETE trials, however many workers (search/workers.py)

        def objective(trial):
            claim_trial(trial)
            kill_point("trial-running")  # test-only: the K-th trial of this process is RUNNING
            budget.admit(self.study, trial)
            return self.objective(trial)

        def progress(study, trial) -> None:
            if trial.state != TrialState.COMPLETE:
                return
            bar.update(1)
            bar.set_postfix(evals=self.counters.evaluations, hits=self.counters.cache_hits, refresh=False)

        t0, e0, p0 = time.perf_counter(), self.counters.evaluation_s, self.counters.prediction_s
        try:
            self.study.optimize(
                objective,
                n_trials=None,
                gc_after_trial=False,
                callbacks=[MaxTrialsCallback(total, states=(TrialState.COMPLETE,)), progress],
                catch=(),
            )
        finally:
            bar.close()
            self.counters.extra["optimize_s"] = self.counters.extra.get("optimize_s", 0.0) + time.perf_counter() - t0
            # what the sampler and the storage cost: the optimize loop less its evaluations and predictions
            self.counters.extra["sampler_and_storage_s"] = self.counters.extra.get("sampler_and_storage_s", 0.0) + max(
                0.0, time.perf_counter() - t0 - (self.counters.evaluation_s - e0) - (self.counters.prediction_s - p0)
            )

    # ---- results
    def state(self) -> SearchState:
        """What the outcome is built from (search/outcome.py), handed over explicitly."""
        return SearchState(
            cfg=self.cfg,
            out=self.out,
            study=self.study,
            url=self.url,
            task=self.task,
            shape=self.shape,
            space=self.space,
            model=self.model,
            digest=self.digest,
            evaluator=self.evaluator,
            estimator=self.estimator,
            cache=self.cache,
            settings=self.settings,
            counters=self.counters,
            identity=self.identity(),
            warnings=self.warnings,
            warn=self._warn,
            started=self.started,
            dev_parts=getattr(self, "dev_parts", None),
            report_dev=getattr(self, "report_dev", None),
        )

    def trials_table(self) -> pd.DataFrame:
        return trials_table(self.state())

    def finish(self) -> SearchOutcome:
        return finish(self.state())

    def close(self) -> None:
        for obj in (getattr(self, "cache", None), getattr(self, "evaluator", None)):
            if obj is not None:
                obj.close()
        st = getattr(self, "storage", None)
        if st is not None and hasattr(st, "engine"):
            st.remove_session()
            st.engine.dispose()


def _redacted(url: str) -> str:
    return redact(url)


def report_dev(task: str, data_dir: Any, dev_file: Any, cfg: SearchConfig, parts: Any) -> dict[str, Any]:
    """search.json's `report_dev`: the task, its data source and exactly which dev examples the front's
    metric_full was scored on (the report examples), so they can be replayed: `dynabert.evaluate.report_indices(
    dev_examples, search_dev, search_dev_seed, rescore_dev, rescore_seed)` gives their indices and
    `index_sha256` of those is `sha256`. held_out false: nothing was held out (no --search-dev, or one not below
    the split), the report examples are the whole dev split the configs were ranked on."""
    from dynabert.evaluate import index_sha256  # torch: not on the --help path

    return {
        "task": task,
        "data_dir": str(data_dir) if data_dir is not None else None,
        "dev_file": str(dev_file) if dev_file is not None else None,
        "source": parts.source,
        "dev_examples": int(parts.dev_examples),
        "held_out": bool(parts.held_out),
        "search_dev": cfg.search_dev,
        "search_dev_seed": int(cfg.search_dev_seed or 0),
        "rescore_dev": cfg.rescore_dev,
        "rescore_seed": RESCORE_SEED,
        "selection": parts.report.selection,
        "examples": len(parts.report_index),
        "sha256": index_sha256(parts.report_index),
    }


def run_search(cfg: SearchConfig) -> SearchOutcome:
    """The whole `dynasearch search`: checks, study (created or resumed), results, verified answer."""
    s = Search(cfg)
    fresh = not Path(cfg.out).exists()
    try:
        s.prepare()
        s.load()
        s.open_study()
    except BaseException:
        s.close()
        if fresh:  # failed on its inputs (a dev set, weights, a study of other settings): no results directory left
            shutil.rmtree(cfg.out, ignore_errors=True)
        raise
    try:
        s.optimize()
        return s.finish()
    finally:
        s.close()


__all__ = ["DEFAULT_SAMPLER", "OPTUNA_SAMPLERS", "Search", "SearchConfig", "SearchOutcome", "run_search"]
