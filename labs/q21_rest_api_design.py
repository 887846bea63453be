"""Q21: a versioned prediction API, clients migrating from v1 to v2, and retries with idempotency keys.

Real part: a Starlette app (``sim.inference_api``) serves /v1 and /v2 around the real logreg digits
model, answering errors as RFC 9457 problem details. ``clients`` generated v1 requests (a few malformed)
go through it in process: v1 gives the validation rejection rate, and every v2 change set of the
catalogue gives the share of valid v1 clients it breaks (measured; cached on disk).
Simulated part (SimPy, ``sim.api_migration``): those clients upgrade after an assumed lag, some acting
on the Deprecation/Sunset headers. The baseline cuts v1 over on release day; the pattern keeps v1 for
``window_days``. Then ``requests`` timed-out calls are retried without keys (baseline) and with keys
against the real key store on the simulated clock (pattern). Both arms share every draw.
Controls: an additive v2, a zero-day window, a timeout far above the latency.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

import sim.inference_api
from sim.api_migration import (Clients, lognormal_p99, live_versions, retry_horizon_s, simulate_retries,
                               simulate_upgrades)
from sim.cache import DiskCache
from sim.inference_api import CHANGE_SETS, measure_catalogue
from sim.metrics import order_statistic_interval
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param
from .measure import Measurements

CACHE = DiskCache("q21_api", code=[sim.inference_api])
MONTH = 30.44


class RestApiLab(Lab):
    id = "q21"
    headline = ("pattern", "client_breakage_pct")
    refine_param = "requests"
    arms = (Arm("baseline", "Hard cut-over, no keys",
                "v1 answers with the v2 contract on release day; retries carry no idempotency key"),
            Arm("pattern", "Deprecation window, keys",
                "v1 lives window_days with Deprecation/Sunset headers; retries carry an Idempotency-Key"))
    assumptions = (
        "Each client would finish its upgrade a lognormal lag after v2 ships (median median_lag_days).",
        "At the cut-off the v1 path serves the v2 contract: a lagging client breaks only if v2 rejects its requests.",
        "A header-aware client sees the headers on its first request after release and plans to finish by "
        "max(seen + effort_days, cut-off - effort_days); a broken client fixes itself within fix_days.",
        "The generated v1 traffic mix (top_k_share_pct, version_pin_share_pct, malformed_pct) is assumed.",
        "Retried calls: lognormal latency; the server finishes every attempt it started, even after the client left.",
    )
    parts = {"api": ("clients", "top_k_share_pct", "version_pin_share_pct", "malformed_pct")}
    params = (
        Param("clients", 1000, 100, 3000, unit="clients",
              help="client population; each sends one generated v1 request through the real API"),
        Param("v2_changes", "tighten_range+retype", choices=tuple(CHANGE_SETS), key=True,
              help="what v2 changes from the catalogue (add optional field, rename, tighten a range, retype)"),
        Param("top_k_share_pct", 40.0, 0.0, 100.0, unit="%", help="v1 clients that send top_k (uniform 1..10)"),
        Param("version_pin_share_pct", 20.0, 0.0, 100.0, unit="%",
              help="v1 clients that pin model_version as a string"),
        Param("malformed_pct", 2.0, 0.0, 50.0, unit="%", help="generated requests that are malformed"),
        Param("window_days", 180.0, 0.0, 730.0, unit="days", key=True,
              help="deprecation window: v1 keeps its contract this long after v2 ships"),
        Param("release_interval_days", 90.0, 7.0, 730.0, unit="days", help="time between major versions"),
        Param("median_lag_days", 30.0, 1.0, 730.0, unit="days", key=True,
              help="median time a client takes to move to v2 on its own (lognormal)"),
        Param("lag_sigma", 1.0, 0.1, 3.0, help="log-scale spread of the upgrade lag"),
        Param("header_aware_pct", 50.0, 0.0, 100.0, unit="%",
              help="clients that act on Deprecation/Sunset headers"),
        Param("effort_days", 14.0, 0.0, 180.0, unit="days", help="time a header-aware client needs to upgrade"),
        Param("fix_days", 7.0, 0.0, 365.0, unit="days", help="time a broken client takes to fix itself"),
        Param("request_interval_days", 7.0, 0.01, 90.0, unit="days",
              help="clients call at least this often (first call after release: uniform within it)"),
        Param("requests", 4000, 200, 30000, unit="requests", help="logical requests in the retry experiment"),
        Param("rate_rps", 50.0, 1.0, 1000.0, unit="req/s", help="arrival rate of those requests (Poisson)"),
        Param("latency_ms", 40.0, 1.0, 5000.0, unit="ms", help="median prediction latency (lognormal)"),
        Param("latency_sigma", 0.5, 0.05, 2.0, help="log-scale spread of the latency"),
        Param("timeout_over_p99", 1.0, 0.1, 100.0, unit="x P99", key=True,
              help="client timeout as a multiple of the latency's P99"),
        Param("max_retries", 3, 0, 10, unit="retries", help="retries after the first attempt"),
        Param("backoff_base_ms", 100.0, 1.0, 10000.0, unit="ms", help="back-off base (full jitter, doubling)"),
        Param("backoff_cap_ms", 1000.0, 1.0, 60000.0, unit="ms", help="back-off cap"),
        Param("key_ttl_s", 86400.0, 0.01, 604800.0, unit="s", key=True,
              help="idempotency keys are pruned this long after first use (Stripe: 24 h)"),
    )
    exercises = (
        Exercise("v2 also renames features to inputs. With the same 180-day window, how many clients break?",
                 {"v2_changes": "all"}, ("pattern", "client_breakage_pct"),
                 why="At the sunset, breakage is the clients still on v1 times the share of their calls v2 refuses; a "
                 "rename makes that share 100% instead of about a third, so every late client breaks."),
        Exercise("Clients are slow: median lag 120 days. Does a 180-day window still keep breakage under 5%?",
                 {"median_lag_days": 120.0}, ("pattern", "client_breakage_pct"),
                 why="Upgrade lags spread around their median: with a 120-day median a sizeable tail is still on v1 "
                 "when the 180-day window closes, and each of those clients breaks at the cut-off."),
        Exercise("Keys are pruned after 0.2 s instead of 24 h. Do retries still never duplicate a prediction?",
                 {"key_ttl_s": 0.2}, ("pattern", "duplicate_predictions_pct"),
                 why="A retry that arrives after its key was pruned finds no stored answer and runs the prediction "
                 "again; keys must outlive the retry horizon (about a second here)."),
    )

    def prepare(self, seed: int = 0) -> None:
        self.part("api", seed, self.settings())

    # ------------------------------------------------------------------ real API
    def part_api(self, seed: int, p) -> dict:
        """Send the generated v1 traffic through the real v1 and every v2 change set (cached on disk)."""
        key = {"seed": seed, **dict(p)}
        got = CACHE.get_json("statuses", key)
        if got is None:
            from sim.models import get_model

            model = get_model("logreg", 0)
            got = measure_catalogue(Streams(seed)["traffic"], model.predict_proba, model.X_test, p.clients,
                                    p.top_k_share_pct / 100, p.version_pin_share_pct / 100, p.malformed_pct / 100)
            CACHE.put_json("statuses", key, got)
        return {k: np.asarray(v) for k, v in got.items()}

    # ------------------------------------------------------------------ simulation
    def simulate(self, seed: int, p) -> Outcome:
        s = Streams(seed)
        api = self.part("api", seed, p)
        valid = api["v1"] == 200
        n_valid = int(valid.sum())
        m = Measurements(("baseline", "pattern"))
        for arm in ("baseline", "pattern"):
            m.share(arm, "validation_rejection_pct", int((~valid).sum()), len(valid))
            m.share(arm, "api_uptime_pct", int(np.sum(api["v1"] < 500)), len(valid))
        m.value("baseline", "malformed_reached_model", float(api["model_calls"][0] - n_valid))
        catalogue = []
        for name in CHANGE_SETS:
            k = int(np.sum(api[name][valid] != 200))
            m.share("baseline", f"break_{name}_pct", k, n_valid, missing="every generated request was malformed")
            lo, hi = m.intervals["baseline"].get(f"break_{name}_pct", (np.nan, np.nan))
            catalogue.append({"change": name, "break_pct": m.metrics["baseline"][f"break_{name}_pct"],
                              "low": lo, "high": hi})
        breaks = api[p.v2_changes][valid] != 200

        n = n_valid
        clients = Clients(
            lag_days=p.median_lag_days * np.exp(p.lag_sigma * s["lag"].standard_normal(len(valid))[valid]),
            aware=(s["aware"].random(len(valid)) < p.header_aware_pct / 100)[valid],
            first_request_days=(s["first_call"].random(len(valid)) * p.request_interval_days)[valid],
            breaks=breaks)
        horizon = float(max(2 * p.window_days, 4 * p.median_lag_days, 60.0))
        step = horizon / 200
        series = []
        for arm, cutoff in (("baseline", 0.0), ("pattern", p.window_days)):
            r = simulate_upgrades(clients, cutoff, p.effort_days, p.fix_days, horizon, step)
            broken = ~np.isnan(r["broken_at"])
            m.share(arm, "break_share_pct", int(breaks.sum()), n, missing="every generated request was malformed")
            m.share(arm, "not_upgraded_at_cutoff_pct", int(np.sum(r["upgrade_days"] > cutoff)), n,
                    missing="every generated request was malformed")
            m.share(arm, "client_breakage_pct", int(broken.sum()), n, missing="every generated request was malformed")
            days_broken = np.where(broken, r["upgrade_days"] - r["broken_at"], 0.0)
            m.mean(arm, "broken_client_days", days_broken, missing="every generated request was malformed")
            # the time until 99% of clients speak v2: upgraded on their own, or moved by the cut-off
            iv = order_statistic_interval(np.minimum(r["upgrade_days"], cutoff) / MONTH, 99)
            m.value(arm, "version_migration_months", iv.estimate, (iv.low, iv.high),
                    missing="every generated request was malformed")
            m.value(arm, "live_versions", live_versions(cutoff, p.release_interval_days))
            ser = r["series"]
            series.append(pd.DataFrame({"day": ser[:, 0], "on_v1_pct": ser[:, 1], "broken_pct": ser[:, 2],
                                        "arm": arm}))
        retry = _retries(s, p, m)
        notes = [f"{len(valid)} generated v1 requests through the real API ({n_valid} valid); v2 = {p.v2_changes} "
                 f"breaks {m.metrics['baseline']['break_share_pct']:.1f}% of valid clients.",
                 f"Retries: timeout {retry['timeout_ms']:.0f} ms = {p.timeout_over_p99:g} x P99 "
                 f"({retry['p99_ms']:.0f} ms); retry horizon {retry['horizon_s']:.2f} s; key TTL / horizon = "
                 f"{p.key_ttl_s / retry['horizon_s']:.3g}."]
        return Outcome(m, {"clients": pd.concat(series, ignore_index=True), "catalogue": pd.DataFrame(catalogue)},
                       notes=notes)

    def plots(self, result):
        from .plotting import bar_chart, line_chart

        return [line_chart(result.series["clients"], "day", "broken_pct", "Clients broken by the v2 contract",
                           "days since v2 shipped", "broken clients (%)"),
                bar_chart(result.series["catalogue"], "change", "break_pct",
                          "Share of valid v1 clients each v2 change set rejects (real API)", "broken (%)",
                          low="low", high="high")]


def _retries(s: Streams, p, m: Measurements) -> dict:
    n, K = p.requests, p.max_retries + 1
    med = p.latency_ms / 1e3
    p99 = lognormal_p99(med, p.latency_sigma)
    timeout = p.timeout_over_p99 * p99
    base, cap = p.backoff_base_ms / 1e3, p.backoff_cap_ms / 1e3
    arrivals = np.cumsum(s["arrivals"].exponential(1 / p.rate_rps, n))
    latency = med * np.exp(p.latency_sigma * s["latency"].standard_normal((n, K)))
    jitter = s["jitter"].random((n, K))
    horizon = retry_horizon_s(timeout, p.max_retries, base, cap)
    none = "no request timed out, so nothing was retried (timeout far above the latency)"
    for arm, keys in (("baseline", False), ("pattern", True)):
        r = simulate_retries(arrivals, latency, jitter, timeout, p.max_retries, base, cap, keys, p.key_ttl_s,
                             replay_s=0.002, conflict_s=0.002)
        retried = r["attempts"] > 1
        dup = int(np.sum(r["executions"] > 1))
        # an exact count in this run (no interval): the claim is that keys make it zero by construction
        m.value(arm, "duplicate_predictions_pct", 100 * dup / n if retried.any() else np.nan, missing=none)
        m.share(arm, "retried_pct", int(retried.sum()), n)
        m.share(arm, "failed_requests_pct", int((~r["ok"]).sum()), n)
        m.value(arm, "model_executions_per_request", float(r["executions"].mean()))
        m.share(arm, "conflict_409_pct", int(np.sum(r["conflicts"] > 0)), n)
    m.value("pattern", "retry_horizon_s", horizon)
    m.value("pattern", "key_ttl_over_horizon_x", p.key_ttl_s / horizon if horizon > 0 else np.nan,
            missing="no retries allowed (max_retries = 0): there is no retry horizon")
    return {"timeout_ms": 1e3 * timeout, "p99_ms": 1e3 * p99, "horizon_s": max(horizon, 1e-12)}


LAB = RestApiLab()
