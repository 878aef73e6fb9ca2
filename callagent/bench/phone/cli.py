"""``scripts/bench phone [--engine NAME[/BACKEND]] [--samples N]``: the phone conversation benchmark.

For each engine: start ``callagent serve`` on that engine (agent profile
customer_service by default), play every scenario sample through the
simulated Twilio caller in real time, rebuild what the caller heard on the
playout clock, score it with Full-Duplex-Bench's measures, and print one
table for all engines (also written as JSON and Markdown, with a latency plot
when matplotlib is installed). Samples are generated from text on first use
into a cache directory (``scripts/dev/make_phone_scenarios.py`` does it too).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from callagent.audio.pcm import Pcm, Samples
from callagent.audio.wavfile import write_wav
from callagent.bench._server import settle
from callagent.bench.phone import analyze
from callagent.bench.phone.generate import Sample, load
from callagent.bench.phone.measures import (
    Behaviour,
    overlap_outcome,
    pause_takeover,
    same_response,
    smooth_turn,
)
from callagent.bench.phone.report import SampleResult, markdown, plot, summarize
from callagent.bench.phone.runner import Recording, run_call
from callagent.bench.phone.scenarios import Anchor
from callagent.bench.phone.script import CallerScript
from callagent.bench.phone.server import TOKEN, Server, agent_turns, serve
from callagent.bench.phone.timeline import AgentSpeech, AgentTurnText, Scenario
from callagent.store.db import PROJECT_ROOT

__all__ = ["main", "score"]

DEFAULT_ENGINES = ("pipeline", "duplex/local")


def score(sample: Sample, rec: Recording, speech: Sequence[AgentSpeech],
          turns: Sequence[AgentTurnText]) -> SampleResult:  # fmt: skip
    """One sample's figures from its recorded call."""
    spec = sample.spec
    res = SampleResult(spec.id, spec.scenario.value, spec.text, clears=len(rec.clears))
    if rec.error or rec.anchor_missed or rec.cue_at is None:
        res.ok, res.error = False, rec.error or "the anchor never came (agent silent?)"
        return res
    tl = analyze.timeline(sample, rec, speech, turns)
    if spec.scenario is Scenario.SMOOTH:
        out = smooth_turn(tl)
        res.takeover, res.latency_s, res.early = out.takeover, out.latency, out.early
        if out.takeover and out.latency is not None:
            at = tl.caller_turn.end + out.latency if tl.caller_turn else 0.0
            turn = next((a.turn for a in tl.agent if a.span.start >= at - 1e-6), "")
            res.response_text = tl.text_of(turn) or ""
    elif spec.scenario is Scenario.PAUSE:
        res.takeover = pause_takeover(tl)
    else:
        o = overlap_outcome(tl)
        res.behaviour, res.stop_latency_s, res.response_latency_s = o.behaviour.value, o.stop_latency, o.response_latency
        if o.behaviour is Behaviour.RESPOND:
            res.response_text = tl.text_of(o.response_turn) or ""
    return res


def _run_one(service: Server, sample: Sample, stt: analyze.Transcriber | None, out_dir: Path) -> SampleResult:
    spec = sample.spec
    echo_gain = 10 ** (spec.echo.gain_db / 20) if spec.echo else 0.0
    script = CallerScript(sample.audio, spec.anchor, spec.at_s, echo_gain=echo_gain)
    rec = asyncio.run(run_call(service.base_url, service.base_url, TOKEN, script,
                               echo_delay_s=spec.echo.delay_s if spec.echo else 0.0))  # fmt: skip
    rows = agent_turns(service.db_url, rec.call_id) if rec.call_id else []
    labels, turns = analyze.turn_labels(rec, rows)
    speech = analyze.agent_speech(rec, stt, labels) if not rec.error else []
    res = score(sample, rec, speech, turns)
    res.detail = {
        "cue_at": rec.cue_at, "clears": rec.clears,
        "agent": [[round(a.span.start, 3), round(a.span.end, 3), a.words, a.turn] for a in speech],
        "turn_starts": _turn_starts(rec.labels),
        "labels": [[round(a, 3), round(b, 3), t] for a, b, t in _joined(rec.labels)],
        "records": [[round(r.start, 3), r.text] for r in rows],
    }  # fmt: skip
    if len(rec.heard):
        wav = out_dir / f"{spec.id}.wav"
        write_wav(wav, [Pcm(rec.said, 8000), Pcm(rec.heard, 8000)])
        res.heard_wav = str(wav)
    return res


