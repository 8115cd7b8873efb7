"""How one OpenAI-style request is spoken to each kind of upstream: a pure mapping.

Clients always speak OpenAI to the gateway (``POST /v1/chat/completions`` with
``model`` in the body).  An ``openai`` upstream (OpenAI, vLLM, Ollama, most
compatible services) gets the same path and ``Authorization: Bearer``; an
``azure`` upstream (Azure OpenAI) gets the deployment in the path,
``api-version`` in the query and the credential in ``api-key``::

    /v1/chat/completions  ->  /openai/deployments/{deployment}/chat/completions?api-version=V
    /v1/completions       ->  /openai/deployments/{deployment}/completions?api-version=V
    /v1/embeddings        ->  /openai/deployments/{deployment}/embeddings?api-version=V
    /v1/responses         ->  /openai/responses?api-version=V  (the deployment in ``model``)

In both cases the body's ``model`` becomes the deployment's model name.
"""

from __future__ import annotations

from urllib.parse import quote

import attrs

from .config import UpstreamKind

__all__ = ["ROUTED_PATHS", "UpstreamRequest", "map_request"]

#: The client paths routed by the body's ``model``.
ROUTED_PATHS = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"}
)

# Azure OpenAI's operations that take the deployment in the path.
_AZURE_DEPLOYMENT_OPS = {
    "/v1/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}


@attrs.frozen
class UpstreamRequest:
    """What changes in a request sent to one deployment."""

    #: The path (and query, if any) to append to the upstream's base URL.
    path: str
    query: dict[str, str]
    #: Headers to set (the credential).
    set_headers: dict[str, str] = attrs.field(repr=False)
    #: Headers to remove (another kind's credential header).
    remove_headers: tuple[str, ...]
    #: The body's new ``model``.
    model: str


def map_request(
    kind: UpstreamKind,
    path: str,
    model: str,
    *,
    api_key: str | None,
    api_version: str = "",
) -> UpstreamRequest:
    """The path, query, headers and model a request for ``path`` gets on a ``kind`` upstream.

    ``path`` is one of `ROUTED_PATHS`; ``model`` is the deployment's model name.
    Without ``api_key`` the request keeps the credential the pipeline gave it.
    """
    if kind == "azure":
        operation = _AZURE_DEPLOYMENT_OPS.get(path)
        if operation is None:
            upstream_path = "/openai/" + path.removeprefix("/v1/")
        else:
            upstream_path = f"/openai/deployments/{quote(model, safe='')}/{operation}"
        headers = {"api-key": api_key} if api_key is not None else {}
        removed = ("Authorization",) if api_key is not None else ()
        return UpstreamRequest(upstream_path, {"api-version": api_version}, headers, removed, model)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key is not None else {}
    removed = ("api-key",) if api_key is not None else ()
    return UpstreamRequest(path, {}, headers, removed, model)
