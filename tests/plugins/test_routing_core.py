"""The routing family's request-independent core: table, plan, health, upstream kinds."""

from __future__ import annotations

import random
from collections import Counter

import attrs
import pytest

from gateway.config import structure
from gateway_plugins.routing import Routing
from gateway_plugins.routing.config import RoutingConfig
from gateway_plugins.routing.health import InFlight, OutlierDetector
from gateway_plugins.routing.kinds import map_request
from gateway_plugins.routing.limits import DeploymentLimits
from gateway_plugins.routing.plan import attempt_plan, weighted_order
from gateway_plugins.routing.table import ModelTable

TABLE = {
    "routing_strategy": "weighted",
    "upstreams": {"azure": {"kind": "azure", "api_version": "2024-10-21", "api_key": "az"}},
    "models": {
        "gpt-4o": {
            "fallbacks": ["gpt-4o-mini"],
            "deployments": [
                {"upstream": "openai", "model": "gpt-4o-2024-08-06", "weight": 3},
                {"upstream": "azure", "model": "gpt4o-east", "weight": 1, "rpm": 60},
            ],
        },
        "gpt-4o-mini": {"deployments": [{"upstream": "local", "model": "llama3"}]},
        "gpt-4o*": {"deployments": [{"upstream": "openai"}]},
        "gpt-4o-mini*": {"deployments": [{"upstream": "local", "model": "qwen"}]},
    },
}


def routing_config(data: dict[str, object] = TABLE) -> RoutingConfig:
    config, problems = structure(data, RoutingConfig, "$.plugins.routing")
    assert problems == []
    config.check()
    return config  # type: ignore[no-any-return]


def table(config: RoutingConfig | None = None) -> ModelTable:
    config = config or routing_config()
    return ModelTable.of(config.models, config.upstreams)


def test_config_reads_durations_and_rejects_typos() -> None:
    config = routing_config({**TABLE, "outlier_detection": {"base_ejection": "10s"}})
    assert config.outlier_detection.base_ejection == 10.0
    assert config.outlier_detection.max_ejection == 300.0
    _, problems = structure(
        {"models": {"m": {"deployments": [{"upstream": "u", "wieght": 2}]}}},
        RoutingConfig,
        "$.plugins.routing",
    )
    assert any("wieght" in p for p in problems)
    _, problems = structure({"max_attempts": 0}, RoutingConfig, "$.plugins.routing")
    assert any("max_attempts" in p for p in problems)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"models": {"a": {"fallbacks": ["b"]}}}, "unknown model 'b'"),
        ({"models": {"a": {}}}, "needs deployments or fallbacks"),
        ({"models": {"a": {"fallbacks": ["a"]}}}, "fall back on itself"),
        (
            {"outlier_detection": {"base_ejection": "1m", "max_ejection": "10s"}},
            "max_ejection",
        ),
    ],
)
def test_config_check_refuses_tables_that_cannot_route(
    data: dict[str, object], problem: str
) -> None:
    config, problems = structure(data, RoutingConfig, "$.plugins.routing")
    assert problems == []
    with pytest.raises(ValueError, match=problem):
        config.check()


def test_exact_name_wins_then_longest_wildcard() -> None:
    models = table()
    assert models.find("gpt-4o").name == "gpt-4o"  # type: ignore[union-attr]
    assert models.find("gpt-4o-mini").name == "gpt-4o-mini"  # type: ignore[union-attr]
    assert models.find("gpt-4o-mini-2024").name == "gpt-4o-mini*"  # type: ignore[union-attr]
    assert models.find("gpt-4o-2024-05-13").name == "gpt-4o*"  # type: ignore[union-attr]
    assert models.find("gpt-3.5-turbo") is None
    assert models.find("gpt-4") is None
    assert models.listed() == ["gpt-4o", "gpt-4o-mini"]


def test_deployments_take_their_upstream_kind_and_names() -> None:
    deployments = table().deployments()
    azure = deployments["azure/gpt4o-east"]
    assert (azure.kind, azure.api_version, azure.api_key, azure.rpm) == (
        "azure",
        "2024-10-21",
        "az",
        60,
    )
    wildcard = deployments["openai/*"]
    assert wildcard.kind == "openai"
    assert wildcard.upstream_model("gpt-4o-2024-05-13") == "gpt-4o-2024-05-13"
    assert azure.upstream_model("gpt-4o") == "gpt4o-east"