def _joined(labels: Sequence[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Adjacent stretches of one turn as one (the runner labels every 20 ms message)."""
    out: list[tuple[float, float, str]] = []
    for s, e, t in sorted(labels):
        if out and out[-1][2] == t and s <= out[-1][1] + 0.03:
            out[-1] = (out[-1][0], max(out[-1][1], e), t)
        else:
            out.append((s, e, t))
    return out


def _heard_channel(path: Path) -> Samples:
    """The right channel (what the caller heard) of a saved said/heard WAV."""
    with wave.open(str(path), "rb") as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, w.getnchannels())
    return data[:, -1].astype(np.int16)


def _saved_recording(r: dict[str, Any]) -> Recording:
    """A recorded call back from results.json and its heard WAV (for --rescore)."""
    d = r["detail"]
    heard = _heard_channel(Path(r["heard_wav"])) if r["heard_wav"] else np.zeros(0, np.int16)
    labels = [(a, b, t) for a, b, t in d.get("labels", [])]
    if not labels:  # older results: each turn plays from its first audio until the next turn's
        starts = sorted(d["turn_starts"].items(), key=lambda kv: kv[1])
        ends = [t for _, t in starts[1:]] + [len(heard) / 8000]
        labels = [(t, e, turn) for (turn, t), e in zip(starts, ends, strict=True)]
    rec = Recording("", np.zeros(0, np.int16), heard, list(d["clears"]), labels, d["cue_at"])
    rec.error = r["error"]
    return rec


def rescore(out: Path, samples: Sequence[Sample], args: argparse.Namespace) -> dict[str, list[SampleResult]]:
    """Score saved calls again (after a change to the analysis or the measures)."""
    saved = json.loads((out / "results.json").read_text())
    by_id = {s.spec.id: s for s in samples}
    stt = None if args.no_stt else analyze.Transcriber()
    results: dict[str, list[SampleResult]] = {}
    for label, rows in saved["samples"].items():
        got = []
        for r in rows:
            sample = by_id[r["id"]]
            rec = _saved_recording(r)
            if not r["ok"]:
                got.append(SampleResult(r["id"], r["scenario"], r["text"], ok=False, error=r["error"]))
                continue
            records = [analyze.DbTurn(a, t) for a, t in r["detail"]["records"]]
            labels, turns = analyze.turn_labels(rec, records)
            speech = analyze.agent_speech(rec, stt, labels)
            res = score(sample, rec, speech, turns)
            res.heard_wav, res.detail = r["heard_wav"], {**r["detail"], "agent": [
                [round(a.span.start, 3), round(a.span.end, 3), a.words, a.turn] for a in speech]}  # fmt: skip
            got.append(res)
        _judge_against_clean(got, samples)
        results[label] = got
    return results


def _turn_starts(labels: Sequence[tuple[float, float, str]]) -> dict[str, float]:
    first: dict[str, float] = {}
    for s, _, turn in labels:
        first[turn] = round(min(first.get(turn, s), s), 3)
    return first


def agent_for(agent: str, engine: str) -> str:
    """The profile to run: ``<agent>_<engine>`` when the project has one (it carries
    that engine's settings, e.g. the duplex prompt and routing), else ``agent``."""
    variant = f"{agent}_{engine}"
    return variant if (PROJECT_ROOT / "config" / "agents" / f"{variant}.toml").is_file() else agent


def run_engine(label: str, samples: Sequence[Sample], args: argparse.Namespace, out_dir: Path) -> list[SampleResult] | str:
    """Every sample against one engine; a string says why the engine was skipped."""
    engine, _, backend = label.partition("/")
    agent = agent_for(args.agent, engine)
    print(f"{label}: agent profile {agent}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    stt = None if args.no_stt else analyze.Transcriber()
    with tempfile.TemporaryDirectory(prefix="bench-phone-") as tmp, serve(Path(tmp), agent, engine, backend) as service:
        settle(service)
        warm = next((s for s in samples if s.spec.anchor == Anchor.AFTER_GREETING), samples[0])
        _run_one(service, warm, None, Path(tmp))  # loads and warms the models; not counted
        if "is not available" in service.log.read_text(errors="replace"):
            return f"engine {label!r} is not available in this service (it fell back to the fixture engine)"
        results = []
        for k, sample in enumerate(samples, 1):
            res = _run_one(service, sample, stt, out_dir)
            results.append(res)
            detail = res.error or (f"takeover={res.takeover} latency={res.latency_s}" if res.takeover is not None
                                   else f"{res.behaviour} stop={res.stop_latency_s} resp={res.response_latency_s}")
            print(f"  [{label}] {k}/{len(samples)} {sample.spec.id}: {detail}", flush=True)
    _judge_against_clean(results, samples)
    return results


def _judge_against_clean(results: Sequence[SampleResult], samples: Sequence[Sample]) -> None:
    """Interruptions: did the agent answer as it answered the same request without overlap?"""
    clean = {r.id: r.response_text for r in results if r.scenario == Scenario.SMOOTH.value and r.response_text}
    by_id = {s.spec.id: s for s in samples}
    for r in results:
        pair = by_id[r.id].spec.pair
        if r.scenario == Scenario.INTERRUPTION.value and r.behaviour and pair in clean:
            r.same_as_clean = bool(r.response_text) and same_response(r.response_text, clean[pair])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/bench phone", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--engine", action="append",
                   help=f"engine[/backend] to run, repeatable (default: {', '.join(DEFAULT_ENGINES)})")
    p.add_argument("--agent", default="customer_service", help="agent profile (default customer_service)")
    p.add_argument("--samples", type=int, default=20, help="samples per scenario (default 20)")
    p.add_argument("--scenario", action="append", choices=[s.value for s in Scenario],
                   help="only these scenarios (repeatable; default all)")
    p.add_argument("--out", default=str(PROJECT_ROOT / "var" / "bench_phone"),
                   help="results: heard audio, JSON, Markdown, plot (default var/bench_phone)")
    p.add_argument("--cache", default=str(PROJECT_ROOT / "var" / "phone_scenarios"),
                   help="generated scenario audio (default var/phone_scenarios)")
    p.add_argument("--rescore", action="store_true",
                   help="make no calls: score the calls saved in --out again (after changing the measures)")
    p.add_argument("--merge", action="append", default=[], metavar="DIR",
                   help="also show the engines of an earlier run's --out DIR in the table (repeatable)")
    p.add_argument("--no-stt", action="store_true", help="skip word counts (short agent speech then never counts as a takeover)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.samples < 1:
        print("scripts/bench phone: --samples must be >= 1", file=sys.stderr)
        return 2
    scenarios = tuple(Scenario(s) for s in args.scenario) if args.scenario else tuple(Scenario)
    out = Path(args.out)
    cache = Path(args.cache) / f"{args.samples}"
    samples = load(cache, args.samples, scenarios)
    print(f"phone benchmark: {len(samples)} samples ({args.samples} per scenario) from {cache}", flush=True)
    engines = [] if args.rescore else args.engine or list(DEFAULT_ENGINES)
    results: dict[str, list[SampleResult]] = rescore(out, samples, args) if args.rescore else {}
    skipped: dict[str, str] = {}
    for label in engines:
        got = run_engine(label, samples, args, out / label.replace("/", "_"))
        if isinstance(got, str):
            skipped[label] = got
            print(f"skipped: {got}", flush=True)
        else:
            results[label] = got
    for extra in args.merge:
        saved = json.loads((Path(extra) / "results.json").read_text())
        fields = {f.name for f in dataclasses.fields(SampleResult)}
        for label, rows in saved["samples"].items():
            results.setdefault(label, [SampleResult(**{k: v for k, v in r.items() if k in fields}) for r in rows])
    summaries = {label: summarize(rs) for label, rs in results.items()}
    table = markdown(summaries) if summaries else "(no engine ran)\n"
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    profiles = ", ".join(f"{label}: {agent_for(args.agent, label.partition('/')[0])}" for label in results)
    head = (f"phone benchmark, agent profiles {profiles or args.agent}, {args.samples} samples per scenario; "
            f"machine: {machine}\n"
            + "".join(f"skipped {k}: {v}\n" for k, v in skipped.items()))  # fmt: skip
    print(head + table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(head + "\n" + table)
    (out / "results.json").write_text(json.dumps({
        "agent": args.agent, "samples_per_scenario": args.samples, "machine": machine, "skipped": skipped,
        "summary": summaries,
        "samples": {k: [dataclasses.asdict(r) for r in rs] for k, rs in results.items()},
    }, indent=1, default=str) + "\n")  # fmt: skip
    why = plot(results, out / "latency.png") if results else "no results"
    print(f"written: {out / 'table.md'}, {out / 'results.json'}"
          + (f", {out / 'latency.png'}" if not why else f" ({why})"))
    return 0 if results and not any(s["failed"] for s in summaries.values()) else 1
