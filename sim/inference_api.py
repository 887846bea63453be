"""A real versioned prediction API (Starlette) with problem details, deprecation headers and idempotency keys.

References (REFERENCES.md §20):

* Errors follow RFC 9457 problem details: media type ``application/problem+json``, members
  ``type`` (a URI; ``about:blank`` means "nothing beyond the status code"), ``title`` (per type),
  ``status`` (equal to the real status), ``detail`` (per occurrence) and ``instance``; this module
  adds one extension member, ``errors`` (a list of ``{"pointer", "detail"}``) on validation problems.
* 429 (RFC 6585 §4) and 503 carry ``Retry-After`` in delay-seconds (RFC 9110 §10.2.3).
* The deprecated version answers with ``Deprecation: @<unix seconds>`` (RFC 9745, a structured-field
  date) and ``Sunset: <HTTP-date>`` (RFC 8594), plus ``Link`` relations ``deprecation`` and ``sunset``;
  a sunset earlier than the deprecation is refused, as RFC 9745 requires.
* ``Idempotency-Key`` follows Stripe's documented behaviour and the IETF draft: the first response
  (status and body, 500s included) is stored once the endpoint starts executing and replayed to any
  retry with the same key; a key whose original is still running answers 409; the same key with
  another payload answers 422; a request that fails validation stores nothing (safe to retry); keys
  are pruned once ``ttl_s`` old (Stripe: at least 24 h), after which the key is new again. Where we
  differ: the store lives in one process's memory (Stripe's is shared), and with
  ``require_key=True`` a missing key answers 400 as the IETF draft says (Stripe makes keys optional).

The request contract (v1) is a digits classifier: ``{"features": [64 numbers in [0, 16]],
"model_version": "<digits and dots>" (optional), "top_k": 1..10 (optional)}``. Version 2 is v1 with a
chosen set of changes from ``CHANGES`` (the change catalogue): an added optional field, a renamed
field, a tightened range and a retyped field. Unknown members are ignored (a tolerant reader), so only
the changes themselves can break a v1 request. Requests are parsed with a strict JSON reader (NaN and
Infinity refused) and nothing reaches the model unless every check passed.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from email.utils import format_datetime
from datetime import datetime, timezone
from typing import Callable

import numpy as np

__all__ = ["CHANGES", "CHANGE_SETS", "measure_catalogue", "Contract", "IdempotencyStore", "Begin", "ApiConfig", "build_app", "problem",
           "generate_v1_requests", "send_all", "asgi_post", "MALFORMED_KINDS", "N_FEATURES"]

N_FEATURES = 64
PIXEL_MAX = 16.0
PROBLEM_BASE = "https://archlab.invalid/problems/"
CHANGES = ("add_optional", "rename", "tighten_range", "retype")
CHANGE_SETS = {"add_optional": ("add_optional",), "rename": ("rename",), "tighten_range": ("tighten_range",),
               "retype": ("retype",), "tighten_range+retype": ("tighten_range", "retype"), "all": CHANGES}
_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")


# ---------------------------------------------------------------- contracts
@dataclass(frozen=True)
class Contract:
    """One API version's request schema: v1 plus ``changes`` (a subset of ``CHANGES``)."""

    name: str = "v1"
    changes: frozenset = frozenset()

    def __post_init__(self):
        unknown = set(self.changes) - set(CHANGES)
        if unknown:
            raise ValueError(f"unknown changes {sorted(unknown)}; catalogue: {', '.join(CHANGES)}")
        object.__setattr__(self, "changes", frozenset(self.changes))

    @property
    def features_field(self) -> str:
        return "inputs" if "rename" in self.changes else "features"

    @property
    def top_k_max(self) -> int:
        return 5 if "tighten_range" in self.changes else 10

    def validate(self, body) -> tuple[dict | None, list[dict]]:
        """(clean request, []) or (None, errors as {"pointer", "detail"}) for a parsed JSON body."""
        if not isinstance(body, dict):
            return None, [{"pointer": "#", "detail": "the body must be a JSON object"}]
        errs: list[dict] = []
        name = self.features_field
        x = body.get(name)
        if name not in body:
            errs.append({"pointer": f"#/{name}", "detail": f"'{name}' is required"})
        elif not isinstance(x, list) or len(x) != N_FEATURES:
            errs.append({"pointer": f"#/{name}", "detail": f"'{name}' must be an array of {N_FEATURES} numbers"})
        else:
            for i, v in enumerate(x):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                        or not 0 <= v <= PIXEL_MAX:
                    errs.append({"pointer": f"#/{name}/{i}", "detail": f"must be a number in [0, {PIXEL_MAX:g}]"})
                    break
        clean = {"x": x}
        if "model_version" in body:
            mv = body["model_version"]
            if "retype" in self.changes:
                ok = isinstance(mv, int) and not isinstance(mv, bool) and 1 <= mv <= 99
                want = "an integer major version in [1, 99]"
            else:
                ok = isinstance(mv, str) and bool(_VERSION.match(mv))
                want = "a version string such as \"1.5\""
            if not ok:
                errs.append({"pointer": "#/model_version", "detail": f"must be {want}"})
        top_k = body.get("top_k", 1)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= self.top_k_max:
            errs.append({"pointer": "#/top_k", "detail": f"must be an integer in [1, {self.top_k_max}]"})
        clean["top_k"] = top_k
        if "add_optional" in self.changes and "explain" in body and not isinstance(body["explain"], bool):
            errs.append({"pointer": "#/explain", "detail": "must be true or false"})
        return (None, errs) if errs else (clean, [])


