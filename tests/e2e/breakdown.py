"""Where a swap's time goes: the pure helpers behind the per-swap breakdown that
test_lifecycle.py prints. Standard library only, so that they run without a cluster:
test_breakdown_offline.py tests them, and tests/operator_run.rs feeds the operator's real
/metrics output through `python3 tests/e2e/breakdown.py` (which prints what
`parse_histograms` read, as JSON) and compares it with its own reading.

Two clocks meet in the table. The client stages (patch returned, the plain watch's events,
DescribeAlias, Ready) are milliseconds after the patch was sent, on this machine's clock.
The operator stages come from its /metrics histograms, per swap the difference of two
scrapes: its queue wait, the time from a pass's start to each of its steps, and the engine
RPC durations; they are durations on the operator's clock, not points on the first one.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from typing import Callable, Iterable, NamedTuple, Optional

QUEUE_WAIT = "collection_operator_queue_wait_seconds"
PASS_STEP = "collection_operator_pass_step_seconds"
ENGINE_RPC = "collection_operator_engine_rpc_duration_seconds"

# The client stages in the order they happen; the table lists them first, in this order.
CLIENT_STAGES = (
    "patch returned",
    "watch: new generation",
    "DescribeAlias flipped",
    "Ready (polled)",
    "watch: Ready",
)

# The steps of a pass in the order they happen (the operator's `PassClock::step` calls);
# `<RPC> acknowledged` steps come between the observation and the end of the engine work.
PASS_STEPS = ("engine connection ready", "engine observed", "acknowledged", "engine work done", "status written")

Labels = tuple  # ((name, value), ...) sorted by name
Key = tuple  # (family, Labels)

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


class Totals(NamedTuple):
    """A histogram series' `_sum` (seconds) and `_count`."""

    sum: float
    count: float


def _labels(text: str) -> Labels:
    labels = []
    position = 0
    while position < len(text):
        match = _LABEL.match(text, position)
        if not match:
            raise ValueError(f"unparsable labels {text!r}")
        value = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], match[2])
        labels.append((match[1], value))
        position = match.end()
    return tuple(sorted(labels))


