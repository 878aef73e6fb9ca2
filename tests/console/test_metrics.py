"""/metrics: the families the platform team needs, in valid Prometheus text format."""

from __future__ import annotations

import math
import re

import httpx
import pytest

from callagent.metrics import TURN_LATENCY, Metrics
from tests.console.conftest import Seeded
from tests.e2e.conftest import LiveService

_SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?\})? (?P<value>[-+0-9.eE]+|\+Inf|NaN)$')
_META = re.compile(r"^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$")


def parse(text: str) -> dict[str, tuple[str, list[tuple[str, str, float]]]]:
    """Families by name: (type, samples (name, labels, value)); fails on any bad line."""
    assert text.endswith("\n")
    families: dict[str, tuple[str, list[tuple[str, str, float]]]] = {}
    current = ""
    for line in text.splitlines():
        meta = _META.match(line)
        if meta:
            if meta.group(1) == "TYPE":
                assert meta.group(2) not in families, f"second TYPE for {meta.group(2)}"
                assert meta.group(3) in {"counter", "gauge", "histogram"}
                families[meta.group(2)] = (meta.group(3), [])
                current = meta.group(2)
            continue
        m = _SAMPLE.match(line)
        assert m, f"bad sample line {line!r}"
        assert m.group("name").startswith(current), f"{line!r} outside its family"
        value = math.inf if m.group("value") == "+Inf" else float(m.group("value"))
        families[current][1].append((m.group("name"), m.group("labels") or "", value))
    return families


def test_declared_families_are_exposed_before_any_event() -> None:
    families = parse(Metrics().render())
    assert families["callagent_live_calls"][0] == "gauge"
    assert families["callagent_recorder_queue_depth"][0] == "gauge"
    assert families["callagent_interruptions_total"] == (
        "counter", [("callagent_interruptions_total", "", 0.0)])
    assert families["callagent_webhook_rejections_total"][0] == "counter"
    kind, samples = families[TURN_LATENCY]
    assert kind == "histogram"
    assert (f"{TURN_LATENCY}_count", "", 0.0) in samples


def test_the_latency_histogram_counts_into_cumulative_buckets() -> None:
    m = Metrics()
    for seconds in (0.05, 0.25, 0.25, 0.8, 9.0):
        m.observe(TURN_LATENCY, seconds)
    _, samples = parse(m.render())[TURN_LATENCY]
    buckets = {labels: v for name, labels, v in samples if name.endswith("_bucket")}
    assert buckets['le="0.1"'] == 1 and buckets['le="0.3"'] == 3 and buckets['le="1"'] == 4
    assert buckets['le="5"'] == 4 and buckets['le="+Inf"'] == 5
    in_order = [v for n, _, v in samples if n.endswith("_bucket")]
    assert in_order == sorted(in_order)  # cumulative, rendered by ascending bound
    sums = {n: v for n, _, v in samples if not n.endswith("_bucket")}
    assert sums[f"{TURN_LATENCY}_count"] == 5 and sums[f"{TURN_LATENCY}_sum"] == pytest.approx(10.35)


def test_observing_an_undeclared_histogram_or_nan_is_refused() -> None:
    m = Metrics()
    with pytest.raises(ValueError, match="not a declared histogram"):
        m.observe("callagent_live_calls", 1.0)
    with pytest.raises(ValueError, match="NaN"):
        m.observe(TURN_LATENCY, math.nan)


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.inc("callagent_webhook_rejections_total", path='/a"b\\c\nd')
    text = m.render()
    parse(text)
    assert r'path="/a\"b\\c\nd"' in text


async def test_the_live_endpoint_is_valid_and_complete(
    console: tuple[LiveService, Seeded],
) -> None:
    live, _ = console
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{live.base_url}/metrics")
    families = parse(response.text)
    for name in ("callagent_live_calls", "callagent_recorder_queue_depth", TURN_LATENCY,
                 "callagent_interruptions_total", "callagent_webhook_rejections_total"):
        assert name in families, name
