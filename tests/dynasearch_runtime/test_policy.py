"""The serving policy on synthetic queues with known answers, through the discrete-event simulator
(dynasearch_runtime/policy.py, simulator.py: standard library only, the server's own decision rule)."""

from __future__ import annotations

import pytest

from dynasearch_runtime.policy import LatencyTable, Policy, PolicyError, Request
from dynasearch_runtime.simulator import poisson, simulate

ACC = {"big": 0.90, "mid": 0.86, "small": 0.80}
# ms at batch 1 and the cost of each further text, per config (linear in the batch, as on a CPU)
COST = {"big": (10.0, 5.0), "mid": (5.0, 2.5), "small": (2.0, 1.0)}


def table(configs=("big", "mid", "small"), buckets=(32, 64)) -> LatencyTable:
    ms = {}
    for k in configs:
        first, per = COST[k]
        for b in (1, 2, 4, 8, 16):
            for bucket in buckets:
                ms[(k, b, bucket)] = (first + per * (b - 1)) * bucket / buckets[-1]
    return LatencyTable({k: ACC[k] for k in configs}, ms)


def test_table_interpolates_batches_and_pads_to_the_bucket_above():
    t = table()
    assert t.latency("big", 3, 64) == pytest.approx(20.0)  # between batch 2 (15) and 4 (25)
    assert t.bucket_for(20) == 32 and t.bucket_for(33) == 64 and t.bucket_for(500) == 64
    assert t.by_accuracy == ("big", "mid", "small") and t.fastest == "small"
    with pytest.raises(PolicyError, match=r"batch of 17 texts is above the table's largest, 16"):
        t.latency("big", 17, 64)


@pytest.mark.parametrize(
    "accuracy, ms, match",
    [
        ({}, {}, r"needs at least one config"),
        ({"a": 0.9}, {("b", 1, 64): 1.0}, r"names config 'b', which has no accuracy"),
        ({"a": 0.9}, {("a", 1, 64): -1.0}, r"latency of config a at batch 1, bucket 64 must be a number in \(0, "),
        ({"a": 0.9}, {("a", 0, 64): 1.0}, r"batch of config a must be an integer in 1\.\.4096; got 0"),
        ({"a": 0.9, "b": 0.8}, {("a", 1, 64): 1.0, ("b", 2, 64): 1.0}, r"config b was measured at other batches"),
        ({"a": float("nan")}, {("a", 1, 64): 1.0}, r"accuracy of config a must be a number in"),
    ],
)
def test_bad_tables_are_refused(accuracy, ms, match):
    with pytest.raises(PolicyError, match=match):
        LatencyTable(accuracy, ms)


def test_bad_policy_settings_are_refused():
    with pytest.raises(
        PolicyError,
        match=r"SLO 0\.5 ms is below the fastest config's batch-1 latency here \(1 ms\); the smallest SLO that can be held is 1 ms",
    ):
        Policy(table(), 0.5)
    with pytest.raises(PolicyError, match=r"unknown overload mode 'drop'; allowed: late, shed"):
        Policy(table(), 40.0, overload="drop")
    with pytest.raises(PolicyError, match=r"SLO must be a number in \(0, 3\.6e\+06\] ms; got 0"):
        Policy(table(), 0)
    with pytest.raises(PolicyError, match=r"max batch must be an integer in 1\.\.16; got 32"):
        Policy(table(), 40.0, max_batch=32)


def test_an_empty_queue_has_no_decision_and_a_lone_request_gets_the_most_accurate_config():
    p = Policy(table(), 40.0)
    assert p.decide(0.0, []) is None
    d = p.decide(0.0, [Request(0, 0.0, 1, 20)])
    assert (d.config, d.bucket, d.expected_ms, d.slack_ms) == ("big", 32, 5.0, 40.0)


def test_the_look_ahead_leaves_the_next_request_a_way_to_its_deadline():
    """Batches of one: at t=0 'big' (19.5 ms) fits r0's 20 ms slack, but r1 (deadline 21 ms) would then
    need 2 ms from 19.5 ms: 21.5 > 21. The policy takes 'mid' for r0 (greedy accuracy would take 'big')."""
    ms = {("big", 1, 64): 19.5, ("mid", 1, 64): 5.0, ("small", 1, 64): 2.0}
    p = Policy(LatencyTable(ACC, ms), 20.0, max_batch=1)
    queue = [Request(0, 0.0, 1, 64), Request(1, 0.001, 1, 64)]
    assert p.decide(0.0, queue).config == "mid"
    assert p.decide(0.0, queue[:1]).config == "big"  # alone, nothing behind it: the most accurate


