"""Route patterns, normalisation and matching order."""

from __future__ import annotations

import pytest

from gateway.config import RouteConfig
from gateway.paths import PathPattern, encode_path, normalize_path
from gateway.routing import REMEMBERED, Router


def test_parameters_and_tail():
    assert PathPattern("/conversation/{id}").match("/conversation/abc") == {"id": "abc"}
    assert PathPattern("/conversation/{id}").match("/conversation/a/b") is None
    assert PathPattern("/v1/{rest*}").match("/v1/chat/completions") == {"rest": "chat/completions"}
    assert PathPattern("/v1/{rest*}").match("/v1/") == {"rest": ""}
    assert PathPattern("/v1/{rest*}").match("/v2/x") is None


@pytest.mark.parametrize("bad", ["no-slash", "/a/{x*}/b", "/a/{x}/{x}", "/a/{bad"])
def test_bad_patterns_are_refused(bad):
    with pytest.raises(ValueError):
        PathPattern(bad)


def test_fill_template():
    assert PathPattern.fill("/v1/{rest}", {"rest": "models/x"}) == "/v1/models/x"


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/a/b", "/a/b"),
        ("/a//b", "/a/b"),
        ("//a", "/a"),
        ("/a/./b/", "/a/b/"),
        ("/a/../../b", "/b"),
        ("/public/../private", "/private"),
    ],
)
def test_normalize(raw, normal):
    assert normalize_path(raw) == normal


def test_encode_keeps_reserved_and_quotes_the_rest():
    assert encode_path("/a b/ü?#") == "/a%20b/%C3%BC%3F%23"


def test_first_matching_route_wins_and_methods_filter():
    router = Router(
        [
            ("get_one", RouteConfig(path="/c/{id}", methods=("GET",))),
            ("feedback", RouteConfig(path="/c/message_feedback", methods=("POST",))),
            ("any", RouteConfig(path="/{rest*}")),
        ]
    )
    assert router.match("GET", "/c/1").name == "get_one"
    assert router.match("POST", "/c/message_feedback").name == "feedback"
    assert router.match("HEAD", "/c/1").name == "get_one"
    assert router.match("DELETE", "/c/1").name == "any"


def test_path_only_match_is_reported_for_405():
    router = Router([("r", RouteConfig(path="/x", methods=("GET", "POST")))])
    match = router.match("DELETE", "/x")
    assert match is not None and not match.method_allowed
    assert router.allowed_methods("/x") == ["GET", "POST"]
    assert router.match("GET", "/y") is None


def test_matches_are_remembered_and_give_the_same_answer_again():
    router = Router(
        [
            ("get_one", RouteConfig(path="/c/{id}", methods=("GET",))),
            ("any", RouteConfig(path="/{rest*}")),
        ]
    )
    first = [router.match(m, p) for m, p in [("GET", "/c/1"), ("POST", "/c/1"), ("GET", "/")]]
    again = [router.match(m, p) for m, p in [("GET", "/c/1"), ("POST", "/c/1"), ("GET", "/")]]
    assert again == first
    assert [m.name for m in again if m] == ["get_one", "any", "any"]
    assert router.match("GET", "/c/1").params == {"id": "1"}


def test_remembered_matches_are_bounded():
    router = Router([("r", RouteConfig(path="/x/{id}"))])
    for i in range(REMEMBERED * 3):  # a client inventing paths
        assert router.match("GET", f"/x/{i}").params == {"id": str(i)}
    assert len(router._seen) <= REMEMBERED
    assert router.match("GET", "/y") is None and router.match("GET", "/y") is None
