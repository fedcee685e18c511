"""What an operator sees of a running bridge: `GET /healthz` and `GET /metrics`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def get(port: int, path: str) -> tuple[int, str, str]:
    """GET http://127.0.0.1:`port``path`: status, content type header, body."""
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=10)) as answer:
        return answer.status, answer.headers.get("Content-Type", ""), await answer.text()


async def health(port: int) -> tuple[int, dict[str, Any]]:
    status, content_type, body = await get(port, "/healthz")
    assert content_type.startswith("application/json"), content_type
    return status, json.loads(body)


async def wait_health(port: int, status: int, timeout: float = 30.0) -> dict[str, Any]:
    """Poll /healthz until it answers `status`; return its JSON."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got, body = await health(port)
        if got == status:
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"/healthz stayed {got} (wanted {status}): {body}")
        await asyncio.sleep(0.25)


async def scrape(port: int) -> Samples:
    """Every sample /metrics shows, parsed the way Prometheus parses it."""
    status, content_type, body = await get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 if absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
