"""sim.inference_api: RFC 9457 problems, 400/429/503 + Retry-After, Deprecation/Sunset, idempotency keys (§20)."""
from __future__ import annotations

import asyncio
import json
import threading
from email.utils import parsedate_to_datetime

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.inference_api import (CHANGE_SETS, ApiConfig, Contract, IdempotencyStore, build_app,
                               generate_v1_requests, measure_catalogue, send_all)

GOOD = {"features": [float(i % 17) for i in range(64)]}


class Clock:
    def __init__(self, t=1_700_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def proba(x):
    assert x.shape == (1, 64) and np.all(np.isfinite(x)) and x.min() >= 0 and x.max() <= 16
    p = np.arange(1, 11, dtype=float)
    return (p / p.sum())[None, :]


def post(app, path, body, headers=None, raw=None):
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.post(path, content=raw if raw is not None else json.dumps(body).encode(),
                                headers={"content-type": "application/json", **(headers or {})})
    return asyncio.run(go())


def test_valid_request_is_predicted_with_top_k():
    app = build_app(proba)
    r = post(app, "/v1/predict", {**GOOD, "top_k": 3, "model_version": "1.5"})
    assert r.status_code == 200
    body = r.json()
    assert body["prediction"] == 9 and [t["label"] for t in body["top"]] == [9, 8, 7]


def test_invalid_request_is_a_problem_document():
    cfg = ApiConfig()
    app = build_app(proba, config=cfg)
    r = post(app, "/v1/predict", {"features": GOOD["features"][:10]})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    p = r.json()
    assert p["status"] == 400 and p["type"].endswith("invalid-request") and p["title"] and p["detail"]
    assert p["instance"] == "/v1/predict" and p["errors"][0]["pointer"] == "#/features"
    assert cfg.counters["model_calls"] == 0


@pytest.mark.parametrize("raw", [b'{"features": [NaN]}', b"not json", b"[1, 2]", b'{"features": "x"}',
                                 json.dumps({**GOOD, "features": GOOD["features"][:63] + [float("nan")]}).encode(),
                                 json.dumps({**GOOD, "top_k": True}).encode()])
def test_malformed_bodies_answer_400_and_never_reach_the_model(raw):
    cfg = ApiConfig()
    r = post(build_app(proba, config=cfg), "/v2/predict" if b"inputs" in raw else "/v1/predict", None, raw=raw)
    assert r.status_code == 400 and cfg.counters["model_calls"] == 0


def test_rate_limited_and_unavailable_answers_carry_retry_after():
    limiter = lambda client, now: 2.2 if client == "greedy" else 0.0  # noqa: E731
    app = build_app(proba, config=ApiConfig(limiter=limiter))
    r = post(app, "/v1/predict", GOOD, {"x-client-id": "greedy"})
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    assert r.json()["type"].endswith("quota-exceeded")
    assert post(app, "/v1/predict", GOOD, {"x-client-id": "polite"}).status_code == 200
    down = build_app(proba, config=ApiConfig(model_ready=False, retry_after_503_s=7))
    r = post(down, "/v2/predict", GOOD)
    assert r.status_code == 503 and r.headers["retry-after"] == "7" and r.json()["status"] == 503


def test_v1_announces_deprecation_and_sunset_and_v2_does_not():
    clock = Clock()
    cfg = ApiConfig(deprecation_s=clock.t - 10, sunset_s=clock.t + 180 * 86400, clock=clock)
    app = build_app(proba, (), cfg)
    r = post(app, "/v1/predict", GOOD)
    assert r.headers["deprecation"] == f"@{int(clock.t - 10)}"
    assert parsedate_to_datetime(r.headers["sunset"]).timestamp() == pytest.approx(clock.t + 180 * 86400, abs=1)
    assert r.headers["sunset"].endswith("GMT")
    assert 'rel="deprecation"' in r.headers["link"] and 'rel="sunset"' in r.headers["link"]
    bad = post(app, "/v1/predict", {"features": []})
    assert "deprecation" in bad.headers  # errors on v1 carry the notice too
    r2 = post(app, "/v2/predict", {"inputs": GOOD["features"]})
    assert "deprecation" not in r2.headers and "sunset" not in r2.headers
    with pytest.raises(ValueError, match="Sunset"):
        ApiConfig(deprecation_s=100.0, sunset_s=50.0)


def test_idempotent_replay_calls_the_model_once():
    cfg = ApiConfig()
    app = build_app(proba, config=cfg)
    h = {"idempotency-key": "k-1"}
    a, b = post(app, "/v1/predict", GOOD, h), post(app, "/v1/predict", GOOD, h)
    assert a.status_code == b.status_code == 200 and a.content == b.content
    assert b.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in a.headers
    assert cfg.counters["model_calls"] == 1


def test_a_500_is_stored_and_replayed_too():
    calls = []

    def broken(x):
        calls.append(1)
        raise RuntimeError("boom")
    app = build_app(broken)
    h = {"idempotency-key": "k-500"}
    first, again = post(app, "/v1/predict", GOOD, h), post(app, "/v1/predict", GOOD, h)
    assert first.status_code == again.status_code == 500 and len(calls) == 1
    assert again.json()["status"] == 500 and again.headers["idempotent-replayed"] == "true"


def test_same_key_other_payload_is_422_and_a_failed_validation_saves_nothing():
    cfg = ApiConfig()
    app = build_app(proba, config=cfg)
    assert post(app, "/v1/predict", GOOD, {"idempotency-key": "a"}).status_code == 200
    other = {**GOOD, "top_k": 2}
    r = post(app, "/v1/predict", other, {"idempotency-key": "a"})
    assert r.status_code == 422 and r.json()["status"] == 422
    # a request that fails validation stores nothing: the corrected request under the same key runs
    assert post(app, "/v1/predict", {"features": [1]}, {"idempotency-key": "b"}).status_code == 400
    assert post(app, "/v1/predict", GOOD, {"idempotency-key": "b"}).status_code == 200
    assert cfg.counters["model_calls"] == 2


def test_a_retry_while_the_original_runs_is_409():
    release = threading.Event()
    started = threading.Event()

    def slow(x):
        started.set()
        release.wait(5)
        return proba(x)
    app = build_app(slow)
    h = {"idempotency-key": "busy"}

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            send = lambda: c.post("/v1/predict", json=GOOD, headers=h)  # noqa: E731
            first = asyncio.ensure_future(send())
            while not started.is_set():
                await asyncio.sleep(0.005)
            second = await send()
            release.set()
            return await first, second
    first, second = asyncio.run(go())
    assert first.status_code == 200 and second.status_code == 409 and "retry-after" in second.headers


def test_keys_are_pruned_after_24_hours_and_then_count_as_new():
    clock = Clock()
    cfg = ApiConfig(clock=clock)
    store = IdempotencyStore(clock=clock)
    app = build_app(proba, config=cfg, store=store)
    h = {"idempotency-key": "day"}
    post(app, "/v1/predict", GOOD, h)
    clock.t += 86_400 - 1
    assert post(app, "/v1/predict", GOOD, h).headers.get("idempotent-replayed") == "true"
    clock.t += 1
    r = post(app, "/v1/predict", GOOD, h)
    assert "idempotent-replayed" not in r.headers and cfg.counters["model_calls"] == 2
    store.begin("other", "fp")
    clock.t += 86_400
    assert store.prune() == 2 and len(store) == 0


def test_missing_or_oversized_keys_are_400_when_required():
    app = build_app(proba, config=ApiConfig(require_key=True))
    assert post(app, "/v1/predict", GOOD).status_code == 400
    assert post(app, "/v1/predict", GOOD, {"idempotency-key": "x" * 256}).status_code == 400
    assert post(app, "/v1/predict", GOOD, {"idempotency-key": "x" * 255}).status_code == 200


def test_change_catalogue_breaks_exactly_the_requests_that_use_the_changed_fields():
    rng = np.random.default_rng(3)
    images = np.random.default_rng(0).integers(0, 17, size=(20, 64)).astype(float)
    bodies, kinds = generate_v1_requests(rng, images, 300, 0.5, 0.3, 0.0)
    parsed = [json.loads(b) for b in bodies]
    uses_big_k = np.array([b.get("top_k", 1) > 5 for b in parsed])
    pins = np.array(["model_version" in b for b in parsed])
    for name, expect in (("add_optional", np.zeros(300, bool)), ("rename", np.ones(300, bool)),
                         ("tighten_range", uses_big_k), ("retype", pins),
                         ("tighten_range+retype", uses_big_k | pins)):
        st_ = send_all(build_app(proba, CHANGE_SETS[name]), "/v2/predict", bodies)
        assert np.array_equal(st_ == 400, expect), name
        assert set(st_) <= {200, 400}


def test_measure_catalogue_counts_model_calls_of_valid_requests_only():
    images = np.random.default_rng(0).integers(0, 17, size=(30, 64)).astype(np.float32)
    out = measure_catalogue(np.random.default_rng(1), proba, images, 200, 0.4, 0.2, 0.2)
    v1 = np.array(out["v1"])
    kinds = np.array(out["kinds"])
    assert np.array_equal(v1 == 400, kinds != "") and set(v1) == {200, 400}
    assert out["model_calls"][0] == int(np.sum(v1 == 200))
    assert np.all(np.array(out["rename"])[v1 == 200] == 400)


def test_contract_refuses_unknown_changes():
    with pytest.raises(ValueError):
        Contract("v2", frozenset({"drop_everything"}))


# -------------------------------------------------------------------- property test
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                        st.text(max_size=5))
json_value = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=70) |
                          st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=80)