def parse_histograms(text: str) -> dict[Key, Totals]:
    """The `_sum` and `_count` of every series of every family declared `histogram` in a
    Prometheus or OpenMetrics text exposition, keyed by family and sorted labels (label
    order in the text does not matter). Buckets and other types are ignored."""
    histograms = set()
    sums: dict[Key, float] = {}
    counts: dict[Key, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "TYPE" and parts[3] == "histogram":
                histograms.add(parts[2])
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, labels, value = match[1], match[2] or "", match[3]
        for suffix, into in (("_sum", sums), ("_count", counts)):
            family = name[: -len(suffix)]
            if name.endswith(suffix) and family in histograms:
                into[(family, _labels(labels))] = float(value)
    return {key: Totals(sums.get(key, 0.0), counts.get(key, 0.0)) for key in sums.keys() | counts.keys()}


def histogram_delta(before: dict[Key, Totals], after: dict[Key, Totals]) -> dict[Key, Totals]:
    """What was observed between two scrapes: per series, `after - before` (a series that
    first appears in `after` counts from zero); series without new observations are left
    out."""
    delta = {}
    for key, totals in after.items():
        earlier = before.get(key, Totals(0.0, 0.0))
        count = totals.count - earlier.count
        if count > 0:
            delta[key] = Totals(totals.sum - earlier.sum, count)
    return delta


def select(histograms: dict[Key, Totals], family: str, **labels: str) -> Totals:
    """The sum over the series of `family` whose labels include `labels` ((0, 0) if none)."""
    total, count = 0.0, 0.0
    for (name, series_labels), totals in histograms.items():
        if name == family and all(dict(series_labels).get(k) == v for k, v in labels.items()):
            total += totals.sum
            count += totals.count
    return Totals(total, count)


def label_values(histograms: dict[Key, Totals], family: str, label: str, **labels: str) -> list[str]:
    """The values `label` takes in the series of `family` that include `labels`, sorted."""
    values = set()
    for (name, series_labels), _ in histograms.items():
        as_dict = dict(series_labels)
        if name == family and label in as_dict and all(as_dict.get(k) == v for k, v in labels.items()):
            values.add(as_dict[label])
    return sorted(values)


def mean_ms(totals: Totals) -> Optional[float]:
    """The mean observation in milliseconds, None without observations."""
    return totals.sum / totals.count * 1000.0 if totals.count else None


def operator_stages(delta: dict[Key, Totals], controller: str) -> dict[str, float]:
    """The operator's stages of one swap from the difference of two scrapes, in ms (means
    over the window's observations): `queue wait`, `passes (count)` (how many passes of
    `controller` reached `status written`; a count, not ms), `step: <step>` (pass start to
    that step), `rpc: <method>` (engine RPC duration, both outcomes). A stage whose
    family or series has no new observation is absent, never zero."""
    stages: dict[str, float] = {}
    wait = mean_ms(select(delta, QUEUE_WAIT, controller=controller))
    if wait is not None:
        stages["queue wait"] = wait
    passes = select(delta, PASS_STEP, controller=controller, step="status written").count
    if passes:
        stages["passes (count)"] = passes
    for step in label_values(delta, PASS_STEP, "step", controller=controller):
        value = mean_ms(select(delta, PASS_STEP, controller=controller, step=step))
        if value is not None:
            stages[f"step: {step}"] = value
    for method in label_values(delta, ENGINE_RPC, "method"):
        value = mean_ms(select(delta, ENGINE_RPC, method=method))
        if value is not None:
            stages[f"rpc: {method}"] = value
    return stages


class WatchEvent(NamedTuple):
    """One event of the plain watch: when it arrived (monotonic seconds), the object's
    `metadata.generation`, and whether its status reports Ready for that generation."""

    arrived: float
    generation: int
    ready: bool


def first_arrival(events: Iterable[WatchEvent], since: float,
                  accept: Callable[[WatchEvent], bool]) -> Optional[float]:
    """The arrival time of the first event at or after `since` that `accept` takes."""
    times = [e.arrived for e in events if e.arrived >= since and accept(e)]
    return min(times) if times else None


def summarize(swaps: list[dict[str, float]]) -> list[tuple[str, float, float, int]]:
    """(stage, p50, max, swaps with a value) per stage over the swaps: the client stages in
    the order they happen, then the queue wait and pass count, then the steps in the order
    of a pass (steps it does not know by their median), then the RPCs by name."""
    stages: dict[str, list[float]] = {}
    for swap in swaps:
        for stage, value in swap.items():
            stages.setdefault(stage, []).append(value)
    rows = [(stage, statistics.median(values), max(values), len(values)) for stage, values in stages.items()]

    def order(row):
        stage, p50 = row[0], row[1]
        if stage in CLIENT_STAGES:
            return (0, CLIENT_STAGES.index(stage), 0.0, stage)
        if stage in ("queue wait", "passes (count)"):
            return (1, ("queue wait", "passes (count)").index(stage), 0.0, stage)
        if stage.startswith("step: "):
            step = stage[len("step: "):]
            known = "acknowledged" if step.endswith(" acknowledged") else step
            slot = PASS_STEPS.index(known) if known in PASS_STEPS else len(PASS_STEPS)
            return (2, slot, p50, stage)
        return (3, 0, 0.0, stage)

    return sorted(rows, key=order)


def format_table(rows: list[tuple[str, float, float, int]], swaps: int) -> str:
    """The breakdown table, one stage a line."""
    width = max([len(r[0]) for r in rows] + [len("stage")])
    lines = [f"swap breakdown over {swaps} swaps (ms; client stages: after the patch was sent; "
             f"operator stages: durations from its /metrics, per swap)",
             f"  {'stage':<{width}}  {'p50':>9}  {'max':>9}  {'swaps':>5}"]
    for stage, p50, largest, count in rows:
        lines.append(f"  {stage:<{width}}  {p50:>9.2f}  {largest:>9.2f}  {count:>5}")
    return "\n".join(lines)


def main() -> None:
    """Reads a /metrics text on stdin and prints what `parse_histograms` read, as JSON."""
    parsed = parse_histograms(sys.stdin.read())
    json.dump([{"family": family, "labels": dict(labels), "sum": totals.sum, "count": totals.count}
               for (family, labels), totals in sorted(parsed.items())], sys.stdout)


if __name__ == "__main__":
    main()
