"""Which deployments a request tries, in which order: the attempt plan.

A plan is the public model's own deployments, ordered by the routing strategy,
then each fallback model's, ordered the same way, cut at ``max_attempts``.
Ejected deployments are left out; when that leaves nothing, the ejected ones
are tried after all, the soonest back first (Envoy's panic mode: a request
served by a deployment that may have recovered beats a certain error).

``weighted`` orders by weighted random sampling without replacement (the first
is chosen in proportion to its weight among all, the second among the rest, and
so on); ``least_in_flight`` by the requests each has open, fewest first, ties
in random order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .config import Strategy
from .health import InFlight, OutlierDetector
from .table import Deployment, ModelTable, PublicModel

__all__ = ["attempt_plan", "least_in_flight", "weighted_order"]


def weighted_order(deployments: Sequence[Deployment], rng: random.Random) -> list[Deployment]:
    """``deployments`` in weighted random order, without replacement."""
    left = list(deployments)
    order: list[Deployment] = []
    while left:
        point = rng.random() * sum(d.weight for d in left)
        chosen = len(left) - 1  # where rounding leaves ``point`` past the last weight
        for index, deployment in enumerate(left):
            point -= deployment.weight
            if point < 0:
                chosen = index
                break
        order.append(left.pop(chosen))
    return order


def least_in_flight(
    deployments: Sequence[Deployment], in_flight: InFlight, rng: random.Random
) -> list[Deployment]:
    """``deployments`` by requests open, fewest first; ties in random order."""
    shuffled = list(deployments)
    rng.shuffle(shuffled)
    return sorted(shuffled, key=lambda d: in_flight[d.name])


def attempt_plan(
    table: ModelTable,
    model: PublicModel,
    *,
    strategy: Strategy,
    max_attempts: int,
    outliers: OutlierDetector,
    in_flight: InFlight,
    rng: random.Random,
) -> list[tuple[PublicModel, Deployment]]:
    """The deployments to try for ``model``, each with the public model it serves."""
    if len(model.deployments) == 1 and not model.fallbacks:
        return [(model, model.deployments[0])]  # the common case, tried even if ejected
    # Fallbacks are not followed further (a fallback's own fallbacks serve its own
    # requests only), as in LiteLLM.
    chain = [model, *(table.models[name] for name in model.fallbacks if name in table.models)]
    healthy: list[tuple[PublicModel, Deployment]] = []
    ejected: list[tuple[PublicModel, Deployment]] = []
    seen: set[str] = set()
    for public in chain:
        if strategy == "least_in_flight":
            ordered = least_in_flight(public.deployments, in_flight, rng)
        else:
            ordered = weighted_order(public.deployments, rng)
        for deployment in ordered:
            if deployment.name in seen:
                continue
            seen.add(deployment.name)
            target = ejected if outliers.is_ejected(deployment.name) else healthy
            target.append((public, deployment))
    if not healthy:
        healthy = sorted(ejected, key=lambda pair: outliers.ejected_until(pair[1].name))
    return healthy[:max_attempts]
