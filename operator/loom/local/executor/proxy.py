"""The front door of an InferenceService: one loopback URL, traffic split by weight.

A :class:`TrafficProxy` forwards each request to one revision, chosen at random
with the weights of the current traffic table, and records per revision the
request count, errors (5xx or unreachable) and latencies. ``GET /loom/metrics``
answers them as JSON (``?since=<unix seconds>`` narrows to the requests routed since then), and
:meth:`TrafficProxy.metrics` gives the same in Python. Every answer carries the
revision that served it in the ``X-Loom-Revision`` header.

All proxies share one asyncio loop on a thread (:class:`ProxyHub`).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import socket
import threading
import time
from typing import Any

import aiohttp
from aiohttp import web

log = logging.getLogger("loom.local.executor")

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}
DROP_RESPONSE = HOP_BY_HOP | {"content-encoding", "date", "server"}


class RevisionStats:
    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.codes: collections.Counter[str] = collections.Counter()
        self.samples: collections.deque[tuple[float, float, bool]] = collections.deque(maxlen=100_000)

    def record(self, latency: float, status: int, routed_at: float | None = None) -> None:
        """One answered request; its sample is stamped with when it was routed (a window then
        holds the requests routed in it, however long they took)."""
        ok = status < 500
        self.requests += 1
        if not ok:
            self.errors += 1
        self.codes[str(status)] += 1
        self.samples.append((time.time() if routed_at is None else routed_at, latency, ok))

    def summary(self, since: float | None = None) -> dict[str, Any]:
        samples = [s for s in list(self.samples) if since is None or s[0] >= since]
        lat = sorted(s[1] * 1000.0 for s in samples)

        def pct(p: float) -> float | None:
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3)

        if since is None:
            requests, errors = self.requests, self.errors
        else:
            requests, errors = len(samples), sum(1 for s in samples if not s[2])
        return {
            "requests": requests, "errors": errors,
            "errorRate": round(errors / requests, 6) if requests else 0.0,
            "codes": dict(self.codes) if since is None else None,
            "latencyMs": {"mean": round(sum(lat) / len(lat), 3) if lat else None, "p50": pct(0.5),
                          "p95": pct(0.95), "p99": pct(0.99), "max": round(lat[-1], 3) if lat else None},
        }


class TrafficProxy:
    def __init__(self, name: str, host: str = "127.0.0.1") -> None:
        self.name = name
        self.host = host
        self.port = 0
        self._routes: tuple[tuple[str, int, int], ...] = ()  # (revision, port, percent)
        self._stats: dict[str, RevisionStats] = {}
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set_routes(self, routes: list[tuple[str, int, int]]) -> None:
        """Replace the traffic table: ``[(revision, backend port, percent), ...]``."""
        self._routes = tuple((r, p, int(w)) for r, p, w in routes if w > 0)

    def _pick(self) -> tuple[str, int] | None:
        routes = self._routes
        total = sum(w for _, _, w in routes)
        if not routes or total <= 0:
            return None
        x = random.uniform(0, total)
        for rev, port, w in routes:
            if x < w:
                return rev, port
            x -= w
        return routes[-1][0], routes[-1][1]

    def _record(self, rev: str, latency: float, status: int, routed_at: float | None = None) -> None:
        with self._lock:
            self._stats.setdefault(rev, RevisionStats()).record(latency, status, routed_at)

    def metrics(self, since: float | None = None) -> dict[str, Any]:
        with self._lock:
            revisions = {rev: s.summary(since) for rev, s in self._stats.items()}
        return {"name": self.name, "url": self.url, "since": since,
                "traffic": [{"revisionName": r, "percent": w} for r, _, w in self._routes],
                "revisions": revisions}

    # -- aiohttp ------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/loom/metrics":
            since = request.query.get("since")
            try:
                since_f = float(since) if since else None
            except ValueError:
                return web.json_response({"error": "since must be unix seconds"}, status=400)
            return web.json_response(self.metrics(since_f))
        choice = self._pick()
        if choice is None:
            return web.json_response({"error": f"inference service {self.name} has no ready revision"}, status=503)
        rev, port = choice
        routed_at = time.time()
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        t0 = time.perf_counter()
        assert self._session is not None
        try:
            async with self._session.request(request.method, f"http://127.0.0.1:{port}{request.path_qs}",
                                             headers=headers, data=body, allow_redirects=False) as upstream:
                payload = await upstream.read()
                status = upstream.status
                out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in DROP_RESPONSE}
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            self._record(rev, time.perf_counter() - t0, 502, routed_at)
            return web.json_response({"error": f"revision {rev} unreachable: {e.__class__.__name__}"}, status=502,
                                     headers={"X-Loom-Revision": rev})
        self._record(rev, time.perf_counter() - t0, status, routed_at)
        out_headers["X-Loom-Revision"] = rev
        return web.Response(status=status, body=payload, headers=out_headers)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60),
                                              auto_decompress=True)
        server = web.Server(self._handle, access_log=None)
        self._runner = web.ServerRunner(server, access_log=None)  # type: ignore[assignment]
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock)
        await site.start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None


class ProxyHub:
    """One asyncio loop on a daemon thread, serving every TrafficProxy."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            assert self.loop is not None
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name="loom-proxy-hub", daemon=True)
        self._thread.start()
        ready.wait(10)

    def _run(self, coro: Any, timeout: float = 10.0) -> Any:
        if self.loop is None:
            self.start()
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def add(self, name: str) -> TrafficProxy:
        proxy = TrafficProxy(name)
        self._run(proxy._start())
        return proxy

    def remove(self, proxy: TrafficProxy) -> None:
        try:
            self._run(proxy._stop())
        except Exception as e:  # pragma: no cover - best effort on shutdown
            log.debug("proxy %s stop: %s", proxy.name, e)

    def stop(self) -> None:
        if self.loop is None:
            return
        loop = self.loop
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        try:
            loop.close()
        except Exception:
            pass
        self.loop = None
        self._thread = None