# ---------------------------------------------------------------- problem details
def problem(status: int, title: str, detail: str, type_: str | None = None, instance: str | None = None,
            headers: dict | None = None, **extra):
    """An RFC 9457 problem-details response (``application/problem+json``)."""
    from starlette.responses import Response

    body = {"type": type_ or "about:blank", "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extra)
    return Response(json.dumps(body), status_code=status, headers=headers or {},
                    media_type="application/problem+json")


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def strict_json(raw: bytes):
    """json.loads that refuses NaN/Infinity (the stdlib accepts them by default)."""
    return json.loads(raw, parse_constant=_reject_constant)


# ---------------------------------------------------------------- idempotency
@dataclass
class _Record:
    fingerprint: str
    created: float
    done: bool = False
    status: int = 0
    body: bytes = b""
    media_type: str = "application/json"


@dataclass(frozen=True)
class Begin:
    kind: str  # "new" | "replay" | "in_flight" | "mismatch"
    record: _Record | None = None


class IdempotencyStore:
    """Idempotency keys with Stripe's semantics (see the module docstring); ``clock`` gives seconds."""

    def __init__(self, ttl_s: float = 86_400.0, clock: Callable[[], float] = time.time):
        if not ttl_s > 0:
            raise ValueError("ttl_s must be positive")
        self.ttl_s, self.clock = float(ttl_s), clock
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def _live(self, key: str, now: float) -> _Record | None:
        rec = self._records.get(key)
        if rec is not None and now >= rec.created + self.ttl_s:
            del self._records[key]  # pruned: reuse after pruning is a new request
            return None
        return rec

    def begin(self, key: str, fingerprint: str) -> Begin:
        with self._lock:
            now = self.clock()
            rec = self._live(key, now)
            if rec is None:
                rec = self._records[key] = _Record(fingerprint, now)
                return Begin("new", rec)
            if rec.fingerprint != fingerprint:
                return Begin("mismatch", rec)
            return Begin("replay", rec) if rec.done else Begin("in_flight", rec)

    def finish(self, key: str, status: int, body: bytes, media_type: str = "application/json") -> None:
        with self._lock:
            rec = self._records.get(key)
            if rec is not None:
                rec.done, rec.status, rec.body, rec.media_type = True, status, body, media_type

    def abandon(self, key: str) -> None:
        """Forget a key whose request failed validation: nothing is saved, the client may retry."""
        with self._lock:
            self._records.pop(key, None)

    def prune(self, now: float | None = None) -> int:
        """Drop every record at least ``ttl_s`` old; returns how many went."""
        with self._lock:
            now = self.clock() if now is None else now
            old = [k for k, r in self._records.items() if now >= r.created + self.ttl_s]
            for k in old:
                del self._records[k]
            return len(old)


# ---------------------------------------------------------------- the application
@dataclass
class ApiConfig:
    deprecation_s: float | None = None  # unix time v1 was (or will be) deprecated; None = not deprecated
    sunset_s: float | None = None
    require_key: bool = False
    retry_after_503_s: int = 5
    model_ready: bool = True
    limiter: Callable[[str, float], float] | None = None  # (client, now) -> 0 if admitted else wait seconds
    clock: Callable[[], float] = time.time
    docs: str = "https://archlab.invalid/docs/migration-v2"
    counters: dict = field(default_factory=lambda: {"model_calls": 0})
    model_in_thread: bool = True  # False calls the model inline (bulk measurements skip the thread hop)

    def __post_init__(self):
        if self.sunset_s is not None and self.deprecation_s is not None and self.sunset_s < self.deprecation_s:
            raise ValueError("Sunset must not be earlier than Deprecation (RFC 9745)")


def _http_date(t: float) -> str:
    return format_datetime(datetime.fromtimestamp(t, tz=timezone.utc), usegmt=True)


def build_app(predict_proba: Callable[[np.ndarray], np.ndarray], v2_changes=CHANGES,
              config: ApiConfig | None = None, store: IdempotencyStore | None = None):
    """A Starlette app serving ``POST /v1/predict`` and ``POST /v2/predict`` around ``predict_proba``.

    ``predict_proba`` takes a (1, 64) float32 array and returns class probabilities; it runs in a worker
    thread, and ``config.counters["model_calls"]`` counts every call that reached it.
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response
    from starlette.routing import Route

    cfg = config or ApiConfig()
    store = store if store is not None else IdempotencyStore(clock=cfg.clock)
    contracts = {"v1": Contract("v1"), "v2": Contract("v2", frozenset(v2_changes))}

    def version_headers(version: str) -> dict:
        if version != "v1" or cfg.deprecation_s is None:
            return {}
        h = {"Deprecation": f"@{int(cfg.deprecation_s)}"}
        links = [f'<{cfg.docs}>; rel="deprecation"']
        if cfg.sunset_s is not None:
            h["Sunset"] = _http_date(cfg.sunset_s)
            links.append(f'<{cfg.docs}>; rel="sunset"')
        h["Link"] = ", ".join(links)
        return h

    async def handle(request, version: str):
        extra = version_headers(version)
        path = request.url.path
        client = request.headers.get("x-client-id", "anonymous")
        if cfg.limiter is not None:
            wait = cfg.limiter(client, cfg.clock())
            if wait > 0:
                return problem(429, "Too many requests", f"client {client!r} is over its rate limit",
                               PROBLEM_BASE + "quota-exceeded", path,
                               {**extra, "Retry-After": str(max(1, math.ceil(wait)))})
        if not cfg.model_ready:
            return problem(503, "Model unavailable", "the model is loading; try again later", None, path,
                           {**extra, "Retry-After": str(cfg.retry_after_503_s)})
        raw = await request.body()
        key = request.headers.get("idempotency-key")
        if key is None and cfg.require_key:
            return problem(400, "Idempotency-Key required", "send an Idempotency-Key header with every POST",
                           PROBLEM_BASE + "idempotency-key-missing", path, extra)
        if key is not None and not 1 <= len(key) <= 255:
            return problem(400, "Invalid Idempotency-Key", "a key has 1 to 255 characters",
                           PROBLEM_BASE + "idempotency-key-invalid", path, extra)
        if key is not None:
            begun = store.begin(key, hashlib.sha256(raw).hexdigest())
            if begun.kind == "mismatch":
                return problem(422, "Idempotency-Key reused", "this key was first used with another payload",
                               PROBLEM_BASE + "idempotency-key-reused", path, extra)
            if begun.kind == "in_flight":
                return problem(409, "Request in progress", "a request with this key is still being processed",
                               PROBLEM_BASE + "idempotency-in-flight", path, {**extra, "Retry-After": "1"})
            if begun.kind == "replay":
                rec = begun.record
                return Response(rec.body, rec.status, {**extra, "Idempotent-Replayed": "true"}, rec.media_type)
        try:
            body = strict_json(raw)
        except (ValueError, UnicodeDecodeError):
            body, errors = None, [{"pointer": "#", "detail": "the body is not valid JSON"}]
        else:
            errors = []
        clean = None
        if not errors:
            clean, errors = contracts[version].validate(body)
        if errors:
            if key is not None:
                store.abandon(key)
            return problem(400, "Invalid prediction request", errors[0]["detail"],
                           PROBLEM_BASE + "invalid-request", path, extra, errors=errors)
        # from here on the endpoint is executing: whatever it answers is stored for the key
        x = np.asarray(clean["x"], dtype=np.float32).reshape(1, -1)
        cfg.counters["model_calls"] = cfg.counters.get("model_calls", 0) + 1
        try:
            proba = np.asarray(await run_in_threadpool(predict_proba, x) if cfg.model_in_thread
                               else predict_proba(x))[0]
        except Exception as exc:  # noqa: BLE001 - a model failure is a 500 with a problem body
            resp = problem(500, "Prediction failed", f"the model raised {type(exc).__name__}", None, path, extra)
        else:
            order = np.argsort(-proba, kind="stable")[: clean["top_k"]]
            out = {"prediction": int(order[0]), "model_version": version.lstrip("v") + ".0",
                   "top": [{"label": int(c), "probability": round(float(proba[c]), 6)} for c in order]}
            resp = Response(json.dumps(out), 200, extra, "application/json")
        if key is not None:
            store.finish(key, resp.status_code, resp.body, resp.media_type)
        return resp

    async def v1(request):
        return await handle(request, "v1")

    async def v2(request):
        return await handle(request, "v2")

    app = Starlette(routes=[Route("/v1/predict", v1, methods=["POST"]), Route("/v2/predict", v2, methods=["POST"])])
    app.state.config, app.state.store, app.state.contracts = cfg, store, contracts
    return app


# ---------------------------------------------------------------- generated v1 traffic
MALFORMED_KINDS = ("not_json", "not_object", "missing_features", "short_features", "pixel_out_of_range",
                   "nan_pixel", "string_pixel", "top_k_zero", "top_k_float", "top_k_string",
                   "version_number", "bool_pixel")


def generate_v1_requests(rng: np.random.Generator, images: np.ndarray, n: int, top_k_share: float,
                         version_pin_share: float, malformed_share: float) -> tuple[list[bytes], np.ndarray]:
    """``n`` request bodies a v1 client population sends, and the malformed kind of each ("" = valid).

    A valid request carries one real digit image; ``top_k_share`` of them ask for a top_k (uniform in
    1..10) and ``version_pin_share`` pin a model version ("1" or "1.5"). ``malformed_share`` of them are
    broken in one of ``MALFORMED_KINDS`` ways.
    """
    bodies, kinds = [], []
    pick = rng.integers(0, len(images), n)
    has_k, k = rng.random(n) < top_k_share, rng.integers(1, 11, n)
    pins, which = rng.random(n) < version_pin_share, rng.integers(0, 2, n)
    bad, bad_kind = rng.random(n) < malformed_share, rng.integers(0, len(MALFORMED_KINDS), n)
    for i in range(n):
        body = {"features": [float(v) for v in images[pick[i]]]}
        if has_k[i]:
            body["top_k"] = int(k[i])
        if pins[i]:
            body["model_version"] = ("1", "1.5")[which[i]]
        kind = MALFORMED_KINDS[bad_kind[i]] if bad[i] else ""
        text = None
        if kind == "not_json":
            text = b'{"features": [1, 2,'
        elif kind == "not_object":
            text = json.dumps(body["features"]).encode()
        elif kind == "missing_features":
            body["pixels"] = body.pop("features")
        elif kind == "short_features":
            body["features"] = body["features"][:-1]
        elif kind == "pixel_out_of_range":
            body["features"][3] = 17.0
        elif kind == "nan_pixel":  # json.dumps writes NaN, which strict JSON readers refuse
            text = json.dumps({**body, "features": body["features"][:5] + [float("nan")] + body["features"][6:]}).encode()
        elif kind == "string_pixel":
            body["features"][0] = "0"
        elif kind == "top_k_zero":
            body["top_k"] = 0
        elif kind == "top_k_float":
            body["top_k"] = 2.5
        elif kind == "top_k_string":
            body["top_k"] = "3"
        elif kind == "version_number":
            body["model_version"] = 1.5
        elif kind == "bool_pixel":
            body["features"][1] = True
        bodies.append(text if text is not None else json.dumps(body).encode())
        kinds.append(kind)
    return bodies, np.array(kinds)


async def asgi_post(app, path: str, body: bytes, headers: dict | None = None) -> int:
    """One POST straight through the app's ASGI interface (what uvicorn calls); returns the status code."""
    hdrs = [(b"host", b"api.local"), (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode())]
    hdrs += [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": hdrs, "client": ("127.0.0.1", 50000), "server": ("api.local", 80)}
    delivered, status = False, []

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


def send_all(app, path: str, bodies: list[bytes], headers: dict | None = None) -> np.ndarray:
    """POST every body to ``app`` in process, in order; the status codes.

    Requests go straight through the app's ASGI interface, as an ASGI server would deliver them: the same
    routing, parsing and validation, without a client library's per-request cost (httpx's ASGI transport
    costs several times the app's own time here; the tests drive the app through it as well)."""

    async def go():
        return [await asgi_post(app, path, b, headers) for b in bodies]

    return np.array(asyncio.run(go()), dtype=int)


def measure_catalogue(rng: np.random.Generator, predict_proba, images: np.ndarray, n: int, top_k_share: float,
                      version_pin_share: float, malformed_share: float) -> dict:
    """Generate ``n`` v1 requests and send them to the real v1 app, then the v1-valid ones to a v2 app per
    change set in ``CHANGE_SETS``. Returns status lists per app ("v1" and each set; 0 = not sent), the
    malformed kind of each request and the v1 app's model-call count. The apps share one memo of the
    model's answers per image (a status never depends on the answer), so each digit is predicted once."""
    memo: dict[bytes, np.ndarray] = {}

    def model(x):
        key = x.tobytes()
        if key not in memo:
            memo[key] = np.asarray(predict_proba(x))
        return memo[key]

    bodies, kinds = generate_v1_requests(rng, images, n, top_k_share, version_pin_share, malformed_share)
    cfg = ApiConfig(model_in_thread=False)
    out = {"v1": send_all(build_app(model, (), cfg), "/v1/predict", bodies).tolist(),
           "kinds": kinds.tolist()}
    out["model_calls"] = [cfg.counters["model_calls"]]
    ok = [i for i, st in enumerate(out["v1"]) if st == 200]
    for name, changes in CHANGE_SETS.items():
        got = np.zeros(len(bodies), dtype=int)
        if ok:
            app = build_app(model, changes, ApiConfig(model_in_thread=False))
            got[ok] = send_all(app, "/v2/predict", [bodies[i] for i in ok])
        out[name] = got.tolist()
    return out
