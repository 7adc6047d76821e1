"""Parley on Ray Serve: `parley serve`'s OpenAI-compatible routes, N replicas, autoscaling.

Needs ``ray[serve]`` (``pip install 'parley-runtime[ray]'``; it brings FastAPI).
Each replica loads its models once (parley.Runtime + parley.Model) and runs
every request through the binding's asyncio API on the replica's event loop,
so one replica serves many requests at once and its serving engine batches
them. The routes, request and response shapes and errors are those of
`parley serve` (docs/serve.md); see docs/ray_serve.md.

    from ray import serve
    from parley.ray_serve import build_app

    serve.run(build_app({"bot": "support-llama.parley", "en-de": "opus-mt-en-de.parley"},
                        num_replicas=2))

or from the command line (``serve run`` passes key=value arguments to app_builder):

    serve run parley.ray_serve:app_builder models=bot=support-llama.parley,en-de=opus-mt-en-de.parley \\
        num_replicas=2
"""

# No `from __future__ import annotations`: FastAPI must see the Request
# annotations of the routes as classes to inject the request.
import math
import os
from typing import Any, Mapping

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from .openai_api import ApiError, Limits, OpenAIService, parse_body

__all__ = ["ParleyDeployment", "build_app", "app_builder"]

api = FastAPI(title="Parley on Ray Serve", docs_url=None, redoc_url=None, openapi_url=None)


def _error_response(e: ApiError, replica: str) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.http_status, headers={"x-parley-replica": replica})


@api.exception_handler(StarletteHTTPException)
async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # An unknown route or a wrong method, in OpenAI's error shape as `parley serve` answers them.
    if exc.status_code == 405:
        e = ApiError("method not allowed on this route", code="method_not_allowed", http_status=405)
    elif exc.status_code == 404:
        e = ApiError("no such route", code="not_found", http_status=404)
    else:
        e = ApiError(str(exc.detail), http_status=exc.status_code)
    return JSONResponse(e.body(), status_code=e.http_status)


def _replica_id() -> str:
    try:
        ctx = serve.get_replica_context()
    except Exception:  # not inside a replica (a unit test constructing the class)
        return ""
    rid = getattr(ctx, "replica_id", None)
    return str(getattr(rid, "unique_id", None) or rid or getattr(ctx, "replica_tag", ""))


@serve.deployment(name="parley", ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64,
                  health_check_period_s=10, graceful_shutdown_timeout_s=10)
@serve.ingress(api)
class ParleyDeployment:
    """One replica: the models, loaded once, and the routes of `parley serve`."""

    def __init__(self, models: Mapping[str, str], *, threads: int = 1, device: str = "cpu",
                 max_tokens: int = 1024, max_body_bytes: int = 1 << 20, request_timeout_s: float | None = None,
                 context: str = "error"):
        self.max_body_bytes = max_body_bytes
        self.replica = _replica_id()
        self.service = OpenAIService(models, threads=threads, device=device,
                                     limits=Limits(max_tokens=max_tokens, request_timeout_s=request_timeout_s),
                                     context=context)

    def __del__(self) -> None:
        svc = getattr(self, "service", None)
        if svc is not None:
            svc.close()

    def check_health(self) -> None:
        """Ray Serve's periodic health check: the replica is unhealthy once its models are gone."""
        if not self.service.models:
            raise RuntimeError("parley: the replica has no models loaded")

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > self.max_body_bytes:
            raise ApiError(f"the request body is {len(raw)} bytes, over the limit of {self.max_body_bytes}",
                           code="request_too_large", http_status=413)
        return parse_body(raw)

    async def _answer(self, request: Request, route) -> Any:
        headers = {"x-parley-replica": self.replica}
        try:
            out = await route(await self._body(request))
        except ApiError as e:
            return _error_response(e, self.replica)
        if isinstance(out, dict):
            return JSONResponse(out, headers=headers)
        headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return StreamingResponse(out, media_type="text/event-stream", headers=headers)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        return await self._answer(request, self.service.chat_completions)

    @api.post("/v1/completions")
    async def completions(self, request: Request):
        return await self._answer(request, self.service.completions)

    @api.post("/v1/translations")
    async def translations(self, request: Request):
        return await self._answer(request, self.service.translations)

    @api.get("/v1/models")
    async def models(self):
        return JSONResponse(self.service.list_models(), headers={"x-parley-replica": self.replica})

    @api.get("/v1/models/{model_id:path}")
    async def model(self, model_id: str):
        try:
            return JSONResponse(self.service.get_model(model_id), headers={"x-parley-replica": self.replica})
        except ApiError as e:
            return _error_response(e, self.replica)

    @api.get("/health")
    async def health(self):
        doc = dict(self.service.health(), replica=self.replica)
        return JSONResponse(doc, status_code=200 if doc["status"] == "ok" else 503,
                            headers={"x-parley-replica": self.replica})

    @api.get("/v1/parley/stats")
    async def stats(self):
        """This replica's counters (requests, tokens, the serving engine's): one replica per call."""
        return JSONResponse(dict(replica=self.replica, requests_in_flight=self.service.in_flight,
                                 client_disconnects=self.service.client_disconnects, models=self.service.stats()),
                            headers={"x-parley-replica": self.replica})


