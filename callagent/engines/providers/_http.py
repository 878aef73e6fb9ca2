"""What the OpenAI-compatible clients share: settings, headers, error mapping."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from callagent.engines.providers.errors import (
    ProviderError,
    ProviderStalled,
    ProviderUnavailable,
)

__all__ = ["Endpoint", "map_errors", "raise_for_status"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a provider lives. `base_url` includes the API version
    ("https://api.openai.com/v1", "http://127.0.0.1:11434/v1"); the key is
    read from the environment variable `api_key_env` (none for local servers)."""

    stage: str
    base_url: str
    model: str
    api_key_env: str = ""
    timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, stage: str, settings: Mapping[str, Any], *,
                      default_timeout_s: float = 10.0) -> Endpoint:  # fmt: skip
        base_url = str(settings.get("base_url", "")).rstrip("/")
        model = str(settings.get("model", ""))
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"{stage}: base_url must be an http(s) URL, got {base_url!r}")
        if not model:
            raise ValueError(f"{stage}: model is required")
        timeout = float(settings.get("timeout_s", default_timeout_s))
        if timeout <= 0:
            raise ValueError(f"{stage}: timeout_s must be > 0, got {timeout}")
        return cls(stage, base_url, model, str(settings.get("api_key_env", "")), timeout)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def headers(self) -> dict[str, str]:
        if not self.api_key_env:
            return {}
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise ProviderUnavailable(
                self.stage, f"the environment variable {self.api_key_env} (its API key) is not set"
            )
        return {"Authorization": f"Bearer {key}"}


def raise_for_status(stage: str, response: httpx.Response, body: bytes = b"") -> None:
    if response.status_code >= 400:
        detail = body[:200].decode("utf-8", errors="replace").strip()
        raise ProviderUnavailable(stage, f"HTTP {response.status_code}: {detail}")


class map_errors:  # noqa: N801 - used as a context manager, like a function
    """Turn httpx's exceptions into the provider error tree."""

    def __init__(self, stage: str) -> None:
        self._stage = stage

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> Literal[False]:  # fmt: skip
        if exc is None or isinstance(exc, ProviderError):
            return False
        if isinstance(exc, httpx.TimeoutException):
            raise ProviderStalled(self._stage, f"no answer in time ({type(exc).__name__})") from exc
        if isinstance(exc, httpx.HTTPError):
            raise ProviderUnavailable(self._stage, f"{type(exc).__name__}: {exc}") from exc
        return False
