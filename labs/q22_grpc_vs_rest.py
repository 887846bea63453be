"""Q22: gRPC or REST between services: what the protocol buys and what connection reuse alone buys.

Real part (``sim.rpc``, committed profile ``data/profiles/rpc_loopback.json`` or ``profile = live``):
the payload written by stdlib json, orjson, msgpack and protobuf (bytes, encode and decode time),
and one handler reached on 127.0.0.1 over HTTP/1.1 (uvicorn, kept-alive or new connection per
request), gRPC (grpcio) and h2c (hypercorn), with each server's CPU per request and a TLS 1.3
handshake's CPU. Simulated part (``sim.connections``): those measured costs on a link of
``rtt_ms`` to a server of ``cores`` cores, under the three connection policies: a new (TLS)
connection per call, a keep-alive pool with one call in flight per connection, and multiplexed
HTTP/2 streams. Latency from an open Poisson stream; throughput from ``callers`` back-to-back
callers. All arms share arrivals and the per-request caller-time quantiles (common random numbers).
Per-core throughput is that of these Python stacks, not of Go or C++ servers.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sim.connections import CallCost, Link, closed_loop, open_loop, throughput
from sim.rpc import ENCODERS, PAYLOADS, PROBE_PAYLOAD, load_profile
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param
from .kit import arrival_rate, request_budget
from .measure import Measurements

ARMS = ("baseline", "keepalive", "orjson", "pattern")
NATIVE = {"http1_keepalive": "json", "http1_new_connection": "json", "grpc": "protobuf"}


def _arm_setup(arm: str, p) -> tuple[str, str, str]:
    """(transport probed, encoder, connection policy) of an arm."""
    if arm == "pattern":
        return "grpc", "protobuf", "multiplexed"
    if arm == "orjson":
        return "http1_keepalive", "orjson", "keep_alive"
    if arm == "baseline" and p.rest_connection == "per_request":
        return "http1_new_connection", p.rest_encoding, "per_request"
    return "http1_keepalive", p.rest_encoding, "keep_alive"


class GrpcVsRestLab(Lab):
    id = "q22"
    headline = ("comparison", "latency_ratio_x")
    refine_param = "requests"
    profiles = ()
    arms = (Arm("baseline", "REST, connection per call", "HTTP/1.1 on uvicorn, rest_encoding, a new TCP (+TLS) "
                "connection per call unless rest_connection = keep_alive"),
            Arm("keepalive", "REST, keep-alive", "the same REST stack over a pool of pool_size persistent "
                "connections, one call in flight on each"),
            Arm("orjson", "REST, keep-alive, orjson", "the keep-alive REST stack with orjson as the encoder"),
            Arm("pattern", "gRPC", "grpcio over one HTTP/2 connection (streams multiplexed), protobuf"),
            Arm("comparison", "Between arms", "REST over gRPC ratios; the share of the gap keep-alive closes"))
    assumptions = (
        "Costs are measured on loopback (sim.rpc): each call's caller time is a draw from the measured round trip "
        "minus the server's measured CPU; the server's CPU per call is its measured median.",
        "Another encoder or payload shifts the caller by its measured encode time and the server by its decode "
        "time, relative to the probed record (JSON for REST, protobuf for gRPC).",
        "A new connection costs 1 RTT (TCP) and, with tls, 1 more RTT plus the measured TLS 1.3 handshake CPU "
        "(server share queued on its cores); kept-alive and HTTP/2 connections are opened before the window.",
        "Record encryption on a warm TLS connection is not charged (AES-GCM is negligible at these sizes).",
        "One fixed-RTT link; no packet loss, slow start or Nagle delay.",
        "Per-core throughput is that of Python servers (uvicorn/Starlette, grpcio) on the measuring CPU.",
    )
    params = (
        Param("rtt_ms", 1.0, 0.0, 200.0, unit="ms", key=True, help="network round trip between caller and service"),
        Param("rest_connection", "per_request", choices=("per_request", "keep_alive"), key=True,
              help="the REST baseline's connection policy: new connection per call, or keep-alive"),
        Param("tls", True, key=True, help="TLS 1.3 on every connection (handshakes cost RTT and CPU on new ones)"),
        Param("payload", "vector_512", choices=PAYLOADS, key=True,
              help="what a call carries: float32 vector of N values, a keyed record, or the record as an array"),
        Param("rest_encoding", "json", choices=ENCODERS,
              help="encoder of the baseline and keep-alive REST arms (protobuf = same encoder as gRPC)"),
        arrival_rate(200.0, 1.0, 5000.0, key=False),
        request_budget(1500, 500, 100000),
        Param("callers", 64, 1, 1000, unit="callers", help="concurrent back-to-back callers in the throughput run"),
        Param("pool_size", 10, 1, 1000, unit="connections", help="keep-alive connections per caller process"),
        Param("max_concurrent_streams", 100, 1, 10000, unit="streams",
              help="HTTP/2 streams open at once on gRPC's connection (grpc-go clients assume 100)"),
        Param("cores", 1, 1, 64, unit="cores", help="server cores (one worker process each)"),
        Param("handler_ms", 0.0, 0.0, 100.0, unit="ms", help="server work per call besides the protocol (model time)"),
        Param("bandwidth_gbps", 10.0, 0.1, 400.0, unit="Gbit/s", help="link bandwidth (request bytes on the wire)"),
        Param("profile", "reference", choices=("reference", "live"),
              help="measured costs: the committed profile, or measured now on this machine (cached)"),
    )
    exercises = (
        Exercise("Move the services 20 ms apart (rtt_ms = 20). Where does the REST/gRPC latency ratio go?",
                 {"rtt_ms": 20.0}, ("comparison", "latency_ratio_x"),
                 why="As the round trip grows, the fixed costs (stacks, encoding, handshake CPU) fade and the ratio "
                 "tends to the count of round trips: three for REST on a new TLS connection against one for gRPC."),
        Exercise("Keep REST's connections alive (rest_connection = keep_alive). How much of the gap is left?",
                 {"rest_connection": "keep_alive"}, ("comparison", "latency_ratio_x"),
                 why="Keep-alive removes the TCP and TLS handshakes, so REST also pays one round trip per call; what "
                 "is left is the slower HTTP/1.1 stack and JSON encoding."),
        Exercise("Send the record as a positional array. How big is protobuf against JSON now?",
                 {"payload": "record_positional"}, ("comparison", "payload_size_pct"),
                 why="Most of protobuf's saving came from the field names JSON repeats in every record; a positional "
                 "array drops them and leaves only the number encoding."),
        Exercise("Services 50 ms apart with keep-alive: what does the 10-connection pool do to REST throughput?",
                 {"rtt_ms": 50.0, "rest_connection": "keep_alive"}, ("comparison", "throughput_gain_x"),
                 why="A pooled HTTP/1.1 connection carries one call at a time, so REST's throughput is pool size ÷ "
                 "round trip; gRPC multiplexes many streams on one connection, and at 50 ms the pool is the "
                 "limit."),
    )

    # ------------------------------------------------------------------ costs
    def cost(self, arm: str, p, prof: dict, u: np.ndarray) -> tuple[CallCost, dict]:
        transport, enc, policy = _arm_setup(arm, p)
        t, e, hs = prof["transports"][transport], prof["encodings"], prof["handshakes"]
        native = e[PROBE_PAYLOAD][NATIVE[transport]]
        mine = e[p.payload][enc]
        srv = t["server_cpu_us"]
        client = np.quantile(np.asarray(t["latency_us"]), u) - srv + mine["encode_us"] - native["encode_us"]
        server = srv + mine["decode_us"] - native["decode_us"] + 1e3 * p.handler_ms
        tls_srv = hs["tls13_server_cpu_us"]
        tls_cli = max(hs["tls13_handshake_p50_us"] - tls_srv - hs["tcp_connect_p50_us"], 0.0)
        cost = CallCost(np.maximum(client, 0.0) * 1e-6, max(server, 0.0) * 1e-6, 0.0, tls_srv * 1e-6,
                        tls_cli * 1e-6, mine["bytes"])
        slots = {"per_request": 1, "keep_alive": p.pool_size, "multiplexed": p.max_concurrent_streams}[policy]
        return cost, {"transport": transport, "encoder": enc, "policy": policy, "slots": slots, "row": mine,
                      "loopback_p50_us": t["p50_us"]}

    # ------------------------------------------------------------------ simulation
    def simulate(self, seed: int, p) -> Outcome:
        prof = load_profile(p.profile)
        s = Streams(seed)
        n = p.requests
        arrivals = np.cumsum(s["arrivals"].exponential(1.0 / p.rate_rps, n))
        u_open, u_closed = s["caller_time"].random(n), s["caller_time_closed"].random(n)
        link = Link(p.rtt_ms * 1e-3, p.bandwidth_gbps * 1e9 / 8)
        m = Measurements((*ARMS, "comparison"))
        rows, parts = [], []
        for arm in ARMS:
            cost, info = self.cost(arm, p, prof, u_open)
            tls = p.tls and info["policy"] == "per_request"
            run = open_loop(arrivals, cost, link, info["policy"], p.cores, info["slots"], tls)
            m.percentiles(arm, run.latency_s, (50, 99))
            m.batch_mean(arm, "mean_ms", run.latency_s * 1e3)
            ccost, _ = self.cost(arm, p, prof, u_closed)
            crun = closed_loop(n, p.callers, ccost, link, info["policy"], p.cores, info["slots"], tls)
            rps, iv = throughput(crun)
            m.value(arm, "throughput_rps", rps, iv)
            m.value(arm, "throughput_rps_per_core", rps / p.cores, (iv[0] / p.cores, iv[1] / p.cores))
            per_call = cost.server_s + (cost.tls_server_s if tls else 0.0)
            m.value(arm, "server_cpu_us", per_call * 1e6)
            m.value(arm, "cpu_bound_rps_per_core", 1.0 / per_call)
            m.value(arm, "utilization_pct", 100.0 * run.busy_s / (run.window_s * p.cores))
            m.value(arm, "payload_bytes", info["row"]["bytes"])
            m.value(arm, "encode_us", info["row"]["encode_us"], tuple(info["row"]["encode_us_interval"]))
            m.value(arm, "decode_us", info["row"]["decode_us"], tuple(info["row"]["decode_us_interval"]))
            m.value(arm, "loopback_p50_ms", info["loopback_p50_us"] / 1e3)
            rtts = 3 if tls else (2 if info["policy"] == "per_request" else 1)
            rows.append({"arm": arm, "label": self.arm(arm).label, **{k: info[k] for k in ("transport", "encoder",
                         "policy")}, "rtts_per_call": rtts})
            parts += _breakdown(arm, p, cost, link, tls, m.metrics[arm]["p50_ms"])
        c = "comparison"
        m.ratio(c, "latency_ratio_x", ("baseline", "p50_ms"), ("pattern", "p50_ms"))
        m.saving_pct(c, "latency_reduction_pct", ("pattern", "p50_ms"), ("baseline", "p50_ms"))
        m.ratio(c, "keepalive_latency_ratio_x", ("keepalive", "p50_ms"), ("pattern", "p50_ms"))
        m.ratio(c, "throughput_gain_x", ("pattern", "throughput_rps"), ("baseline", "throughput_rps"))
        m.ratio(c, "keepalive_throughput_gain_x", ("pattern", "throughput_rps"), ("keepalive", "throughput_rps"))
        m.value(c, "payload_size_pct", 100.0 * m.metrics["pattern"]["payload_bytes"] / m.metrics["baseline"]["payload_bytes"])
        m.value(c, "orjson_encode_speedup_x", m.metrics["baseline"]["encode_us"] / m.metrics["orjson"]["encode_us"])
        gap = m.metrics["baseline"]["p50_ms"] - m.metrics["pattern"]["p50_ms"]
        closed = m.metrics["baseline"]["p50_ms"] - m.metrics["keepalive"]["p50_ms"]
        m.value(c, "gap_closed_by_keepalive_pct", 100.0 * closed / gap if gap > 0.01 else np.nan,
                missing="REST is not slower than gRPC here, so there is no gap for keep-alive to close")
        m.value(c, "h2c_loopback_p50_ms", prof["transports"]["h2c"]["p50_us"] / 1e3)
        m.value(c, "tls_handshake_ms", prof["handshakes"]["tls13_handshake_p50_us"] / 1e3)
        enc = pd.DataFrame([{"encoder": k, **{f: v[f] for f in ("bytes", "encode_us", "decode_us")}}
                            for k, v in prof["encodings"][p.payload].items()])
        cpu = prof["provenance"]["cpu"]
        notes = [f"{n} Poisson calls at {p.rate_rps:g} req/s per arm for latency; {n} calls from {p.callers} "
                 f"back-to-back callers for throughput; RTT {p.rtt_ms:g} ms, {p.cores} server core(s).",
                 f"Costs measured on loopback ({'committed profile' if p.profile == 'reference' else 'this machine'}: "
                 f"{cpu}, {prof['provenance']['date'][:10]}); per-core throughput is these Python stacks'.",
                 f"Loopback P50: gRPC {prof['transports']['grpc']['p50_us'] / 1e3:.2f} ms, HTTP/1.1 keep-alive "
                 f"{prof['transports']['http1_keepalive']['p50_us'] / 1e3:.2f} ms, new connection "
                 f"{prof['transports']['http1_new_connection']['p50_us'] / 1e3:.2f} ms, h2c "
                 f"{prof['transports']['h2c']['p50_us'] / 1e3:.2f} ms."]
        return Outcome(m, {"setup": pd.DataFrame(rows), "breakdown": pd.DataFrame(parts), "encodings": enc},
                       notes=notes, extras={"profile_cpu": cpu})

    # ------------------------------------------------------------------ plots
    def plots(self, result):
        from .plotting import bar_chart

        lat = pd.DataFrame([{"arm": a, "p50_ms": result.metrics[a]["p50_ms"],
                             "low": result.intervals[a].get("p50_ms", (np.nan,))[0],
                             "high": result.intervals[a].get("p50_ms", (np.nan, np.nan))[1]} for a in ARMS])
        tput = pd.DataFrame([{"arm": a, "rps_per_core": result.metrics[a]["throughput_rps_per_core"]} for a in ARMS])
        enc = result.series["encodings"].melt("encoder", ["encode_us", "decode_us"], var_name="step", value_name="us")
        return [
            bar_chart(result.series["breakdown"], "arm", "ms", "Where a median call's time goes", "ms",
                      color="part", stacked=True),
            bar_chart(lat, "arm", "p50_ms", "Median latency per arm (95% interval)", "P50 (ms)", color="arm",
                      low="low", high="high"),
            bar_chart(tput, "arm", "rps_per_core", "Throughput per server core (Python stacks)", "req/s per core",
                      color="arm", rules=[(10000, "seed: gRPC 10K/core")]),
            bar_chart(result.series["encodings"], "encoder", "bytes", f"Payload size: {result.params['payload']}",
                      "bytes"),
            bar_chart(enc, "encoder", "us", "Encode and decode time per call (measured)", "µs", color="step"),
        ]


def _breakdown(arm: str, p, cost: CallCost, link: Link, tls: bool, p50_ms: float) -> list[dict]:
    """The parts of a median call (ms): network round trips, handshake CPU, server CPU, caller; queueing = rest."""
    net = link.rtt_s * (3 if tls else 2 if _arm_setup(arm, p)[2] == "per_request" else 1) + \
        link.wire_s(cost.request_bytes)
    parts = {"network round trips": net * 1e3,
             "TLS handshake CPU": (cost.tls_server_s + cost.tls_client_s) * 1e3 if tls else 0.0,
             "server CPU": cost.server_s * 1e3, "caller stack": float(np.median(cost.client_s)) * 1e3}
    parts["queueing and spread"] = max(p50_ms - sum(parts.values()), 0.0)
    return [{"arm": arm, "part": k, "ms": v} for k, v in parts.items()]


LAB = GrpcVsRestLab()
