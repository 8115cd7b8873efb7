"""JSON paths for the ``rewrite`` plugin's body rules."""

from __future__ import annotations

from typing import Any

import pytest

from gateway_plugins.rewrite.jsonpath import JsonPath, json_equal


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("model", ("model",)),
        ("messages[*].author.role", ("messages", None, "author", "role")),
        ("a[0][-1].b", ("a", 0, -1, "b")),
        ("x-y.$z", ("x-y", "$z")),
    ],
)
def test_parse(text: str, steps: tuple[Any, ...]) -> None:
    assert JsonPath(text).steps == steps


@pytest.mark.parametrize("text", ["", ".a", "[0]", "a..b", "a.", "a[", "a[x]", "a]", "a[*]b"])
def test_malformed_paths_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="JSON path"):
        JsonPath(text)


def test_default_creates_objects_under_existing_elements_only() -> None:
    body: dict[str, Any] = {"messages": [{}, {"author": {}}]}
    assert JsonPath("messages[*].author.role").set_default(body, "user")
    assert body == {"messages": [{"author": {"role": "user"}}, {"author": {"role": "user"}}]}
    empty: dict[str, Any] = {}
    assert not JsonPath("messages[*].author.role").set_default(empty, "user")
    assert empty == {}


def test_default_does_not_leave_empty_objects_where_it_cannot_set() -> None:
    body: dict[str, Any] = {}
    assert not JsonPath("a.b[0]").set_default(body, 1)
    assert body == {}


def test_default_keeps_present_values_even_null() -> None:
    body = {"a": None, "b": {"c": 0}}
    assert not JsonPath("a").set_default(body, 1)
    assert not JsonPath("b.c").set_default(body, 1)
    assert body == {"a": None, "b": {"c": 0}}


@pytest.mark.parametrize("body", [{"a": 3}, {"a": [1]}, {"a": "s"}, {"a": {"b": [1]}}])
def test_wrong_types_are_skipped(body: dict[str, Any]) -> None:
    before = repr(body)
    assert not JsonPath("a.b.c").set_default(body, 1)
    assert not JsonPath("a[*].c").force(body, 1)
    assert repr(body) == before


def test_force_replaces_every_element_and_reports_no_change_when_equal() -> None:
    body = {"a": [1, 2]}
    assert JsonPath("a[*]").force(body, 0)
    assert body == {"a": [0, 0]}
    assert not JsonPath("a[*]").force(body, 0)
    assert not JsonPath("a[5]").force(body, 0)


def test_remove_by_index_wildcard_and_key() -> None:
    body: dict[str, Any] = {"a": [1, 2, 3], "b": [{"x": 1, "y": 2}, {"y": 3}], "c": 1}
    assert JsonPath("a[-1]").remove(body)
    assert JsonPath("b[*].y").remove(body)
    assert JsonPath("c").remove(body)
    assert not JsonPath("c").remove(body)
    assert body == {"a": [1, 2], "b": [{"x": 1}, {}]}
    assert JsonPath("a[*]").remove(body)
    assert body["a"] == []


def test_empty_to_null_touches_only_empty_strings() -> None:
    body = {"a": "", "b": "x", "c": 0, "d": ["", None, "y"]}
    assert JsonPath("a").empty_to_null(body)
    assert not JsonPath("b").empty_to_null(body)
    assert not JsonPath("c").empty_to_null(body)
    assert JsonPath("d[*]").empty_to_null(body)
    assert body == {"a": None, "b": "x", "c": 0, "d": [None, None, "y"]}


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1, 1.0, True),
        (1, True, False),
        ({"a": [True]}, {"a": [1]}, False),
        ({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}, True),
        ([1], {"0": 1}, False),
        ("1", 1, False),
    ],
)
def test_json_equal(a: Any, b: Any, equal: bool) -> None:
    assert json_equal(a, b) is equal
