"""Q24: per-key rate limits (Envoy token bucket, fixed window, sliding log, sliding counter) and a global limit.

Fair users (free, pro and unlimited enterprise tiers) send Poisson traffic in on-off periods at
``fair_load_x`` times their tier's rate; bursty users fire a burst every ``bursty_every_s`` and retry
refused calls, honouring Retry-After or not; an attacker spreads ``attack_rps`` over ``attacker_keys``
keys. Every arm sees the same requests (common random numbers): no limit, the token bucket (the
pattern; refill named by ``refill``), the three window limiters at the same sustained rate (``rate_rps`` x
``window_s`` per window) and one global bucket of ``global_rps`` shared by everyone. Probes measure the
burst a full bucket allows at ``burst_multiple`` x R and the double burst at a fixed window's edge
(``edge_probe = uniform`` is its control). Limiter semantics: ``sim.rate_limiters``, cross-checked with
pyrate-limiter and limits.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sim.rate_limiters import (LIMITERS, EnvoyTokenBucket, Unlimited, burst_duration_closed_form, make_limiter,
                               serve)
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .measure import Measurements

KEYED = ("pattern", "fixed_window", "sliding_log", "sliding_counter")
KIND = dict(zip(KEYED, LIMITERS))
MAX_REQUESTS = 1_000_000
THIN_X = 5.0  # an attacker key is simulated at most at this multiple of its limit (see assumptions)


def _expected(p) -> float:
    fair = p.fair_users * p.fair_load_x * p.rate_rps * (1 + (p.pro_pct + p.enterprise_pct) / 100 *
                                                          (p.pro_multiplier - 1)) * p.on_s / (p.on_s + p.off_s)
    bursty = p.bursty_users * math.ceil(p.bursty_size_x * p.burst_tokens) * p.max_attempts / p.bursty_every_s
    return p.duration_s * (fair + bursty + p.attack_rps * (p.attacker_keys > 0))


def _size(p) -> str | None:
    if _expected(p) <= MAX_REQUESTS:
        return None
    return f"at most {MAX_REQUESTS:,} expected requests per arm (this setting: about {_expected(p):,.0f})"


def _timer(p) -> str | None:
    per_fill = p.rate_rps * p.fill_interval_s
    if p.refill == "on_access" or (per_fill >= 1 and abs(per_fill - round(per_fill)) < 1e-9):
        return None
    return "a timer refill needs rate_rps x fill_interval_s to be a whole number of tokens (Envoy's tokens_per_fill)"


class RateLimitLab(Lab):
    id = "q24"
    headline = ("pattern", "fair_rejection_rate_pct")
    refine_param = "duration_s"
    arms = (Arm("baseline", "No limit", "every request reaches the backend"),
            Arm("pattern", "Token bucket", "Envoy token bucket per key: burst_tokens deep, refilled at rate_rps"),
            Arm("fixed_window", "Fixed window", "rate_rps x window_s per key per aligned window; resets at edges"),
            Arm("sliding_log", "Sliding log", "rate_rps x window_s per key in [t - window_s, t] (pyrate-limiter)"),
            Arm("sliding_counter", "Sliding counter", "previous window weighted by overlap + current (limits)"),
            Arm("global", "Global limit", "one token bucket of global_rps shared by every key"))
    assumptions = (
        "Fair users alternate exponential on and off periods; during on periods they send Poisson traffic.",
        "Fair users and the attacker never retry; bursty users retry refused calls up to max_attempts times.",
        "An attacker key is simulated at most at 5 x its limit (a Poisson thinning): above its limit a key is "
        "admitted the same count at any rate; refusals are counted at the real rate.",
        "The global arm sees the attacker's full stream; one bucket of global_rps (1 s deep) serves every key.",
        "Enterprise users are never limited per key; pro and enterprise send at pro_multiplier x the free rate.",
    )
    rules = (Rule("duration_s", ("duration_s", "fair_users", "fair_load_x", "rate_rps", "pro_pct", "enterprise_pct",
                                 "pro_multiplier", "on_s", "off_s", "bursty_users", "bursty_size_x", "burst_tokens",
                                 "max_attempts", "bursty_every_s", "attack_rps", "attacker_keys"), _size),
             Rule("fill_interval_s", ("refill", "rate_rps", "fill_interval_s"), _timer))
    params = (
        Param("rate_rps", 10.0, 1.0, 1000.0, unit="req/s", key=True, help="sustained rate per free key (R)"),
        Param("burst_tokens", 20, 1, 10000, unit="tokens", key=True, help="bucket depth per free key (B)"),
        Param("refill", "on_access", choices=("on_access", "timer"),
              help="Envoy >= 1.31 refills continuously on access; <= 1.30 on a fill_interval timer"),
        Param("fill_interval_s", 0.1, 0.05, 10.0, unit="s", help="Envoy fill_interval (minimum 50 ms)"),
        Param("window_s", 2.0, 0.1, 3600.0, unit="s", help="window of the window limiters (limit = R x window)"),
        Param("duration_s", 60.0, 10.0, 600.0, unit="s", help="simulated time (the request budget)"),
        Param("fair_users", 20, 1, 500, unit="users", help="well-behaved users"),
        Param("fair_load_x", 0.5, 0.01, 10.0, unit="x R", key=True,
              help="a fair user's rate during on periods, as a multiple of its tier's limit"),
        Param("on_s", 10.0, 0.1, 600.0, unit="s", help="mean on period of a fair user"),
        Param("off_s", 20.0, 0.0, 3600.0, unit="s", help="mean off period of a fair user (0 = always on)"),
        Param("pro_pct", 10.0, 0.0, 100.0, unit="%", help="fair users on the pro tier"),
        Param("enterprise_pct", 5.0, 0.0, 100.0, unit="%", help="fair users on the enterprise tier (no per-key limit)"),
        Param("pro_multiplier", 10.0, 1.0, 100.0, unit="x", help="pro limit (R and B) relative to free"),
        Param("bursty_users", 5, 0, 100, unit="users", help="users that send bursts and retry"),
        Param("bursty_size_x", 2.0, 0.1, 20.0, unit="x B", help="a burst's size as a multiple of burst_tokens"),
        Param("bursty_every_s", 30.0, 1.0, 600.0, unit="s", help="time between a bursty user's bursts"),
        Param("honour_pct", 50.0, 0.0, 100.0, unit="%", help="bursty users that wait for Retry-After"),
        Param("retry_gap_s", 0.1, 0.001, 10.0, unit="s", help="how soon a client ignoring Retry-After retries"),
        Param("max_attempts", 10, 1, 50, unit="attempts", help="attempts before a bursty user gives up"),
        Param("attacker_keys", 1, 0, 1000, unit="keys", key=True, help="API keys the attacker spreads its traffic over"),
        Param("attack_rps", 1000.0, 0.0, 20000.0, unit="req/s", help="the attacker's total rate"),
        Param("global_rps", 200.0, 1.0, 100000.0, unit="req/s", help="the global limit's rate (burst: one second)"),
        Param("burst_multiple", 2.0, 1.1, 20.0, unit="x R", help="the burst probe's rate as a multiple of R"),
        Param("edge_probe", "edge", choices=("edge", "uniform"),
              help="edge: N requests just before and N at a window boundary; uniform: just under R (control)"),
    )
    exercises = (
        Exercise("Give the bucket ten seconds of depth (burst_tokens = 100). How long does a 2x burst last now?",
                 {"burst_tokens": 100}, ("pattern", "burst_duration_s"),
                 why="At k times the rate a full bucket drains at (k − 1)·R tokens per second, so it lasts B ÷ ((k − "
                 "1)·R): 100 ÷ 10 = 10 s at twice the rate."),
        Exercise("The attacker rotates over 30 keys. How many requests per second get through now?",
                 {"attacker_keys": 30}, ("pattern", "attacker_admitted_rps"),
                 why="Each key has its own bucket, so an attacker gets R + B/T per key: thirty keys buy about thirty "
                 "times the rate. A per-key limit cannot cap a client that mints keys."),
        Exercise("Fair users send at 1.5x their limit during on periods. What share of their calls is refused?",
                 {"fair_load_x": 1.5}, ("pattern", "fair_rejection_rate_pct"),
                 why="During on periods the users send half again their refill; once the bucket's burst is spent, "
                 "about a third of their calls exceed the rate and are refused until an off period refills it."),
    )

    def simulate(self, seed: int, p) -> Outcome:
        s = Streams(seed)
        tr = _traffic(s, p)
        m = Measurements(self.arm_names)
        series = []
        for arm in self.arm_names:
            full = arm in ("baseline", "global")
            t, key = (tr["t_full"], tr["k_full"]) if full else (tr["t_thin"], tr["k_thin"])
            if arm == "baseline":  # nothing is refused: every request is admitted on its first attempt
                r = {"ok": np.ones(t.size, bool), "attempts": np.ones(t.size, np.int64), "when": t.copy(), "refused": 0}
            else:
                if arm == "global":
                    limiters = [EnvoyTokenBucket(p.global_rps, p.global_rps * 0.1, 0.1, "on_access")] * tr["n_keys"]
                else:
                    limiters = [Unlimited() if math.isinf(tr["rate"][k]) else
                                make_limiter(KIND[arm], tr["rate"][k], tr["burst"][k], p.window_s, p.refill,
                                             p.fill_interval_s) for k in range(tr["n_keys"])]
                r = serve(t, key, limiters, tr["honour"], p.retry_gap_s, p.max_attempts)
            _measure(m, arm, p, tr, key, r)
            counts, _ = np.histogram(r["when"][r["ok"]], bins=np.arange(0, p.duration_s + 1, 1.0))
            series.append(pd.DataFrame({"time_s": np.arange(len(counts)) + 0.5, "backend_rps": counts, "arm": arm}))
            if arm in KEYED:
                _probes(m, arm, p)
        closed = burst_duration_closed_form(p.burst_tokens, p.rate_rps, p.burst_multiple)
        notes = [f"{len(tr['t_full']):,} requests offered in {p.duration_s:g} s; token bucket refill: "
                 f"{'continuous on access (Envoy >= 1.31)' if p.refill == 'on_access' else 'timer (Envoy <= 1.30)'}.",
                 f"Closed form: a {p.burst_multiple:g}x burst from a full bucket lasts B / ((k - 1) R) = {closed:.3g} s; "
                 f"an attacker key is held to R + B / T = {p.rate_rps + p.burst_tokens / p.duration_s:.3g} req/s."]
        return Outcome(m, {"backend": pd.concat(series, ignore_index=True)}, notes=notes)

    def plots(self, result):
        from .plotting import bar_chart, line_chart

        rows = [{"arm": a, "pct": result.metrics[a]["fair_rejection_rate_pct"],
                 "low": result.intervals[a].get("fair_rejection_rate_pct", (np.nan,) * 2)[0],
                 "high": result.intervals[a].get("fair_rejection_rate_pct", (np.nan,) * 2)[1]} for a in self.arm_names]
        return [line_chart(result.series["backend"], "time_s", "backend_rps", "Requests reaching the backend",
                           "time (s)", "admitted per second (log)", log_y=True),
                bar_chart(pd.DataFrame(rows), "arm", "pct", "Fair users' calls refused", "refused (%)", color="arm",
                          low="low", high="high", rules=[(5.0, "5%")])]


def _traffic(s: Streams, p) -> dict:
    """Every request's first attempt (time, key), each key's limit, and who retries."""
    F, Bn, K, T = p.fair_users, p.bursty_users, p.attacker_keys, p.duration_s
    u = s["tier"].random(F)
    mult = np.where(u < (p.pro_pct + p.enterprise_pct) / 100, p.pro_multiplier, 1.0)
    unlimited = u < p.enterprise_pct / 100
    rate = np.concatenate([np.where(unlimited, np.inf, p.rate_rps * mult), np.full(Bn + K, p.rate_rps)])
    burst = np.concatenate([p.burst_tokens * mult, np.full(Bn + K, float(p.burst_tokens))])
    times, keys = [], []
    g = s["fair"]
    for f in range(F):
        on = g.random() < p.on_s / (p.on_s + p.off_s)
        t = 0.0
        while t < T:
            d = g.exponential(p.on_s if on else p.off_s) if (p.off_s > 0 or not on) else T
            if on:
                a = t + np.cumsum(g.exponential(1 / (p.fair_load_x * p.rate_rps * mult[f]), 4 * int(
                    d * p.fair_load_x * p.rate_rps * mult[f]) + 16))
                a = a[a < min(t + d, T)]
                times.append(a)
                keys.append(np.full(a.size, f))
            t, on = t + d, not on if p.off_s > 0 else True
    size = math.ceil(p.bursty_size_x * p.burst_tokens)
    gb = s["bursty"]
    for b in range(Bn):
        starts = np.arange(gb.uniform(0, p.bursty_every_s), T, p.bursty_every_s)
        a = (starts[:, None] + gb.uniform(0, 0.1, (starts.size, size))).ravel()
        times.append(a[a < T])
        keys.append(np.full(times[-1].size, F + b))
    n_honour = int(round(Bn * p.honour_pct / 100))  # the first n_honour bursty users honour Retry-After
    honour = [None] * F + [b < n_honour for b in range(Bn)] + [None] * K
    base_t, base_k = np.concatenate(times or [np.zeros(0)]), np.concatenate(keys or [np.zeros(0, int)])
    n_att = s["attack"].poisson(p.attack_rps * T) if K else 0
    at = np.sort(s["attack"].uniform(0, T, n_att))
    ak = F + Bn + s["attack_key"].integers(0, max(K, 1), n_att)
    keep = s["thin"].random(n_att) < min(1.0, THIN_X * p.rate_rps * max(K, 1) / max(p.attack_rps, 1e-9))
    out = {"rate": rate, "burst": burst, "honour": honour, "n_keys": F + Bn + K, "att_sent": n_att,
           "tier": np.concatenate([np.where(unlimited, 2, np.where(mult > 1, 1, 0)), np.full(Bn + K, -1)])}
    for name, (t, k) in {"full": (at, ak), "thin": (at[keep], ak[keep])}.items():
        tt, kk = np.concatenate([base_t, t]), np.concatenate([base_k, k]).astype(np.int64)
        order = np.argsort(tt, kind="stable")
        out[f"t_{name}"], out[f"k_{name}"] = tt[order], kk[order]
    return out


def _measure(m: Measurements, arm: str, p, tr: dict, key, r: dict) -> None:
    F, Bn = p.fair_users, p.bursty_users
    fair, bursty, att = key < F, (key >= F) & (key < F + Bn), key >= F + Bn
    ok, T = r["ok"], p.duration_s
    att_ok = int(ok[att].sum())
    att_refused = tr["att_sent"] - att_ok  # counted at the attacker's real rate
    attempts = int(r["attempts"][~att].sum()) + tr["att_sent"]
    refused = r["refused"] - int((~ok[att]).sum()) + att_refused
    m.share(arm, "rejection_rate_pct", refused, attempts, missing="no request was sent")
    m.share(arm, "fair_rejection_rate_pct", int((~ok[fair]).sum()), int(fair.sum()),
            missing="the fair users sent nothing in this run")
    tier = tr["tier"][key]
    for name, code in (("free", 0), ("pro", 1)):
        sel = fair & (tier == code)
        m.share(arm, f"fair_rejection_{name}_pct", int((~ok[sel]).sum()), int(sel.sum()),
                missing=f"no {name}-tier user sent anything in this run")
    hit = np.bincount(key[fair & ~ok], minlength=F)[:F] > 0
    m.value(arm, "fair_users_refused", float(hit.sum()))  # fair users who saw at least one 429
    used = np.bincount(key[fair & ok], minlength=F)[:F]
    limited = np.isfinite(tr["rate"][:F])
    m.mean(arm, "quota_utilization_pct", 100 * used[limited] / (tr["rate"][:F][limited] * T),
           missing="no fair user has a per-key quota (all enterprise)")
    m.share(arm, "bursty_served_pct", int(ok[bursty].sum()), int(bursty.sum()), missing="no bursty users")
    code = np.array([-1 if h is None else int(h) for h in tr["honour"]])[key]
    for name, flag in (("honour", True), ("ignore", False)):
        sel = bursty & (code == int(flag))
        m.value(arm, f"attempts_per_call_{name}_x", r["attempts"][sel].mean() if sel.any() else np.nan,
                missing=f"no bursty user who {'honours' if flag else 'ignores'} Retry-After")
    m.value(arm, "attacker_admitted_rps", att_ok / T if p.attacker_keys else np.nan, missing="no attacker")
    counts = np.histogram(r["when"][ok], bins=np.arange(0, T + 1, 1.0))[0]
    m.value(arm, "backend_rps", (ok[~att].sum() + att_ok) / T)  # admitted counts match the real attack rate
    m.value(arm, "backend_peak_rps", float(counts.max()) if counts.size else np.nan,
            missing="the run is shorter than one second")


def _probes(m: Measurements, arm: str, p) -> None:
    """One fresh free-tier key per probe: greedy second, k x R burst, window-edge pair."""
    R, B, W = p.rate_rps, p.burst_tokens, p.window_s
    new = lambda: make_limiter(KIND[arm], R, B, W, p.refill, p.fill_interval_s)  # noqa: E731
    lim = new()
    greedy = sum(lim.acquire(t) == 0.0 for t in np.arange(0, 1.0, 1e-3).tolist())
    m.value(arm, "burst_capacity_x", greedy / R)
    k = p.burst_multiple
    horizon = min(10 * (burst_duration_closed_form(B, R, k) + 1), 50_000 / (k * R))
    lim, first = new(), np.nan
    for t in (np.arange(int(horizon * k * R)) / (k * R)).tolist():
        if lim.acquire(t) > 0:
            first = t
            break
    m.value(arm, "burst_duration_s", first, missing=f"never refused within {horizon:.3g} s")
    N = max(1, int(round(R * W)))
    if N > 20_000:
        m.missing(arm, "edge_burst_x", f"a window limit of {N:,} requests is too large to probe")
        return
    lim = new()
    if p.edge_probe == "edge":
        t = np.concatenate([np.full(N, W - 1e-3), np.full(N, W)])
    else:
        t = np.arange(4 * N) * (W / N) * 1.001 + W / (2 * N)
    admitted = t[[lim.acquire(x) == 0.0 for x in t.tolist()]]
    peak = max(np.searchsorted(admitted, a + W, side="right") - i for i, a in enumerate(admitted)) if admitted.size \
        else 0
    m.value(arm, "edge_burst_x", peak / N)


LAB = RateLimitLab()
