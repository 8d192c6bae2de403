"""The serving policy on synthetic queues with known answers, through the discrete-event simulator
(dynasearch_runtime/policy.py, simulator.py: standard library only, the server's own decision rule)."""

from __future__ import annotations

import pytest

from dynasearch_runtime.policy import RULES, LatencyTable, Policy, PolicyError, Request
from dynasearch_runtime.simulator import capacity, poisson, simulate

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
    for bad in (-1.0, 40.0, float("nan"), "2"):
        with pytest.raises(PolicyError, match=r"SLO margin must be a number in \[0, the SLO 40\) ms; got "):
            Policy(table(), 40.0, margin_ms=bad)
    with pytest.raises(PolicyError, match=r"SLO 2 ms less its margin \(1\.5 ms\) is below .*can be held is 2\.5 ms"):
        Policy(table(), 2.0, margin_ms=1.5)


def test_the_margin_moves_every_deadline_earlier():
    """'big' takes 5 ms at batch 1 (bucket 32): alone with 6 ms of SLO it fits; with a 2 ms margin it does
    not (6 - 2 < 5), and the next most accurate config that ends by the planned deadline serves it."""
    d = Policy(table(), 6.0).decide(0.0, [Request(0, 0.0, 1, 20)])
    assert d.config == "big"
    d = Policy(table(), 6.0, margin_ms=2.0).decide(0.0, [Request(0, 0.0, 1, 20)])
    assert d.config != "big" and d.expected_ms <= 4.0 and d.slack_ms == pytest.approx(4.0)


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


# ------------------------------------------------------------------ the rules (bench/policy_compare.py)
def test_an_unknown_rule_is_refused_naming_the_allowed_ones():
    assert RULES == ("fastest", "greedy", "lookahead", "slackfit") and Policy(table(), 40.0).rule == "lookahead"
    with pytest.raises(PolicyError, match=r"unknown policy rule 'edf'; allowed: fastest, greedy, lookahead, slackfit"):
        Policy(table(), 40.0, rule="edf")


def test_greedy_misses_the_deadline_the_look_ahead_meets():
    """Two requests at t=0, batches of one, SLO 20 ms: greedy serves r0 with 'big' (19.5 ms) and r1 can then
    not end by 20 ms even with 'small' (2 ms): shed. The look-ahead serves r0 with 'mid' (5 ms) and both meet it."""
    ms = {("big", 1, 64): 19.5, ("mid", 1, 64): 5.0, ("small", 1, 64): 2.0}
    arrivals = [Request(0, 0.0, 1, 64), Request(1, 0.0, 1, 64)]
    greedy = simulate(Policy(LatencyTable(ACC, ms), 20.0, max_batch=1, rule="greedy"), arrivals)
    look = simulate(Policy(LatencyTable(ACC, ms), 20.0, max_batch=1, rule="lookahead"), arrivals)
    assert [s.config for s in greedy.served] == ["big", ""] and greedy.attainment() == 0.5
    assert [s.config for s in look.served] == ["mid", "mid"] and look.attainment() == 1.0
    assert look.effective_accuracy(ACC) == pytest.approx(0.86) and greedy.effective_accuracy(ACC) == pytest.approx(0.45)


def test_fastest_always_runs_the_fastest_config():
    out = simulate(Policy(table(), 40.0, rule="fastest"), poisson([(5.0, 50.0)], seed=7))
    assert {d.config for d in out.decisions} == {"small"} and out.attainment() == 1.0 and out.switches() == 0


def test_slackfit_takes_the_pair_in_the_highest_latency_bucket_below_the_slack():
    """Four requests at t=0, decided at t=20 ms (slack 20 ms; buckets of 40/10 = 4 ms). The look-ahead takes all
    four, and only 'mid' (12.5 ms) fits them. SlackFit's pairs within 20 ms: the highest bucket, [20, 24) ms,
    holds ('big', 3 requests) alone (20 ms): the three oldest with 'big', the fourth left for the next batch."""
    queue = [Request(i, 0.0, 1, 64) for i in range(4)]
    look = Policy(table(), 40.0).decide(0.020, queue)
    fit = Policy(table(), 40.0, rule="slackfit").decide(0.020, queue)
    assert (look.config, len(look.requests), look.expected_ms) == ("mid", 4, 12.5)
    assert (fit.config, [r.id for r in fit.requests], fit.expected_ms, fit.slack_ms) == ("big", [0, 1, 2], 20.0, 20.0)
    # within one bucket the larger batch wins over the more accurate config: slack 13 ms, bucket [12, 16) ms
    # holds ('mid', 4) only; ('big', 1) at 10 ms is in a lower bucket
    fit = Policy(table(), 40.0, rule="slackfit").decide(0.027, queue)
    assert (fit.config, len(fit.requests)) == ("mid", 4)