near_valid = st.fixed_dictionaries(
    {"features": st.lists(st.one_of(st.floats(-1, 17), st.integers(-1, 17), st.floats(allow_nan=True),
                                    st.booleans(), st.text(max_size=2)), min_size=62, max_size=66)},
    optional={"top_k": json_value | st.integers(-2, 12), "model_version": json_value | st.text(max_size=6),
              "inputs": json_value, "explain": json_value})
bodies = st.one_of(st.binary(max_size=200), json_value.map(lambda v: json.dumps(v).encode()),
                   near_valid.map(lambda v: json.dumps(v).encode()))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, version=st.sampled_from(["/v1/predict", "/v2/predict"]), key=st.booleans())
def test_no_malformed_request_reaches_the_model_or_gets_a_5xx(body, version, key):
    cfg = ApiConfig(model_in_thread=False)
    app = build_app(proba, CHANGE_SETS["all"], cfg)  # proba asserts that its input is a valid image
    r = post(app, version, None, {"idempotency-key": "p"} if key else None, raw=body)
    assert r.status_code in (200, 400)
    assert cfg.counters["model_calls"] == (r.status_code == 200)
    if r.status_code == 400:
        p = r.json()
        assert p["status"] == 400 and r.headers["content-type"] == "application/problem+json"


def test_direct_asgi_calls_agree_with_httpx():
    images = np.random.default_rng(0).integers(0, 17, size=(10, 64)).astype(float)
    bodies, _ = generate_v1_requests(np.random.default_rng(2), images, 60, 0.5, 0.5, 0.4)
    for changes in ((), CHANGE_SETS["tighten_range+retype"]):
        app = build_app(proba, changes)
        direct = send_all(app, "/v2/predict", bodies)
        via_httpx = [post(app, "/v2/predict", None, raw=b).status_code for b in bodies]
        assert direct.tolist() == via_httpx and {200, 400} <= set(via_httpx)