def test_weighted_choice_follows_the_weights_with_a_fixed_seed() -> None:
    deployments = table().models["gpt-4o"].deployments  # weights 3 and 1
    rng = random.Random(1234)
    firsts = Counter(weighted_order(deployments, rng)[0].name for _ in range(4000))
    share = firsts["openai/gpt-4o-2024-08-06"] / 4000
    # 0.75 expected; with this seed the share is fixed, and 3 sigma is about 0.02.
    assert 0.73 < share < 0.77
    assert set(firsts) == {"openai/gpt-4o-2024-08-06", "azure/gpt4o-east"}


def plan_names(models: ModelTable, name: str, **kwargs: object) -> list[str]:
    settings: dict[str, object] = {
        "strategy": "weighted",
        "max_attempts": 8,
        "outliers": OutlierDetector(3, 30, 300),
        "in_flight": InFlight(),
        "rng": random.Random(7),
        **kwargs,
    }
    model = models.find(name)
    assert model is not None
    return [d.name for _, d in attempt_plan(models, model, **settings)]  # type: ignore[arg-type]


def test_plan_tries_own_deployments_then_fallbacks_at_most_max_attempts() -> None:
    models = table()
    plan = plan_names(models, "gpt-4o")
    assert set(plan[:2]) == {"openai/gpt-4o-2024-08-06", "azure/gpt4o-east"}
    assert plan[2:] == ["local/llama3"]
    assert len(plan_names(models, "gpt-4o", max_attempts=2)) == 2


def test_plan_skips_ejected_deployments_unless_all_are() -> None:
    models = table()
    clock = [0.0]
    outliers = OutlierDetector(1, 30, 300, clock=lambda: clock[0])
    outliers.failure("azure/gpt4o-east")
    plan = plan_names(models, "gpt-4o", outliers=outliers)
    assert plan == ["openai/gpt-4o-2024-08-06", "local/llama3"]
    clock[0] = 1.0
    outliers.failure("openai/gpt-4o-2024-08-06")
    outliers.failure("local/llama3")
    outliers.failure("azure/gpt4o-east")  # already ejected: no longer
    # Everything is out: the soonest back is tried first (panic mode).
    assert plan_names(models, "gpt-4o", outliers=outliers)[0] == "azure/gpt4o-east"


def test_least_in_flight_prefers_the_idlest() -> None:
    models = table()
    in_flight = InFlight()
    in_flight.start("openai/gpt-4o-2024-08-06")
    plan = plan_names(models, "gpt-4o", strategy="least_in_flight", in_flight=in_flight)
    assert plan[0] == "azure/gpt4o-east"
    in_flight.start("azure/gpt4o-east")
    in_flight.start("azure/gpt4o-east")
    plan = plan_names(models, "gpt-4o", strategy="least_in_flight", in_flight=in_flight)
    assert plan[0] == "openai/gpt-4o-2024-08-06"
    in_flight.end("azure/gpt4o-east")
    in_flight.end("azure/gpt4o-east")
    assert in_flight["azure/gpt4o-east"] == 0


def test_outlier_ejection_grows_and_ends_on_its_own() -> None:
    clock = [0.0]
    outliers = OutlierDetector(2, 10, 25, clock=lambda: clock[0])
    assert not outliers.failure("d")
    assert outliers.failure("d")  # the second failure in a row ejects
    assert outliers.is_ejected("d")
    clock[0] = 10.0
    assert not outliers.is_ejected("d")  # back after base_ejection
    outliers.failure("d")
    assert outliers.failure("d")  # ejected again: twice as long
    assert outliers.ejected_until("d") == 30.0
    clock[0] = 30.0
    outliers.failure("d")
    outliers.failure("d")
    assert outliers.ejected_until("d") == 55.0  # capped at max_ejection
    # A success ends a run of failures: one failure alone does not eject.
    clock[0] = 60.0
    outliers.failure("d")
    outliers.success("d")
    assert not outliers.failure("d")
    assert not outliers.is_ejected("d")


