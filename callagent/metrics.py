"""Process-wide counters and gauges, held by the app (no module-level state).

Kept deliberately small: a name plus sorted label pairs maps to a number.
The console's /metrics endpoint renders them in Prometheus text format.
"""

from __future__ import annotations

from collections import defaultdict

LabelKey = tuple[str, tuple[tuple[str, str], ...]]


class Metrics:
    def __init__(self) -> None:
        self._counters: defaultdict[LabelKey, float] = defaultdict(float)
        self._gauges: dict[LabelKey, float] = {}

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

    def get(self, name: str, **labels: str) -> float:
        key = self._key(name, labels)
        return self._counters.get(key, self._gauges.get(key, 0.0))

    def render(self) -> str:
        lines: list[str] = []
        for kind, table in (("counter", self._counters), ("gauge", self._gauges)):
            seen: set[str] = set()
            for (name, labels), value in sorted(table.items()):
                if name not in seen:
                    lines.append(f"# TYPE {name} {kind}")
                    seen.add(name)
                label_text = ",".join(f'{k}="{v}"' for k, v in labels)
                lines.append(f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}")
        return "\n".join(lines) + "\n"
