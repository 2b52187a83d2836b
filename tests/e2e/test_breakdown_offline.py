"""The helpers of the per-swap breakdown (breakdown.py), without a cluster: reading a
/metrics exposition, the difference of two scrapes, the operator's stages of a swap, the
plain watch's arrivals, and the table's p50 and max. scripts/test.sh runs this file with
`--noconftest` (conftest.py needs the cluster packages); tests/operator_run.rs checks the
parser against the operator's real /metrics output."""

from __future__ import annotations

import random
import statistics

import pytest

from breakdown import (ENGINE_RPC, PASS_STEP, QUEUE_WAIT, Totals, WatchEvent, first_arrival, format_table,
                       histogram_delta, label_values, operator_stages, parse_histograms, select, summarize)


def exposition(series: dict[tuple[str, tuple], tuple[float, int]], label_order=None) -> str:
    """An OpenMetrics text as prometheus-client writes it: TYPE and HELP lines, buckets,
    `_sum` and `_count`, `# EOF`; labels in `label_order` (default: as given)."""
    lines = []
    families: dict[str, list] = {}
    for (family, labels), totals in series.items():
        families.setdefault(family, []).append((labels, totals))
    for family, members in families.items():
        lines += [f"# HELP {family} what it measures.", f"# TYPE {family} histogram"]
        for labels, (total, count) in members:
            pairs = sorted(labels, key=label_order) if label_order else labels
            text = ",".join(f'{k}="{v}"' for k, v in pairs)
            lines.append(f'{family}_bucket{{{text},le="0.001"}} {count}')
            lines.append(f'{family}_bucket{{{text},le="+Inf"}} {count}')
            lines.append(f"{family}_sum{{{text}}} {total!r}")
            lines.append(f"{family}_count{{{text}}} {count}")
    lines.append("# HELP collection_operator_reconciles Reconcile passes started.")
    lines.append("# TYPE collection_operator_reconciles counter")
    lines.append('collection_operator_reconciles_total{controller="collectionalias"} 7')
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def step(controller: str, name: str) -> tuple[str, tuple]:
    return (PASS_STEP, (("controller", controller), ("step", name)))


def random_series(rng: random.Random) -> dict:
    series = {}
    for controller in ("collection", "collectionalias"):
        series[(QUEUE_WAIT, (("controller", controller),))] = (rng.uniform(0, 5), rng.randint(1, 500))
        for name in ("engine observed", "AlterAlias acknowledged", "status written"):
            series[step(controller, name)] = (rng.uniform(0, 5), rng.randint(1, 500))
    for method in ("AlterAlias", "Observe"):
        for outcome in ("ok", "error"):
            series[(ENGINE_RPC, (("method", method), ("outcome", outcome)))] = (rng.uniform(0, 5), rng.randint(1, 50))
    return series


def test_reads_every_histogram_series_whatever_the_label_order():
    rng = random.Random(7)
    series = random_series(rng)
    for order in (None, lambda pair: pair[0], lambda pair: -ord(pair[0][0])):
        parsed = parse_histograms(exposition(series, order))
        assert set(parsed) == {(f, tuple(sorted(labels))) for f, labels in series}
        for (family, labels), (total, count) in series.items():
            assert parsed[(family, tuple(sorted(labels)))] == Totals(total, count)


def test_counters_buckets_and_undeclared_families_are_not_histograms():
    text = exposition({step("collectionalias", "status written"): (0.5, 2)})
    # A counter whose samples end in _count/_sum must not be read as a histogram.
    text += "# TYPE things_count counter\nthings_count_total 3\nundeclared_sum 4\nundeclared_count 1\n"
    parsed = parse_histograms(text)
    assert list(parsed) == [step("collectionalias", "status written")]


def test_label_values_with_escapes_and_commas():
    text = ('# TYPE f histogram\nf_sum{step="a \\"quoted\\", b\\\\c",controller="x"} 1.5\n'
            'f_count{controller="x",step="a \\"quoted\\", b\\\\c"} 3\n')
    assert parse_histograms(text) == {("f", (("controller", "x"), ("step", 'a "quoted", b\\c'))): Totals(1.5, 3)}


