"""The model table, resolved: which public model a name is, and its deployments.

A name matches an exact entry first; otherwise the wildcard entries (``*``
stands for any run of characters) are tried longest pattern first, so
``gpt-4o-mini*`` wins over ``gpt-4o*`` for ``gpt-4o-mini-2024``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import attrs

from .config import DeploymentConfig, ModelConfig, UpstreamKind, UpstreamKindConfig

__all__ = ["Deployment", "ModelTable", "PublicModel"]


@attrs.frozen
class Deployment:
    """One deployment, ready to route to."""

    #: Unique in the table's health and load bookkeeping, and shown in the response header.
    name: str
    upstream: str
    #: The model name sent upstream; ``None``: the name the client asked for.
    model: str | None
    weight: float
    kind: UpstreamKind = "openai"
    api_version: str = ""
    api_key: str | None = attrs.field(default=None, repr=False)
    rpm: int | None = None
    tpm: int | None = None

    def upstream_model(self, asked: str) -> str:
        """The model name to send upstream for a request that asked for ``asked``."""
        return self.model if self.model is not None else asked

    @classmethod
    def of(cls, config: DeploymentConfig, kinds: Mapping[str, UpstreamKindConfig]) -> Deployment:
        """Resolve a deployment table against the upstream settings."""
        kind = kinds.get(config.upstream, UpstreamKindConfig())
        name = config.name or f"{config.upstream}/{config.model or '*'}"
        return cls(
            name=name,
            upstream=config.upstream,
            model=config.model,
            weight=config.weight,
            kind=kind.kind,
            api_version=kind.api_version,
            api_key=config.api_key if config.api_key is not None else kind.api_key,
            rpm=config.rpm,
            tpm=config.tpm,
        )


@attrs.frozen
class PublicModel:
    """A public model name (or pattern) with its deployments and fallback models."""

    name: str
    deployments: tuple[Deployment, ...]
    fallbacks: tuple[str, ...]

    @property
    def is_pattern(self) -> bool:
        return "*" in self.name


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in name.split("*")), re.DOTALL)


class ModelTable:
    """The public models, looked up by the name a request asks for."""

    def __init__(self, models: Iterable[PublicModel]) -> None:
        self.models = {m.name: m for m in models}
        self._exact = {name: m for name, m in self.models.items() if not m.is_pattern}
        wildcards = sorted(
            (m for m in self.models.values() if m.is_pattern), key=lambda m: -len(m.name)
        )
        self._wildcards = [(_pattern(m.name), m) for m in wildcards]

    @classmethod
    def of(
        cls, models: Mapping[str, ModelConfig], kinds: Mapping[str, UpstreamKindConfig]
    ) -> ModelTable:
        """Build the table from ``[plugins.routing.models]``.

        Deployments of one name share their health and limits, so they must be
        the same deployment (a `ValueError` names the one that is not).
        """
        seen: dict[str, Deployment] = {}
        public = []
        for name, config in models.items():
            deployments = tuple(Deployment.of(d, kinds) for d in config.deployments)
            for index, deployment in enumerate(deployments):
                first = seen.setdefault(deployment.name, deployment)
                if first != deployment:
                    raise ValueError(
                        f"models.{name}.deployments[{index}]: another deployment is named "
                        f"{deployment.name!r}; give one of them its own name"
                    )
            public.append(PublicModel(name, deployments, config.fallbacks))
        return cls(public)

    def find(self, asked: str) -> PublicModel | None:
        """The public model that ``asked`` names: exact first, then the longest wildcard."""
        exact = self._exact.get(asked)
        if exact is not None:
            return exact
        for pattern, model in self._wildcards:
            if pattern.fullmatch(asked):
                return model
        return None

    def listed(self) -> list[str]:
        """The exact public names, in config order (wildcards cannot be listed)."""
        return list(self._exact)

    def deployments(self) -> dict[str, Deployment]:
        """Every deployment of the table, by name."""
        return {d.name: d for m in self.models.values() for d in m.deployments}