def test_outlier_multiplier_decays_while_healthy() -> None:
    clock = [0.0]
    outliers = OutlierDetector(1, 10, 100, clock=lambda: clock[0])
    outliers.failure("d")
    clock[0] = 10.0
    outliers.failure("d")
    assert outliers.ejected_until("d") == 30.0
    clock[0] = 60.0  # healthy for three periods since it came back at 30
    outliers.success("d")
    outliers.failure("d")
    assert outliers.ejected_until("d") == 70.0  # back to the base ejection


def test_openai_kind_keeps_the_path_and_sends_a_bearer() -> None:
    mapped = map_request("openai", "/v1/chat/completions", "llama3", api_key="sk-1")
    assert mapped.path == "/v1/chat/completions"
    assert mapped.query == {}
    assert mapped.set_headers == {"Authorization": "Bearer sk-1"}
    assert mapped.remove_headers == ("api-key",)
    assert mapped.model == "llama3"
    keep = map_request("openai", "/v1/embeddings", "e", api_key=None)
    assert keep.set_headers == {} and keep.remove_headers == ()


@pytest.mark.parametrize(
    ("path", "upstream_path"),
    [
        ("/v1/chat/completions", "/openai/deployments/gpt4o%2Feast/chat/completions"),
        ("/v1/completions", "/openai/deployments/gpt4o%2Feast/completions"),
        ("/v1/embeddings", "/openai/deployments/gpt4o%2Feast/embeddings"),
        ("/v1/responses", "/openai/responses"),
    ],
)
def test_azure_kind_puts_the_deployment_in_the_path(path: str, upstream_path: str) -> None:
    mapped = map_request("azure", path, "gpt4o/east", api_key="az", api_version="2024-10-21")
    assert mapped.path == upstream_path
    assert mapped.query == {"api-version": "2024-10-21"}
    assert mapped.set_headers == {"api-key": "az"}
    assert mapped.remove_headers == ("Authorization",)


async def test_tpm_skips_a_deployment_for_the_rest_of_its_minute() -> None:
    now = [600.0]
    models = table(
        routing_config(
            {"models": {"m": {"deployments": [{"upstream": "u", "model": "x", "tpm": 100}]}}}
        )
    )
    deployment = models.deployments()["u/x"]
    limits = DeploymentLimits(
        models.deployments(), store="memory", redis_url="", key_prefix="t:", clock=lambda: now[0]
    )
    await limits.start()
    assert await limits.admit(deployment, "r1") is None
    limits.used(deployment, 60)
    assert await limits.admit(deployment, "r2") is None
    limits.used(deployment, 60)  # 120: over, the answer's size was unknown beforehand
    now[0] = 615.0
    assert await limits.admit(deployment, "r3") == 45.0
    now[0] = 660.0  # a new minute
    assert await limits.admit(deployment, "r4") is None
    await limits.close()


async def test_rpm_admits_a_minute_of_requests_then_says_when() -> None:
    models = table(
        routing_config(
            {"models": {"m": {"deployments": [{"upstream": "u", "model": "x", "rpm": 3}]}}}
        )
    )
    deployment = models.deployments()["u/x"]
    limits = DeploymentLimits(models.deployments(), store="memory", redis_url="", key_prefix="r:")
    await limits.start()
    assert [await limits.admit(deployment, f"r{i}") for i in range(3)] == [None, None, None]
    wait = await limits.admit(deployment, "r4")
    assert wait is not None and 0 < wait <= 20.0  # one request every 20 s at 3 a minute
    await limits.close()


def test_workers_are_told_what_each_keeps_alone() -> None:
    config = routing_config()  # an rpm limit on the in-process store
    message = Routing(config).per_process_state
    assert message is not None
    assert "rpm limits" in message and "deployment health" in message
    redis = attrs.evolve(config, store="redis", redis_url="redis://127.0.0.1:1/0")
    assert "rpm" not in (Routing(redis).per_process_state or "")


def test_deployments_of_one_name_must_be_one_deployment() -> None:
    same = {"upstream": "u", "model": "x"}
    config = routing_config(
        {"models": {"a": {"deployments": [same]}, "b": {"deployments": [same]}}}
    )
    assert table(config).models["a"].deployments == table(config).models["b"].deployments
    other = routing_config(
        {"models": {"a": {"deployments": [same]}, "b": {"deployments": [{**same, "rpm": 5}]}}}
    )
    with pytest.raises(ValueError, match=r"models.b.deployments\[0\]: another deployment"):
        table(other)
