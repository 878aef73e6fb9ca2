"""Process-wide counters, gauges and histograms, held by the app (no module-level state).

Kept deliberately small: a name plus sorted label pairs maps to a number (or, for a
histogram, to bucket counts, a sum and a count). ``/metrics`` renders them in the
Prometheus text format (version 0.0.4). The families the platform team relies on are
declared up front (``FAMILIES``), so they are exposed with their help text and a zero
before the first event:

- ``callagent_live_calls`` (gauge), ``callagent_recorder_queue_depth`` (gauge), set at
  every scrape by the app;
- ``callagent_turn_latency_seconds`` (histogram): caller's end of turn to the agent's
  first audio, per reply (``observe``);
- ``callagent_interruptions_total``, ``callagent_webhook_rejections_total`` (counters).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FAMILIES", "TURN_LATENCY", "TURN_LATENCY_BUCKETS", "Family", "Metrics"]

LabelKey = tuple[str, tuple[tuple[str, str], ...]]

TURN_LATENCY = "callagent_turn_latency_seconds"
TURN_LATENCY_BUCKETS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    kind: str                          # counter | gauge | histogram
    help: str
    buckets: tuple[float, ...] = ()    # histograms only (upper bounds, ascending)


FAMILIES: tuple[Family, ...] = (
    Family("callagent_live_calls", "gauge", "Calls in progress in this process."),
    Family("callagent_recorder_queue_depth", "gauge",
           "Call records waiting to be written to the database."),
    Family(TURN_LATENCY, "histogram",
           "Agent reply latency: caller's end of turn to the agent's first audio.",
           TURN_LATENCY_BUCKETS),
    Family("callagent_interruptions_total", "counter",
           "Agent replies cut off by the caller (barge-in)."),
    Family("callagent_webhook_rejections_total", "counter",
           "Twilio webhooks and media upgrades refused (bad or missing signature, ...)."),
)


@dataclass(slots=True)
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int]
    total: float = 0.0
    count: int = 0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)


def _sample(name: str, pairs: Sequence[tuple[str, str]], value: float) -> str:
    text = _labels(pairs)
    number = "+Inf" if value == math.inf else f"{value:g}"
    return f"{name}{{{text}}} {number}" if text else f"{name} {number}"


class Metrics:
    def __init__(self, families: Sequence[Family] = FAMILIES) -> None:
        self._counters: defaultdict[LabelKey, float] = defaultdict(float)
        self._gauges: dict[LabelKey, float] = {}
        self._histograms: dict[LabelKey, _Histogram] = {}
        self._families: dict[str, Family] = {f.name: f for f in families}

    @staticmethod
    def _key(name: str, labels: dict[str, str]) -> LabelKey:
        return name, tuple(sorted(labels.items()))

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._counters[self._key(name, labels)] += amount

    def set(self, name: str, value: float, **labels: str) -> None:
        self._gauges[self._key(name, labels)] = value

    def add(self, name: str, delta: float, **labels: str) -> None:
        key = self._key(name, labels)
        self._gauges[key] = self._gauges.get(key, 0.0) + delta

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Count ``value`` into the histogram ``name`` (a declared histogram family)."""
        family = self._families.get(name)
        if family is None or family.kind != "histogram":
            raise ValueError(f"{name}: not a declared histogram")
        if math.isnan(value):
            raise ValueError(f"{name}: cannot observe NaN")
        key = self._key(name, labels)
        h = self._histograms.get(key)
        if h is None:
            h = self._histograms[key] = _Histogram(family.buckets, [0] * len(family.buckets))
        for i, bound in enumerate(h.buckets):
            if value <= bound:
                h.counts[i] += 1
        h.total += value
        h.count += 1

    def get(self, name: str, **labels: str) -> float:
        key = self._key(name, labels)
        return self._counters.get(key, self._gauges.get(key, 0.0))

    def histogram_count(self, name: str, **labels: str) -> int:
        h = self._histograms.get(self._key(name, labels))
        return 0 if h is None else h.count

    def _histogram_lines(self, name: str, family: Family) -> list[str]:
        series = sorted((k, h) for k, h in self._histograms.items() if k[0] == name)
        if not series:
            series = [((name, ()), _Histogram(family.buckets, [0] * len(family.buckets)))]
        lines: list[str] = []
        for (_, pairs), h in series:
            for bound, n in zip(h.buckets, h.counts):
                lines.append(_sample(f"{name}_bucket", [*pairs, ("le", f"{bound:g}")], n))
            lines.append(_sample(f"{name}_bucket", [*pairs, ("le", "+Inf")], h.count))
            lines.append(_sample(f"{name}_sum", pairs, h.total))
            lines.append(_sample(f"{name}_count", pairs, h.count))
        return lines

    def render(self) -> str:
        samples: defaultdict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = (
            defaultdict(list))
        kinds: dict[str, str] = {}
        for kind, table in (("counter", self._counters), ("gauge", self._gauges)):
            for (name, pairs), value in table.items():
                kinds.setdefault(name, kind)
                samples[name].append((pairs, value))
        lines: list[str] = []
        for name in sorted(set(samples) | set(self._families)):
            family = self._families.get(name)
            kind = family.kind if family else kinds[name]
            if family:
                lines.append(f"# HELP {name} {family.help}")
            lines.append(f"# TYPE {name} {kind}")
            if kind == "histogram" and family is not None:
                lines.extend(self._histogram_lines(name, family))
                continue
            rows = sorted(samples.get(name, [])) or [((), 0.0)]
            lines.extend(_sample(name, pairs, value) for pairs, value in rows)
        return "\n".join(lines) + "\n"