def test_unparsable_labels_are_an_error_not_a_silent_skip():
    with pytest.raises(ValueError):
        parse_histograms('# TYPE f histogram\nf_sum{step=unquoted} 1\n')


def test_delta_is_what_was_observed_between_two_scrapes():
    rng = random.Random(11)
    before = parse_histograms(exposition(random_series(rng)))
    grown = {}
    for key, totals in before.items():
        more = rng.choice([0, 0, 1, 3])
        grown[key] = Totals(totals.sum + more * 0.002, totals.count + more)
    new_key = step("collectionalias", "engine work done")
    grown[new_key] = Totals(0.004, 1)
    delta = histogram_delta(before, grown)
    expected = {key: Totals(grown[key].sum - before[key].sum, grown[key].count - before[key].count)
                for key in before if grown[key].count > before[key].count}
    expected[new_key] = Totals(0.004, 1)
    assert delta.keys() == expected.keys()
    for key, totals in expected.items():
        assert delta[key].count == totals.count
        assert delta[key].sum == pytest.approx(totals.sum)
    assert histogram_delta(before, before) == {}


def test_select_sums_the_matching_series_only():
    series = parse_histograms(exposition(random_series(random.Random(3))))
    ok = series[(ENGINE_RPC, (("method", "AlterAlias"), ("outcome", "ok")))]
    error = series[(ENGINE_RPC, (("method", "AlterAlias"), ("outcome", "error")))]
    both = select(series, ENGINE_RPC, method="AlterAlias")
    assert both.count == ok.count + error.count
    assert both.sum == pytest.approx(ok.sum + error.sum)
    assert select(series, ENGINE_RPC, method="AlterAlias", outcome="ok") == ok
    assert select(series, ENGINE_RPC, method="DropAlias") == Totals(0.0, 0.0)
    assert select(series, "no_such_family") == Totals(0.0, 0.0)
    assert label_values(series, PASS_STEP, "step", controller="collectionalias") == [
        "AlterAlias acknowledged", "engine observed", "status written"]


def test_operator_stages_of_one_swap():
    before = parse_histograms(exposition(random_series(random.Random(5))))
    after = dict(before)

    def observe(key, *seconds):
        earlier = after[key]
        after[key] = Totals(earlier.sum + sum(seconds), earlier.count + len(seconds))

    # One alias pass: queued 0.4 ms, AlterAlias acknowledged 3 ms after its start; a
    # second pass (its status write) reached "status written" too.
    observe((QUEUE_WAIT, (("controller", "collectionalias"),)), 0.0004, 0.0002)
    observe(step("collectionalias", "engine observed"), 0.001, 0.0008)
    observe(step("collectionalias", "AlterAlias acknowledged"), 0.003)
    observe(step("collectionalias", "status written"), 0.005, 0.002)
    observe(step("collection", "status written"), 0.9)  # another controller: not ours
    observe((ENGINE_RPC, (("method", "AlterAlias"), ("outcome", "ok"))), 0.0015)
    stages = operator_stages(histogram_delta(before, after), "collectionalias")
    assert stages == pytest.approx({
        "queue wait": 0.3,
        "passes (count)": 2,
        "step: engine observed": 0.9,
        "step: AlterAlias acknowledged": 3.0,
        "step: status written": 3.5,
        "rpc: AlterAlias": 1.5,
    })


def test_missing_families_leave_their_stages_out():
    """An operator without the pass-step family (an older build), or a window without
    alias passes: the stages are absent, never reported as 0 ms."""
    only_rpc = {(ENGINE_RPC, (("method", "Observe"), ("outcome", "ok"))): (0.01, 4)}
    before = parse_histograms(exposition(only_rpc))
    after = parse_histograms(exposition({(ENGINE_RPC, (("method", "Observe"), ("outcome", "ok"))): (0.02, 6)}))
    assert operator_stages(histogram_delta(before, after), "collectionalias") == pytest.approx({"rpc: Observe": 5.0})
    assert operator_stages({}, "collectionalias") == {}


