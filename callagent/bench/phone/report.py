"""Per-sample results, their summary per engine, and the table (Markdown/JSON) and plot."""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callagent.bench.phone.measures import Behaviour, percentile, rate, v15_average
from callagent.bench.phone.timeline import Scenario

__all__ = ["TARGETS", "SampleResult", "markdown", "plot", "summarize"]

# The targets for the embedded stack (reported against, never asserted).
TARGETS = {
    "v15_average_duplex": 90.0,
    "v15_average_pipeline": 80.0,
    "pause_tor": 0.05,
    "smooth_latency_p50_s": 0.35,
    "stop_latency_p95_s": 0.25,
}


@dataclass
class SampleResult:
    id: str
    scenario: str
    text: str
    ok: bool = True  # the call ran (no error, anchor reached)
    error: str = ""
    takeover: bool | None = None  # smooth: took the turn; pause: took over in the pause
    latency_s: float | None = None  # smooth turn-taking
    early: bool | None = None  # smooth: the agent started before the caller had finished
    behaviour: str = ""  # overlaps
    stop_latency_s: float | None = None
    response_latency_s: float | None = None
    same_as_clean: bool | None = None  # interruption: answered as to the request without overlap
    response_text: str = ""
    clears: int = 0
    heard_wav: str = ""
    detail: dict[str, Any] = field(default_factory=dict)  # the timeline, for inspection


def _ok(results: Sequence[SampleResult], scenario: Scenario) -> list[SampleResult]:
    return [r for r in results if r.scenario == scenario.value and r.ok]


def _vals(xs: Sequence[float | None]) -> list[float]:
    return [x for x in xs if x is not None]