def test_every_rule_holds_the_slo_at_low_load_and_the_accurate_ones_serve_the_most_accurate_config():
    arrivals = poisson([(10.0, 5.0)], seed=8)
    for rule in RULES:
        out = simulate(Policy(table(), 40.0, rule=rule), arrivals)
        assert out.attainment() == 1.0, rule
        assert {d.config for d in out.decisions} == ({"small"} if rule == "fastest" else {"big"}), rule


def test_a_batch_the_fastest_config_cannot_end_in_time_is_trimmed_not_its_oldest_shed():
    """16 requests at t=0, decided at t=30 ms (slack 10 ms): 'small' needs 17 ms for all 16, 10 ms for 9. With
    trim (the default) the nine oldest are served in time and nothing is shed; without, the seven oldest are shed
    one by one until the nine left fit. When not even the oldest alone fits, overload='late' serves the
    whole batch late (throughput), overload='shed' sheds."""
    queue = [Request(i, 0.0, 1, 64) for i in range(16)]
    d = Policy(table(), 40.0).decide(0.030, queue)
    assert (d.config, len(d.requests), d.shed, d.expected_ms) == ("small", 9, (), 10.0)
    d = Policy(table(), 40.0, trim=False).decide(0.030, queue)
    assert ([r.id for r in d.shed], [r.id for r in d.requests]) == (list(range(7)), list(range(7, 16)))
    d = Policy(table(), 40.0, overload="late").decide(0.0395, queue)
    assert (d.late, len(d.requests), d.config) == (True, 16, "small")
    d = Policy(table(), 40.0).decide(0.0395, queue)
    assert (len(d.shed), d.requests) == (16, ())


def test_capacity_is_the_highest_rate_a_config_holds_at_99_percent():
    """'big' alone (10 ms at batch 1, +5 ms a text), SLO 40 ms: below its back-to-back rate of full batches
    (16 / 85 ms = 188/s); the rate found holds >= 99% on every seed, half again as much does not."""

    def make():
        return Policy(table(("big",)), 40.0)

    cap = capacity(make, seconds=5.0, seeds=(0, 1), min_requests=500)
    assert 20.0 < cap < 188.3
    for seed in (0, 1):
        assert simulate(make(), poisson([(max(5.0, 500 / cap), cap)], seed=seed)).attainment() >= 0.99
    assert simulate(make(), poisson([(5.0, 1.5 * cap)], seed=0)).attainment() < 0.99
    with pytest.raises(PolicyError, match=r"capacity needs at least one seed"):
        capacity(make, seeds=())
    with pytest.raises(PolicyError, match=r"capacity's target attainment must be a number in \(0, 1\]"):
        capacity(make, target=1.5)


def test_slo_margin_zero_in_any_spelling_is_no_margin():
    """--slo-margin's help says '0 for none': every zero a user writes reads as 0 (found refused: 0.0ms, 00);
    a negative or unit-less non-zero is still refused naming it."""
    from dynasearch_runtime.units import parse_margin

    for zero in ("0", "0ms", "0.0ms", "0 s", "00", "0.000us"):
        assert parse_margin(zero) == 0.0
    assert parse_margin("4ms") == 4.0 and parse_margin(None) is None
    with pytest.raises(ValueError, match=r"latency '3' has no unit"):
        parse_margin("3")
    with pytest.raises(ValueError, match=r"latency '0xs' has an unknown unit 'xs'"):
        parse_margin("0xs")
    with pytest.raises(ValueError, match=r"latency '-1ms' is negative"):
        parse_margin("-1ms")
