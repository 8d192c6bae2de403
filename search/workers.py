"""Many workers on one study: the study's total of trials, shared so that N workers stop together
with exactly `total` COMPLETE trials.

Optuna's MaxTrialsCallback stops a worker after its own trial once the study holds `total`
finished trials; the other workers' trials that are running at that moment still finish, so a
study of W workers ends with up to total + W - 1 trials. `TrialBudget.admit(study, trial)`, called
first in the objective (the trial is already RUNNING, so every worker sees it), closes that gap:

- rank(t): the trial's number, or for a retry of a killed worker's trial (Optuna's
  RetryHeartbeatStaleTrialCallback puts a WAITING copy in the queue) the number of the trial it
  retries, so a retry keeps its original place;
- `ahead`: the other RUNNING or WAITING trials of lower rank;
- COMPLETE >= total: this trial is skipped (PRUNED, user attribute `skipped`) and the study stops;
- COMPLETE + len(ahead) < total: this trial runs;
- otherwise, when a WAITING trial is ahead (a retry or an enqueued grid point), this trial gives
  way: it is skipped and the worker's next trial takes the queued one; when only RUNNING trials
  are ahead, it waits (polling, and failing stale trials as Optuna's loop would, so a dead
  worker's trial is retried) until they finish or fail.

So the trials that run are admitted in rank order up to the total; a skipped trial holds no
evaluation. Gaps left, each at most one trial over: a stale trial is set FAIL a moment before its
retry is queued, and a trial admitted in that moment (milliseconds) may overshoot; a worker killed
between creating a trial and its first heartbeat (milliseconds) leaves a RUNNING trial that
Optuna never fails, so the wait is capped (`max_wait_s`, by default 20 heartbeats, at least 60 s)
and the trial then runs anyway rather than hang the study.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from dynabert.checks import positive_int
from dynabert.io import process_dead, process_tag

SKIPPED_ATTR = "skipped"
WORKER_ATTR = (
    "worker"  # "<host>-<pid>#<trial number>": who runs the trial (a retry copy keeps its number, so never matches)
)
log = logging.getLogger("search.workers")


def rank(t: Any) -> int:
    """A trial's place in the budget: its number, or the number of the trial it retries."""
    first = t.system_attrs.get("failed_trial")
    return int(first) if isinstance(first, int) else int(t.number)


def claim_trial(trial: Any) -> None:
    """Record this process as the trial's worker: the first thing every trial does."""
    trial.set_user_attr(WORKER_ATTR, f"{process_tag()}#{trial.number}")


def fail_dead_workers(study: Any) -> list[int]:
    """Fail the RUNNING trials whose worker is a process of THIS host that no longer runs (killed),
    and hand each to the storage's retry callback as Optuna does for a stale heartbeat, without
    waiting out the grace period (30 s heartbeats: 90 s). Returns the numbers of the trials failed.
    A trial killed before it recorded its worker (milliseconds) is still failed by its heartbeat."""
    storage = study._storage
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tag, _, number = str(t.user_attrs.get(WORKER_ATTR, "")).partition("#")
        if number == str(t.number) and process_dead(tag):
            try:
                if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                    failed.append(t)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker failed it first
    callback = (
        storage.get_heartbeat_stale_trial_callback() if hasattr(storage, "get_heartbeat_stale_trial_callback") else None
    )
    for t in failed:
        log.warning(
            "trial %d: its worker %s is gone (killed); failed and queued for a retry",
            t.number,
            t.user_attrs[WORKER_ATTR],
        )
        if callback is not None:
            callback(study, copy.deepcopy(storage.get_trial(t._trial_id)))
    return [t.number for t in failed]


class TrialBudget:
    """The study's total of COMPLETE trials, shared by every worker (see the module doc)."""

    def __init__(self, total: int, poll_s: float = 0.5, max_wait_s: float | None = None):
        positive_int("total", total, ValueError)
        self.total, self.poll_s, self.max_wait_s = total, poll_s, max_wait_s
        self.skipped = 0
        self.waited_s = 0.0

    def admit(self, study: Any, trial: Any) -> None:
        """Return when `trial` may run; raise optuna.TrialPruned when it must not."""
        me = study._storage.get_trial(trial._trial_id)
        my_rank = rank(me)
        max_wait = self.max_wait_s
        if max_wait is None:
            hb = study._storage.get_heartbeat_interval() if hasattr(study._storage, "get_heartbeat_interval") else None
            max_wait = max(60.0, 20.0 * hb) if hb else 300.0
        t0 = time.monotonic()
        try:
            while True:
                fail_dead_workers(
                    study
                )  # a killed worker's trial ahead of us is retried now, not after the grace period
                trials = study.get_trials(
                    deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
                )
                complete = sum(t.state == TrialState.COMPLETE for t in trials)
                if complete >= self.total:
                    study.stop()
                    self._skip(trial, f"the study holds its {self.total} trials")
                ahead = [
                    t for t in trials if t.state != TrialState.COMPLETE and t.number != me.number and rank(t) < my_rank
                ]
                if complete + len(ahead) < self.total:
                    return
                if any(t.state == TrialState.WAITING for t in ahead):
                    self._skip(trial, "a queued trial takes the last place")
                if time.monotonic() - t0 > max_wait:
                    log.warning(
                        "trial %d: trials %s still RUNNING after %.0f s without finishing or going stale; running anyway",
                        trial.number,
                        [t.number for t in ahead],
                        max_wait,
                    )
                    return
                time.sleep(self.poll_s)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)  # a dead worker's trial ahead of us: fail and retry it
        finally:
            self.waited_s += time.monotonic() - t0

    def _skip(self, trial: Any, why: str) -> None:
        self.skipped += 1
        trial.set_user_attr(SKIPPED_ATTR, why)
        raise optuna.TrialPruned(why)


__all__ = ["SKIPPED_ATTR", "WORKER_ATTR", "TrialBudget", "claim_trial", "fail_dead_workers", "rank"]
