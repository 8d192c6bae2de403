"""TEST-ONLY: SIGKILL this process at a named point, so kill drills kill at a moment they control.

Set `DYNASEARCH_TEST_KILL_AT=NAME[@N][,NAME2[@N2]...]` in the environment of a child process: the
N-th time (default: the first) that process reaches `kill_point(NAME)` it sends itself SIGKILL (no
clean-up, no `finally`, exactly as `kill -9` or the OOM killer would). Unset (every real run), a
point costs one dictionary lookup. Never set it outside tests.

Named points (grep `kill_point(` for the full list):
- `study-created`: the Optuna study row exists, dynasearch's identity not yet written;
- `study-identity`: identity written, the 12 grid trials not yet (or partly) enqueued;
- `grid-enqueued@K`: after the K-th grid trial was enqueued;
- `trial-running@K`: the K-th trial of this process is RUNNING (a cache hit or an evaluation);
- `trial-evaluating@K`: inside the K-th real accuracy evaluation of this process (trial RUNNING);
- `cache-put`: an evaluation finished, its cache row not yet written;
- `results-written`: the results files are written, the search has not returned yet;
- `demo-step-done@K`: the K-th demo step's work is done, steps.json does not say so yet;
- `train-checkpoint@K`: the K-th training checkpoint is complete;
- `train-stage-done@K`: the K-th stage's model is saved, state.json does not record it yet;
- `measure-chunk-written@K`: the K-th chunk of latency records is on disk.
"""

from __future__ import annotations

import os
import signal

ENV = "DYNASEARCH_TEST_KILL_AT"
_counts: dict[str, int] = {}


def _parse(spec: str) -> dict[str, int]:
    points: dict[str, int] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, n = part.partition("@")
        points[name] = int(n) if n.isdigit() and int(n) > 0 else 1
    return points


def kill_point(name: str) -> None:
    """SIGKILL this process here when the test asked for it (see the module doc); else nothing."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    want = _parse(spec).get(name)
    if want is None:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == want:
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["ENV", "kill_point"]