def build_app(
    models: Mapping[str, str],
    *,
    num_replicas: int = 1,
    autoscaling: Mapping[str, Any] | None = None,
    max_ongoing_requests: int = 64,
    max_queued_requests: int = -1,
    num_cpus: float = 1.0,
    threads: int | None = None,
    device: str = "cpu",
    max_tokens: int = 1024,
    max_body_bytes: int = 1 << 20,
    request_timeout_s: float | None = None,
    context: str = "error",
):
    """A Ray Serve application of `models` ({name: path of a .parley file}).

    ``num_replicas`` fixed replicas, or ``autoscaling`` (Ray Serve's
    autoscaling_config, e.g. ``{"min_replicas": 1, "max_replicas": 4,
    "target_ongoing_requests": 16}``: replicas are added while the requests in
    flight or queued per replica stay above the target). A replica takes at
    most ``max_ongoing_requests`` at once (more wait in Serve's queue, up to
    ``max_queued_requests``, -1: no limit; beyond it Serve answers 503).
    ``num_cpus``: the Ray CPUs a replica reserves; ``threads`` its Parley
    thread pool (default: ``num_cpus`` rounded up). ``context``: ``"error"``
    or ``"drop_oldest"``, as ``parley serve --context``.
    """
    if not models:
        raise ValueError("build_app: at least one model is required ({name: path})")
    missing = [p for p in models.values() if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"build_app: no such model file: {', '.join(map(str, missing))}")
    opts: dict[str, Any] = {"max_ongoing_requests": max_ongoing_requests, "max_queued_requests": max_queued_requests,
                            "ray_actor_options": {"num_cpus": num_cpus}}
    if autoscaling is not None:
        opts["autoscaling_config"] = dict(autoscaling)
    else:
        opts["num_replicas"] = num_replicas
    return ParleyDeployment.options(**opts).bind(
        {k: os.path.abspath(v) for k, v in models.items()},
        threads=threads if threads is not None else max(1, math.ceil(num_cpus)),
        device=device, max_tokens=max_tokens, max_body_bytes=max_body_bytes, request_timeout_s=request_timeout_s,
        context=context)


def app_builder(args: dict[str, str]):
    """For ``serve run parley.ray_serve:app_builder models=NAME=PATH,... [num_replicas=N]
    [min_replicas=A max_replicas=B target_ongoing_requests=T] [max_ongoing_requests=M] [num_cpus=C]
    [threads=T] [max_tokens=K] [context=error|drop_oldest]``."""
    args = dict(args)
    spec = args.pop("models", "")
    models = {}
    for item in filter(None, spec.split(",")):
        name, sep, path = item.partition("=")
        if not sep:
            path = name
            name = os.path.basename(path).removesuffix(".parley")
        models[name] = path
    auto = {k: float(args.pop(k)) if k == "target_ongoing_requests" else int(args.pop(k))
            for k in ("min_replicas", "max_replicas", "target_ongoing_requests") if k in args}
    kw: dict[str, Any] = {}
    for k, conv in (("num_replicas", int), ("max_ongoing_requests", int), ("max_queued_requests", int),
                    ("num_cpus", float), ("threads", int), ("max_tokens", int), ("device", str),
                    ("request_timeout_s", float), ("context", str)):
        if k in args:
            kw[k] = conv(args.pop(k))
    if args:
        raise ValueError(f"app_builder: unknown argument(s) {sorted(args)}")
    return build_app(models, autoscaling=auto or None, **kw)
