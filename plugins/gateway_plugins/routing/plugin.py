"""``routing``: sends each OpenAI-style request to a deployment of the model it names.

For ``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings`` and
``/v1/responses`` the body's ``model`` is looked up in the model table
(`routing.config`); the request goes to one of that model's deployments with
``model`` rewritten to the deployment's name, on that deployment's upstream
(its URL, headers, proxy and timeouts) and in its kind's dialect (OpenAI or
Azure, `routing.kinds`).  A name that matches nothing is answered 404
``model_not_found`` before any upstream is called.  ``GET /v1/models`` lists the
public models the caller's key may use.

When a deployment fails before the first byte of its answer reached the client
(it cannot be reached, times out before its head, or answers 5xx or 429), the
request is sent again, body replayed, to the next deployment of the attempt
plan (`routing.plan`), up to ``max_attempts``; the last failure passes to the
client as it came.  Failures feed the outlier detector (`routing.health`).
The answer names the deployment that gave it in ``x-gateway-deployment``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import attrs
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway.api import (
    BadRequest,
    Exchange,
    Forbidden,
    GatewayConfig,
    GatewayContext,
    GatewayError,
    Plugin,
    ServiceUnavailable,
    TooManyRequests,
    UpstreamConfig,
    UpstreamError,
)

from .config import RoutingConfig
from .health import InFlight, OutlierDetector
from .kinds import ROUTED_PATHS, UpstreamRequest, map_request
from .limits import DeploymentLimits
from .models_list import ModelNotFound, model_answer, models_answer
from .plan import attempt_plan
from .table import Deployment, ModelTable, PublicModel

__all__ = ["DEPLOYMENT_HEADER", "Routing"]

#: The response header naming the deployment that answered.
DEPLOYMENT_HEADER = "x-gateway-deployment"
_STATE = "routing"
_MODELS_PATH = "/v1/models"


@attrs.define
class _Attempts:
    """One request's way through its attempt plan, kept in ``ex.state``."""

    body: dict[str, Any]
    asked: str
    plan: Sequence[tuple[PublicModel, Deployment]]
    #: The headers the pipeline gave the request, without any upstream's own
    #: (kept for the next attempts: ``None`` when the plan has no next one).
    headers: CIMultiDict[str] | None
    #: The ``model`` the body sent upstream carries now.
    sent_model: str = ""
    tried: int = 0
    current: Deployment | None = None
    #: Seconds until a deployment skipped for its limits may take requests again.
    #: (A tuple: no list made per request for a case that is rare.)
    limited: tuple[float, ...] = ()