def test_low_load_is_served_by_the_most_accurate_config():
    arrivals = poisson([(20.0, 5.0)], seed=1)
    out = simulate(Policy(table(), 40.0), arrivals)
    assert out.attainment() == 1.0
    assert out.effective_accuracy(ACC) == pytest.approx(0.90)
    assert {d.config for d in out.decisions} == {"big"}


def test_high_load_dynamic_holds_the_slo_where_static_full_does_not():
    """200 req/s: 'big' alone has a capacity near 200/s at batch 16 only with latency far over the SLO;
    the dynamic policy mixes configs and holds >= 99% while static big falls below 90%."""
    arrivals = poisson([(10.0, 200.0)], seed=2)
    dynamic = simulate(Policy(table(), 40.0), arrivals)
    static = simulate(Policy(table(("big",)), 40.0), arrivals)
    assert dynamic.attainment() >= 0.99, dynamic.attainment()
    assert static.attainment() < 0.90, static.attainment()
    assert dynamic.effective_accuracy(ACC) > static.effective_accuracy(ACC)
    assert dynamic.switches() > 0


def test_a_step_in_load_moves_the_choice_down_and_back_up():
    arrivals = poisson([(5.0, 10.0), (5.0, 300.0), (5.0, 10.0)], seed=3)
    out = simulate(Policy(table(), 40.0), arrivals)

    def share_big(t0, t1):
        ds = [d for d in out.decisions if d.requests and t0 <= d.requests[0].arrival_s < t1]
        return sum(d.config == "big" for d in ds) / len(ds)

    assert share_big(0, 5) > 0.95 and share_big(6, 9) < 0.5 and share_big(11, 15) > 0.95
    assert out.attainment() >= 0.99


def test_a_slower_machine_moves_the_choice_to_smaller_configs_through_the_online_correction():
    """The table was measured on a machine 3x faster than this one is from t=5 s: the observed batch
    times raise the correction and the policy serves most requests with smaller configs; the SLO holds."""
    arrivals = poisson([(10.0, 60.0)], seed=4)
    p = Policy(table(), 40.0)
    out = simulate(p, arrivals, slowdown=lambda t: 1.0 if t < 5.0 else 3.0)

    def share_big(t0, t1):
        configs = [s.config for s in out.served if t0 <= s.request.arrival_s < t1]
        return configs.count("big") / len(configs)

    assert share_big(0, 5) > 0.95 and share_big(6, 10) < 0.5
    assert p.correction == pytest.approx(3.0, rel=0.05)
    assert out.attainment() >= 0.98


def test_overload_sheds_what_cannot_be_served_in_time_or_serves_it_late():
    arrivals = poisson([(3.0, 2000.0)], seed=5)  # far beyond even 'small' at batch 16 (~1000 texts/s)
    shed = simulate(Policy(table(), 40.0, overload="shed"), arrivals)
    late = simulate(Policy(table(), 40.0, overload="late"), arrivals)
    n_shed = sum(s.shed for s in shed.served)
    assert n_shed > 0 and len(shed.served) == len(arrivals) == len(late.served)
    # shed: what is served is on time; late: nothing dropped, most answers late
    assert all(s.latency_ms <= 40.0 + 1e-6 for s in shed.served if not s.shed)
    assert not any(s.shed for s in late.served) and late.attainment() < shed.attainment()
    assert any(d.late for d in late.decisions) and not any(d.late for d in shed.decisions)


def test_the_simulator_is_deterministic():
    arrivals = poisson([(2.0, 100.0), (1.0, 500.0)], seed=6, length=lambda rng: rng.randint(5, 64))
    a = simulate(Policy(table(), 30.0), arrivals)
    b = simulate(Policy(table(), 30.0), arrivals)
    assert a == b and len(a.served) == len(arrivals)
    with pytest.raises(PolicyError, match=r"schedule phase 0's rate must be a number in \(0, 1e\+06\] /s; got 0"):
        poisson([(1.0, 0.0)])
