"""The operator's HTTP endpoints: `GET /healthz` and `GET /metrics`.

In HTTP mode they are added to the Slack frontend's server (same port as /slack/events,
through `SlackFrontend.extra_routes`); in Socket Mode, which needs no HTTP server for Slack,
`serve()` starts a small one on $PORT for them alone, bound to `[ops] bind` (loopback by
default: they show the AMI address and its errors, without authentication).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bridge.core.model import Backlog
from bridge.ops.health import AmiHealth, LeaseView, SlackReachability, health_report
from bridge.ops.metrics import Metrics
from bridge.store.backend import StoreBackend

log = logging.getLogger(__name__)


class OpsEndpoints:
    """Answers /healthz and /metrics from the live state of the bridge."""

    def __init__(self, *, ami: AmiHealth | Sequence[AmiHealth], slack: SlackReachability,
                 store: StoreBackend,
                 metrics: Metrics, leases: LeaseView | None = None) -> None:
        self._ami = ami
        self._leases = leases
        self._slack = slack
        self._store = store
        self._metrics = metrics
        self._runner: web.AppRunner | None = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._scrape)

    async def serve(self, port: int, *, host: str = "127.0.0.1") -> None:
        """Serve the endpoints on their own (Socket Mode), on `host` ([ops] bind)."""
        app = web.Application()
        self.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host=host, port=port).start()
        log.info("health and metrics on %s port %d at GET /healthz and GET /metrics", host,
                 port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        problem = self._store.problem
        try:
            backlog = await self._store.backlog()
        except Exception as exc:  # noqa: BLE001 - an unreadable store is a health fact
            backlog = Backlog(0, None, 0, None, 0)
            # The failure may be what told the store (the database just became unreachable).
            problem = (problem or self._store.problem
                       or f"the store {self._store.location} cannot be read: {exc}")
        report = health_report(ami=self._ami, slack=self._slack, backlog=backlog,
                               store_problem=problem, leases=self._leases)
        return web.Response(status=200 if report.healthy else 503,
                            text=json.dumps(report.body), content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def _scrape(self, _request: web.Request) -> web.Response:
        self._metrics.refresh_backlog(await self._store.backlog())
        if self._leases is not None:
            self._metrics.refresh_leases(self._leases.held())
        return web.Response(body=self._metrics.exposition(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})