class Routing(Plugin):
    """Routes requests by model over deployments, with fallbacks and outlier ejection.

    The config (``[plugins.routing]``) is documented in `RoutingConfig`.  Put
    ``routing`` after ``auth`` in the pipeline: keys' ``models`` apply to the
    public names clients use, and the deployment's credential replaces the one
    ``auth`` chose.
    """

    name = "routing"
    Config = RoutingConfig

    def __init__(self, config: RoutingConfig, *, rng: random.Random | None = None) -> None:
        super().__init__(config)
        config.check()
        self.table = ModelTable.of(config.models, config.upstreams)
        detection = config.outlier_detection
        self.outliers = OutlierDetector(
            detection.consecutive_failures, detection.base_ejection, detection.max_ejection
        )
        self.in_flight = InFlight()
        self.limits = DeploymentLimits(
            self.table.deployments(),
            store=config.store,
            redis_url=config.redis_url,
            key_prefix=config.key_prefix,
        )
        self.rng = rng or random.Random()  # noqa: S311 (load spreading, not secrecy)
        self.upstreams: dict[str, UpstreamConfig] = {}
        # Made once: a model with one deployment and no fallbacks has one plan, and
        # deployments without limits are never asked (instructions per request, see
        # bench/instructions.sh only:routing).
        self._fixed_plans = {
            m.name: ((m, m.deployments[0]),)
            for m in self.table.models.values()
            if len(m.deployments) == 1 and not m.fallbacks
        }
        self._limited = self.limits.active
        self._targets: dict[tuple[str, str], tuple[URL, UpstreamRequest]] = {}

    def needs_usage(self) -> bool:
        """The tokens of each answer count against its deployment's ``tpm``."""
        return bool(self.limits.tpm)

    @property
    def per_process_state(self) -> str | None:
        """What ``gateway run --workers N`` warns about: what each worker learns alone."""
        if self.limits.rules and self.limits.store_kind == "memory":
            shared = "rpm limits (set redis_url to share them), "
        else:
            shared = ""
        return (
            f"routing: with --workers N each worker keeps its own {shared}deployment health "
            "(outlier ejection), requests in flight and tpm counts"
        )

    def status(self) -> dict[str, Any]:
        """Each deployment's live state in this process: open requests and health.

        (For status pages; names only, never a credential.)
        """
        health = self.outliers.status()
        return {
            "deployments": {
                name: {
                    "upstream": deployment.upstream,
                    "in_flight": self.in_flight[name],
                    **health.get(
                        name, {"consecutive_failures": 0, "ejections": 0, "ejected_for": 0.0}
                    ),
                }
                for name, deployment in self.table.deployments().items()
            }
        }

    def check(self, config: GatewayConfig) -> list[str]:
        unknown = sorted(self.config.upstream_names() - set(config.upstreams))
        if unknown:
            return [f"unknown upstream(s) {', '.join(unknown)} (see [upstreams])"]
        return []

    async def startup(self, context: GatewayContext) -> None:
        self.upstreams = dict(context.config.upstreams)
        await self.limits.start()

    async def shutdown(self) -> None:
        await self.limits.close()

    async def on_request(self, ex: Exchange) -> web.StreamResponse | None:
        path = ex.path
        if ex.method == "GET" and (path == _MODELS_PATH or path.startswith(_MODELS_PATH + "/")):
            return self.answer_models(ex, path)
        if ex.method != "POST" or path not in ROUTED_PATHS:
            return None
        body = await ex.json()
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        asked = body.get("model")
        if not isinstance(asked, str) or not asked:
            raise BadRequest("you must provide a model parameter")
        model = self.table.find(asked)
        if model is None:
            raise ModelNotFound(asked)
        allowed = ex.identity.allowed_models if ex.identity is not None else None
        if allowed is not None and asked not in allowed:
            raise Forbidden(f"client {ex.identity.name!r} may not use model {asked!r}")  # type: ignore[union-attr]
        plan = self._fixed_plans.get(model.name) or attempt_plan(
            self.table,
            model,
            strategy=self.config.routing_strategy,
            max_attempts=self.config.max_attempts,
            outliers=self.outliers,
            in_flight=self.in_flight,
            rng=self.rng,
        )
        headers = None
        if len(plan) > 1:  # (a single deployment is never tried again: no copy to keep)
            headers = CIMultiDict(ex.upstream_headers)
            for name in ex.upstream.headers if ex.upstream is not None else ():
                headers.popall(name, None)
        attempts = _Attempts(body, asked, plan, headers, sent_model=asked)
        ex.state[_STATE] = attempts
        if not await self.next_deployment(ex, attempts):
            if attempts.limited:
                retry_after = max(1, round(min(attempts.limited)))
                raise TooManyRequests(
                    f"every deployment of model {asked!r} is at its limit; try again later",
                    headers={"Retry-After": str(retry_after)},
                )
            raise ServiceUnavailable(f"model {asked!r} has no deployment to send to")
        return None

    async def on_response(self, ex: Exchange) -> None:
        attempts: _Attempts | None = ex.state.get(_STATE)
        if attempts is None or attempts.current is None:
            return
        status = ex.upstream_status
        if status is not None and (status == 429 or status >= 500):
            self.outliers.failure(attempts.current.name)
            if ex.can_retry and await self.next_deployment(ex, attempts):
                ex.retry()
                return
        elif status is not None:
            self.outliers.success(attempts.current.name)
        if ex.response_headers is not None:
            ex.response_headers[DEPLOYMENT_HEADER] = attempts.current.name

    async def on_upstream_error(self, ex: Exchange, error: GatewayError) -> None:
        """The deployment could not be reached or timed out before its head: try the next."""
        attempts: _Attempts | None = ex.state.get(_STATE)
        if attempts is None or attempts.current is None:
            return
        self.outliers.failure(attempts.current.name)
        if ex.can_retry and await self.next_deployment(ex, attempts):
            ex.retry()

    async def on_complete(self, ex: Exchange, error: BaseException | None) -> None:
        attempts: _Attempts | None = ex.state.pop(_STATE, None)
        if attempts is None or attempts.current is None:
            return
        current = attempts.current
        self.in_flight.end(current.name)
        if isinstance(error, UpstreamError) and ex.upstream_status is not None:
            self.outliers.failure(current.name)  # the answer broke off mid-body
        if ex.usage is not None:
            self.limits.used(current, ex.usage.total_tokens)

    def answer_models(self, ex: Exchange, path: str) -> web.Response:
        allowed = ex.identity.allowed_models if ex.identity is not None else None
        if path == _MODELS_PATH:
            return models_answer(self.table.listed(), allowed)
        return model_answer(path[len(_MODELS_PATH) + 1 :], self.table.listed(), allowed)

    async def next_deployment(self, ex: Exchange, attempts: _Attempts) -> bool:
        """Point the request at the next deployment of the plan that admits it."""
        while attempts.tried < len(attempts.plan):
            _, deployment = attempts.plan[attempts.tried]
            attempts.tried += 1
            wait = None
            if self._limited:
                wait = await self.limits.admit(deployment, f"{ex.request_id}:{attempts.tried}")
            if wait is not None:
                attempts.limited += (wait,)
                continue
            self.send_to(ex, attempts, deployment)
            return True
        return False

    def send_to(self, ex: Exchange, attempts: _Attempts, deployment: Deployment) -> None:
        """Rewrite the request for ``deployment``: its upstream, path, credential and model."""
        first = attempts.current is None
        if attempts.current is not None:
            self.in_flight.end(attempts.current.name)
        attempts.current = deployment
        ex.deployment = deployment.name  # for the access log and metrics
        self.in_flight.start(deployment.name)
        url, mapped = self.target(deployment, ex.path, attempts.asked)
        # From the headers the request came with each time: one deployment's
        # credential never follows the request to the next.  (The first attempt
        # changes the request's own headers: they are those.)
        if first:
            headers = ex.upstream_headers
        else:
            assert attempts.headers is not None  # (a next attempt: the plan had more than one)
            headers = CIMultiDict(attempts.headers)
        for name in mapped.remove_headers:
            headers.popall(name, None)
        headers.update(mapped.set_headers)
        ex.use_upstream(self.upstreams[deployment.upstream], url, None if first else headers)
        if mapped.model != attempts.sent_model:  # (an unchanged body is not written again)
            ex.set_json({**attempts.body, "model": mapped.model})
            attempts.sent_model = mapped.model

    def target(self, deployment: Deployment, path: str, asked: str) -> tuple[URL, UpstreamRequest]:
        """The URL and the changes of a request for ``path`` to ``deployment``.

        Cached per deployment and path when the deployment names its model (the
        cache then holds at most four entries per deployment).
        """
        key = (deployment.name, path)
        cacheable = deployment.model is not None
        if cacheable and key in self._targets:
            return self._targets[key]
        mapped = map_request(
            deployment.kind,
            path,
            deployment.upstream_model(asked),
            api_key=deployment.api_key,
            api_version=deployment.api_version,
        )
        upstream = self.upstreams[deployment.upstream]
        url = URL(upstream.url.rstrip("/") + mapped.path, encoded=True)
        if mapped.query:
            url = url.update_query(mapped.query)
        if cacheable:
            self._targets[key] = (url, mapped)
        return url, mapped