def test_first_arrival_of_a_generation_after_the_patch():
    events = [WatchEvent(1.0, 4, True), WatchEvent(2.0, 5, False), WatchEvent(2.5, 5, True),
              WatchEvent(3.0, 6, False), WatchEvent(3.2, 6, True)]
    assert first_arrival(events, 1.9, lambda e: e.generation >= 5) == 2.0
    assert first_arrival(events, 1.9, lambda e: e.generation >= 5 and e.ready) == 2.5
    assert first_arrival(events, 2.9, lambda e: e.generation >= 6 and e.ready) == 3.2
    # Events before the patch do not count, even when they match.
    assert first_arrival(events, 0.5, lambda e: e.generation >= 4 and e.ready) == 1.0
    assert first_arrival(events, 1.5, lambda e: e.generation >= 4 and e.ready) == 2.5
    assert first_arrival(events, 3.5, lambda e: e.generation >= 7) is None
    assert first_arrival([], 0.0, lambda e: True) is None


def test_summary_p50_max_and_how_many_swaps_had_the_stage():
    rng = random.Random(13)
    swaps = []
    for index in range(9):
        swap = {"Ready (polled)": rng.uniform(5, 120), "patch returned": rng.uniform(1, 10),
                "step: status written": rng.uniform(2, 9), "step: engine observed": rng.uniform(0, 1),
                "rpc: AlterAlias": rng.uniform(0, 3), "queue wait": rng.uniform(0, 1)}
        if index % 3:
            swap["watch: new generation"] = rng.uniform(1, 10)
        swaps.append(swap)
    rows = summarize(swaps)
    by_stage = {stage: (p50, largest, count) for stage, p50, largest, count in rows}
    for stage in swaps[0]:
        values = [swap[stage] for swap in swaps]
        assert by_stage[stage] == (statistics.median(values), max(values), 9)
    watched = [swap["watch: new generation"] for swap in swaps if "watch: new generation" in swap]
    assert by_stage["watch: new generation"] == (statistics.median(watched), max(watched), 6)
    # Client stages in the order they happen, then the queue, the steps in the order of a
    # pass, the RPCs.
    assert [row[0] for row in rows] == ["patch returned", "watch: new generation", "Ready (polled)", "queue wait",
                                        "step: engine observed", "step: status written", "rpc: AlterAlias"]
    assert summarize([]) == []


def test_steps_in_the_order_of_a_pass_whatever_their_means():
    """Step means mix the passes of a window (a swap's pass and, say, a later pass that
    only writes a status), so they need not grow along the pass; the table keeps the
    pass's order, and steps it does not know go last, by median."""
    swap = {"step: status written": 2.0, "step: AlterAlias acknowledged": 9.0, "step: engine work done": 1.5,
            "step: something new": 0.5, "step: engine observed": 1.0, "step: CreateAlias acknowledged": 3.0,
            "step: engine connection ready": 0.1, "step: later still": 0.7}
    assert [row[0] for row in summarize([swap])] == [
        "step: engine connection ready", "step: engine observed", "step: CreateAlias acknowledged",
        "step: AlterAlias acknowledged", "step: engine work done", "step: status written",
        "step: something new", "step: later still"]


def test_even_number_of_swaps_takes_the_middle_pair():
    rows = summarize([{"queue wait": 1.0}, {"queue wait": 4.0}, {"queue wait": 2.0}, {"queue wait": 10.0}])
    assert rows == [("queue wait", 3.0, 10.0, 4)]


def test_table_has_a_line_per_stage():
    rows = summarize([{"patch returned": 3.25, "step: AlterAlias acknowledged": 1.5},
                      {"patch returned": 4.75, "step: AlterAlias acknowledged": 2.5}])
    table = format_table(rows, 2).splitlines()
    assert table[0].startswith("swap breakdown over 2 swaps")
    assert table[2].split() == ["patch", "returned", "4.00", "4.75", "2"]
    assert table[3].split() == ["step:", "AlterAlias", "acknowledged", "2.00", "2.50", "2"]
    assert len(table) == 4