def _lat(values: Sequence[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "n": float(len(values))}


def summarize(results: Sequence[SampleResult]) -> dict[str, Any]:
    """Figures per scenario, and the v1.5-style average."""
    out: dict[str, Any] = {"samples": len(results), "failed": sum(not r.ok for r in results)}
    smooth = _ok(results, Scenario.SMOOTH)
    out[Scenario.SMOOTH.value] = {
        "n": len(smooth),
        "tor": rate([bool(r.takeover) for r in smooth]),
        "early": rate([bool(r.early) for r in smooth]),
        "latency_s": _lat(_vals([r.latency_s for r in smooth])),
    }
    pause = _ok(results, Scenario.PAUSE)
    out[Scenario.PAUSE.value] = {"n": len(pause), "tor": rate([bool(r.takeover) for r in pause])}
    resume: dict[str, float] = {}
    for sc in (Scenario.INTERRUPTION, Scenario.BACKCHANNEL, Scenario.TALK_TO_OTHERS,
               Scenario.BACKGROUND, Scenario.ECHO):  # fmt: skip
        rs = _ok(results, sc)
        valid = [r for r in rs if r.behaviour != Behaviour.NO_OVERLAP.value]
        share = {b.value: rate([r.behaviour == b.value for r in valid])
                 for b in (Behaviour.RESPOND, Behaviour.RESUME, Behaviour.UNKNOWN)}  # fmt: skip
        row: dict[str, Any] = {
            "n": len(valid),
            "missed_overlap": len(rs) - len(valid),
            **share,
            "stop_latency_s": _lat(_vals([r.stop_latency_s for r in valid])),
            "response_latency_s": _lat(_vals([r.response_latency_s for r in valid
                                              if r.behaviour == Behaviour.RESPOND.value])),  # fmt: skip
            "cleared": rate([r.clears > 0 for r in valid]),
        }
        if sc is Scenario.INTERRUPTION:
            judged = [r.same_as_clean for r in valid if r.same_as_clean is not None]
            row["same_as_clean"] = rate(judged)
            row["same_as_clean_n"] = len(judged)
        out[sc.value] = row
        resume[sc.value] = share[Behaviour.RESUME.value]
    out["v15_average"] = v15_average(
        out[Scenario.INTERRUPTION.value][Behaviour.RESPOND.value],
        [resume[Scenario.BACKCHANNEL.value], resume[Scenario.TALK_TO_OTHERS.value],
         resume[Scenario.BACKGROUND.value]],
    )  # fmt: skip
    return out


def _f(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """One table, a column per engine (label "engine/backend")."""
    labels = list(summaries)
    rows: list[tuple[str, list[str]]] = []

    def row(name: str, fn: Any) -> None:
        rows.append((name, [fn(summaries[label]) for label in labels]))

    sm, pa, it = Scenario.SMOOTH.value, Scenario.PAUSE.value, Scenario.INTERRUPTION.value
    row("calls (failed)", lambda s: f"{s['samples']} ({s['failed']})")
    row("v1.5-style average (target >= 90 duplex, >= 80 pipeline)", lambda s: _f(s["v15_average"], 1))
    row("smooth turn-taking: TOR (higher better)", lambda s: f"{_f(s[sm]['tor'])} (n={s[sm]['n']})")
    row("smooth turn-taking: latency p50 / p95 s (target p50 <= 0.35)",
        lambda s: f"{_f(s[sm]['latency_s']['p50'])} / {_f(s[sm]['latency_s']['p95'])}")
    row("smooth turn-taking: agent started before the caller finished", lambda s: _f(s[sm]["early"]))
    row("pause handling: TOR (lower better, target <= 0.05)", lambda s: f"{_f(s[pa]['tor'])} (n={s[pa]['n']})")
    row("interruption: respond rate", lambda s: f"{_f(s[it]['respond'])} (n={s[it]['n']}, "
                                                f"missed {s[it]['missed_overlap']})")
    row("interruption: stop latency p50 / p95 s (target p95 <= 0.25)",
        lambda s: f"{_f(s[it]['stop_latency_s']['p50'])} / {_f(s[it]['stop_latency_s']['p95'])}")
    row("interruption: response latency p50 / p95 s",
        lambda s: f"{_f(s[it]['response_latency_s']['p50'])} / {_f(s[it]['response_latency_s']['p95'])}")
    row("interruption: answered as without overlap",
        lambda s: f"{_f(s[it]['same_as_clean'])} (n={s[it]['same_as_clean_n']})")
    for sc in (Scenario.BACKCHANNEL, Scenario.TALK_TO_OTHERS, Scenario.BACKGROUND, Scenario.ECHO):
        v = sc.value
        row(f"{v.replace('_', ' ')}: resume / respond / unknown",
            lambda s, v=v: f"{_f(s[v]['resume'])} / {_f(s[v]['respond'])} / {_f(s[v]['unknown'])} "
                           f"(n={s[v]['n']}, missed {s[v]['missed_overlap']})")
        row(f"{v.replace('_', ' ')}: agent cut off (clear sent)", lambda s, v=v: _f(s[v]["cleared"]))
    head = "| measure | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels) + "\n"
    return head + "".join(f"| {name} | " + " | ".join(vals) + " |\n" for name, vals in rows)


def plot(results: Mapping[str, Sequence[SampleResult]], path: Path) -> str:
    """Latency distributions per engine as a PNG; returns "" or why there is none."""
    try:  # an optional extra (callagent[bench]); imported by name so mypy needs no stubs
        importlib.import_module("matplotlib").use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return "matplotlib is not installed (pip install 'callagent[bench]'): no plot"
    series = [
        ("smooth turn-taking latency", Scenario.SMOOTH, "latency_s"),
        ("interruption stop latency", Scenario.INTERRUPTION, "stop_latency_s"),
        ("interruption response latency", Scenario.INTERRUPTION, "response_latency_s"),
    ]
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.6))
    for ax, (title, sc, attr) in zip(axes, series, strict=True):
        data, names = [], []
        for label, rs in results.items():
            vals = [getattr(r, attr) for r in rs if r.scenario == sc.value and r.ok]
            data.append([v for v in vals if v is not None] or [math.nan])
            names.append(label)
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=15)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("seconds")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ""
