"""HTTP tools: one JSON request per invocation, with a timeout and retries.

A profile declares the endpoint (``[tools.http]``: url, method, headers,
secret_headers, timeout_s, retries, backoff_s). Secret header values are never
in the profile: ``secret_headers`` maps a header to the name of an environment
variable, read at call time. GET sends the arguments as the query string,
other methods as a JSON body. The answer must be a JSON object:

- 2xx with a JSON object: ok (the object is the result);
- 404: not found (no retry);
- 5xx, a timeout or a connection error: retried ``retries`` times, waiting
  ``backoff_s * 2**n`` before retry n+1; then an error;
- any other status, or a body that is not a JSON object: an error (no retry).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import httpx

from callagent.tools.outcome import ToolFailure, ToolResult, ToolState

__all__ = ["METHODS", "HttpToolConfig", "call_http_tool"]

METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True, slots=True)
class HttpToolConfig:
    url: str
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    secret_headers: Mapping[str, str] = field(default_factory=dict)  # header -> env var
    timeout_s: float = 5.0
    retries: int = 2
    backoff_s: float = 0.2

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url: expected an http:// or https:// URL, got {self.url!r}")
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {self.method!r}")
        if not 0 < self.timeout_s <= 120:
            raise ValueError(f"timeout_s: expected 0-120 s, got {self.timeout_s}")
        if not 0 <= self.retries <= 10:
            raise ValueError(f"retries: expected 0-10, got {self.retries}")
        if not 0 <= self.backoff_s <= 30:
            raise ValueError(f"backoff_s: expected 0-30 s, got {self.backoff_s}")
        overlap = {h.lower() for h in self.headers} & {h.lower() for h in self.secret_headers}
        if overlap:
            raise ValueError(f"headers: {sorted(overlap)} also in secret_headers")


def _headers(config: HttpToolConfig, environ: Mapping[str, str]) -> dict[str, str]:
    out = {"Accept": "application/json", **config.headers}
    for header, var in config.secret_headers.items():
        value = environ.get(var, "")
        if not value:
            raise ToolFailure(f"the secret for header {header} is not set ({var} is empty)")
        out[header] = value
    return out


def _parse(response: httpx.Response) -> dict[str, object]:
    try:
        data = json.loads(response.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ToolFailure(
            f"the tool's endpoint answered {response.status_code} with a body that is not JSON"
        ) from None
    if not isinstance(data, dict):
        raise ToolFailure(
            f"the tool's endpoint answered with JSON {type(data).__name__}, expected an object"
        )
    return data


async def call_http_tool(
    client: httpx.AsyncClient,
    config: HttpToolConfig,
    arguments: Mapping[str, object],
    environ: Mapping[str, str],
) -> ToolResult:
    """One invocation with its retries; failures come back as an error result."""
    try:
        headers = _headers(config, environ)
    except ToolFailure as exc:
        return ToolResult(ToolState.ERROR, error=str(exc), attempts=0)
    attempt = 0
    last = ""
    while True:
        attempt += 1
        try:
            if config.method == "GET":
                params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in arguments.items()}
                response = await client.request(
                    "GET", config.url, params=params, headers=headers, timeout=config.timeout_s
                )
            else:
                response = await client.request(
                    config.method, config.url, json=dict(arguments), headers=headers,
                    timeout=config.timeout_s,
                )
        except httpx.TimeoutException:
            last = f"the tool's endpoint did not answer within {config.timeout_s:g} s"
        except httpx.TransportError as exc:
            last = f"the tool's endpoint could not be reached ({type(exc).__name__})"
        else:
            status = response.status_code
            if status == 404:
                return ToolResult(ToolState.NOT_FOUND, attempts=attempt)
            if 200 <= status < 300:
                try:
                    return ToolResult(ToolState.OK, _parse(response), attempts=attempt)
                except ToolFailure as exc:
                    return ToolResult(ToolState.ERROR, error=str(exc), attempts=attempt)
            if status < 500:
                return ToolResult(
                    ToolState.ERROR, error=f"the tool's endpoint refused the request ({status})",
                    attempts=attempt,
                )
            last = f"the tool's endpoint failed ({status})"
        if attempt > config.retries:
            return ToolResult(ToolState.ERROR, error=f"{last} after {attempt} attempts",
                              attempts=attempt)
        await asyncio.sleep(config.backoff_s * 2 ** (attempt - 1))
