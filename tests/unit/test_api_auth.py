"""The portal API's pure parts: token comparison, the token setting, problem shapes."""

from __future__ import annotations

import hmac

import pytest

from tests.support import fnr
from worker.entrypoints.api import auth
from worker.entrypoints.api.auth import patient_id, token_matches
from worker.entrypoints.api.problems import ApiProblem, field_problems, problem
from worker.settings import Settings

TOKENS = ("first-token", "second-token", "third-token")


@pytest.mark.parametrize("given", TOKENS)
def test_each_configured_token_matches(given: str) -> None:
    assert token_matches(given, TOKENS)


@pytest.mark.parametrize("given", ["", "first-toke", "first-tokenx", "FIRST-TOKEN", "x"])
def test_anything_else_does_not(given: str) -> None:
    assert not token_matches(given, TOKENS)


def test_no_tokens_configured_matches_nothing() -> None:
    assert not token_matches("", ())
    assert not token_matches("anything", ())


@pytest.mark.parametrize("given", ["first-token", "third-token", "wrong"])
def test_every_token_is_compared_whichever_matches(
    monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    calls: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    token_matches(given, TOKENS)
    assert calls == [t.encode() for t in TOKENS]  # no early exit on the first match


def test_token_setting_is_comma_separated_and_secret() -> None:
    settings = Settings(api_tokens=" a-token , ,b-token,")
    assert settings.api_token_list == ("a-token", "b-token")
    assert "a-token" not in repr(settings)
    assert Settings(api_tokens="").api_token_list == ()


def test_api_defaults() -> None:
    settings = Settings()
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8080)
    assert settings.api_max_body_bytes == 64 * 1024


def test_patient_id_accepts_a_valid_number() -> None:
    assert patient_id(fnr(5)) == fnr(5)
    assert patient_id(f" {fnr(5)} ") == fnr(5)


@pytest.mark.parametrize("value", [None, "", "123", "abcdefghijk", fnr(5)[:-1] + "x"])
def test_patient_id_refuses_without_echoing_the_value(value: str | None) -> None:
    with pytest.raises(ApiProblem) as caught:
        patient_id(value)
    assert caught.value.status == 400
    if value:
        assert value not in str(caught.value.detail)


def test_problem_shape() -> None:
    resp = problem(None, 404, "no booking with id x")
    assert resp.media_type == "application/problem+json"
    assert resp.status_code == 404
    assert resp.body == (
        b'{"type":"about:blank","title":"Not Found","status":404,"detail":"no booking with id x"}'
    )
    named = problem(None, 503, slug="busy", headers={"Retry-After": "1"})
    assert named.headers["retry-after"] == "1"
    assert b'"type":"urn:timebok:problem:busy"' in named.body


def test_field_problems_never_carry_the_input() -> None:
    errors = [{"loc": ("query", "from"), "msg": "Input should be a valid date", "input": "x"}]
    assert [(e.field, e.message) for e in field_problems(errors)] == [
        ("query.from", "Input should be a valid date")
    ]
    number = fnr(6)
    masked = list(field_problems([{"loc": ("body", number), "msg": f"bad {number}"}]))
    assert number not in masked[0].field and number not in masked[0].message
