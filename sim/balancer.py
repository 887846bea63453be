"""Load-balancing policies and a farm of FIFO replicas behind them.

Reference implementation: Envoy's upstream load balancers (REFERENCES.md §8,
``envoyproxy/envoy`` ``source/extensions/load_balancing_policies/``):

``RoundRobin``
    Envoy ``ROUND_ROBIN`` with equal weights: the next host in a fixed order,
    wrapping around (``hosts[rr_index++ % size]``).
``RandomPick``
    Envoy ``RANDOM``: a uniformly random host.
``LeastRequest``
    Envoy ``LEAST_REQUEST`` with equal weights and the ``N_CHOICES`` selection
    method (``least_request_lb.cc``, ``unweightedHostPickNChoices``): draw
    ``choice_count`` hosts at random *with replacement* (default 2: "power of
    two choices", P2C) and keep the one with the fewest active requests; the
    first drawn wins ties (a later draw replaces the candidate only when it has
    strictly fewer). Active requests are the requests sent to a host and not
    yet answered (queued or in service), as Envoy's ``rq_active``.
``RingHash``
    Envoy ``RING_HASH`` (Ketama; ``ring_hash_lb.cc``): with equal weights every
    host gets ``ceil(minimum_ring_size / hosts)`` ring entries (capped by
    ``maximum_ring_size``), entry ``i`` of a host hashed as
    ``xxHash64("<host>_<i>")``; a request's key hash goes to the first entry
    clockwise whose hash is >= the key's (wrapping to the first entry). Adding
    one host to N gives it about 1/(N+1) of the keys; because every host's
    entry count ``ceil(minimum_ring_size / N)`` shrinks too, some keys also move
    between the old hosts (about 18% move in all for 9 -> 10 hosts at the
    default 1024, against 1/10 for an ideal consistent hash). Optional bounded load
    (``hash_balance_factor`` >= 100, Envoy's ``BoundedLoadHashingLoadBalancer``
    in ``thread_aware_lb_impl.cc``, after Mirrokni et al. 2016): a host may hold
    at most ``ceil(ceil((all_active + 1) * factor / 100) * weight)`` active
    requests; an overloaded host's request probes the other hosts in a random
    order seeded by the key hash and takes the first one within its bound
    (else the least overloaded). Envoy seeds ``std::mt19937`` with the hash;
    here a numpy PCG64 seeded by the hash plays that part (same semantics,
    different probe order).

Hashes are xxHash64 with seed 0 (Envoy's default ``hash_function: XX_HASH``,
``HashUtil::xxHash64``), implemented below in pure Python and checked against
the reference test vectors and the system libxxhash in the tests.

Every policy has ``pick(key, active, hosts) -> host``: ``key`` is the request's
64-bit hash (ignored by non-hash policies), ``active`` a sequence of active
request counts indexed by host id, ``hosts`` the ids that may receive traffic
(ready replicas). Policies whose choice never looks at ``active``
(``static = True``) also offer ``route(keys, hosts)``, a vectorised pick for a
whole run.

``FifoFarm`` / ``simulate_farm``: single-worker FIFO replicas (one request at a
time per replica, as a model server with one inference worker) advanced request
by request. A request's start and end are known the moment it is routed
(``start = max(arrival, previous end on that replica)``, the Lindley
recursion), so the farm needs no event per request: departures sit in a heap
and are retired when the clock passes them, which keeps every host's active
count exact at each routing decision. The tests check it against a SimPy model
with one ``simpy.Resource`` per replica, request by request. A client timeout
makes a request that would start later than ``arrival + timeout`` give up
without being served (it counts as active until it gives up).
"""
from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "xxhash64",
    "RoundRobin",
    "RandomPick",
    "LeastRequest",
    "RingHash",
    "FifoFarm",
    "FarmRun",
    "simulate_farm",
    "lindley_ends",
    "keys_moved_fraction",
]

# --------------------------------------------------------------------------- xxHash64
_M64 = (1 << 64) - 1
_P1 = 11400714785074694791
_P2 = 14029467366897019727
_P3 = 1609587929392839161
_P4 = 9650029242287828579
_P5 = 2870177450012600261


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _round(acc: int, lane: int) -> int:
    acc = (acc + lane * _P2) & _M64
    return (_rotl(acc, 31) * _P1) & _M64


def _merge(acc: int, val: int) -> int:
    acc ^= _round(0, val)
    return (acc * _P1 + _P4) & _M64


def xxhash64(data: bytes | str, seed: int = 0) -> int:
    """xxHash64 of ``data`` (UTF-8 for a str) with ``seed``; the 64-bit digest as an int."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    n = len(data)
    p = 0
    if n >= 32:
        v1 = (seed + _P1 + _P2) & _M64
        v2 = (seed + _P2) & _M64
        v3 = seed & _M64
        v4 = (seed - _P1) & _M64
        limit = n - 32
        while p <= limit:
            a, b, c, d = (int.from_bytes(data[p + 8 * k:p + 8 * k + 8], "little") for k in range(4))
            v1, v2, v3, v4 = _round(v1, a), _round(v2, b), _round(v3, c), _round(v4, d)
            p += 32
        h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _M64
        for v in (v1, v2, v3, v4):
            h = _merge(h, v)
    else:
        h = (seed + _P5) & _M64
    h = (h + n) & _M64
    while p + 8 <= n:
        k1 = _round(0, int.from_bytes(data[p:p + 8], "little"))
        h ^= k1
        h = (_rotl(h, 27) * _P1 + _P4) & _M64
        p += 8
    if p + 4 <= n:
        h ^= (int.from_bytes(data[p:p + 4], "little") * _P1) & _M64
        h = (_rotl(h, 23) * _P2 + _P3) & _M64
        p += 4
    while p < n:
        h ^= (data[p] * _P5) & _M64
        h = (_rotl(h, 11) * _P1) & _M64
        p += 1
    h ^= h >> 33
    h = (h * _P2) & _M64
    h ^= h >> 29
    h = (h * _P3) & _M64
    h ^= h >> 32
    return h


# --------------------------------------------------------------------------- policies
class _Uniforms:
    """Uniform draws from a numpy Generator, fetched in blocks (one Python float per call)."""

    __slots__ = ("_rng", "_buf", "_k", "_block")

    def __init__(self, rng: np.random.Generator, block: int = 4096):
        self._rng, self._block = rng, block
        self._buf: list[float] = []
        self._k = 0

    def __call__(self) -> float:
        if self._k >= len(self._buf):
            self._buf = self._rng.random(self._block).tolist()
            self._k = 0
        u = self._buf[self._k]
        self._k += 1
        return u

    def take(self, m: int) -> np.ndarray:
        """The next ``m`` draws as an array (the same values ``m`` calls would return)."""
        rest = np.asarray(self._buf[self._k:], dtype=float)
        if rest.size >= m:
            self._k += m
            return rest[:m]
        self._buf, self._k = [], 0
        return np.concatenate([rest, self._rng.random(m - rest.size)])


class RoundRobin:
    """Envoy ROUND_ROBIN with equal weights: hosts in turn."""

    name = "ROUND_ROBIN"
    static = True

    def __init__(self, start: int = 0):
        self.index = int(start)

    def pick(self, key, active, hosts: Sequence[int]) -> int:
        h = hosts[self.index % len(hosts)]
        self.index += 1
        return h

    def route(self, keys, hosts: Sequence[int], n: int | None = None) -> np.ndarray:
        n = len(keys) if n is None else n
        hosts = np.asarray(hosts)
        out = hosts[(self.index + np.arange(n)) % hosts.size]
        self.index += n
        return out


class RandomPick:
    """Envoy RANDOM: a uniformly random host."""

    name = "RANDOM"
    static = True

    def __init__(self, rng: np.random.Generator):
        self._u = _Uniforms(rng)

    def pick(self, key, active, hosts: Sequence[int]) -> int:
        return hosts[int(self._u() * len(hosts))]

    def route(self, keys, hosts: Sequence[int], n: int | None = None) -> np.ndarray:
        n = len(keys) if n is None else n
        hosts = np.asarray(hosts)
        return hosts[np.array([int(self._u() * hosts.size) for _ in range(n)], dtype=np.int64)]


class LeastRequest:
    """Envoy LEAST_REQUEST, equal weights, N_CHOICES: fewest active of ``choice_count`` random draws."""

    name = "LEAST_REQUEST"
    static = False

    def __init__(self, rng: np.random.Generator, choice_count: int = 2):
        if choice_count < 1:
            raise ValueError(f"choice_count must be >= 1, got {choice_count}")
        self.choice_count = int(choice_count)
        self._u = _Uniforms(rng)

    def pick(self, key, active, hosts: Sequence[int]) -> int:
        u, n = self._u, len(hosts)
        best = hosts[int(u() * n)]
        best_active = active[best]
        for _ in range(self.choice_count - 1):
            h = hosts[int(u() * n)]
            a = active[h]
            if a < best_active:
                best, best_active = h, a
        return best

    def candidates(self, n: int, n_hosts: int) -> np.ndarray:
        """The host indices the next ``n`` picks will draw, shape (n, choice_count).

        Each pick consumes exactly ``choice_count`` uniforms whatever the loads,
        so a run's draws can be made up front (a fast path for ``simulate_farm``).
        """
        u = self._u.take(n * self.choice_count).reshape(n, self.choice_count)
        return (u * n_hosts).astype(np.int64)


class RingHash:
    """Envoy RING_HASH (Ketama) over equal-weight hosts, optionally with bounded load.

    ``host_names`` maps a host id to the string hashed onto the ring (Envoy
    hashes the address, or the hostname with ``use_hostname_for_hashing``).
    """

    name = "RING_HASH"
    DEFAULT_MINIMUM_RING_SIZE = 1024
    DEFAULT_MAXIMUM_RING_SIZE = 8 * 1024 * 1024

    def __init__(self, hosts: Sequence[int], minimum_ring_size: int = DEFAULT_MINIMUM_RING_SIZE,
                 maximum_ring_size: int = DEFAULT_MAXIMUM_RING_SIZE, hash_balance_factor: int = 0,
                 host_name=lambda h: f"replica-{h}"):
        if minimum_ring_size < 1 or maximum_ring_size < minimum_ring_size:
            raise ValueError("need 1 <= minimum_ring_size <= maximum_ring_size")
        if hash_balance_factor and hash_balance_factor < 100:
            raise ValueError(f"hash_balance_factor must be 0 (off) or >= 100, got {hash_balance_factor}")
        self.minimum_ring_size = int(minimum_ring_size)
        self.maximum_ring_size = int(maximum_ring_size)
        self.hash_balance_factor = int(hash_balance_factor)
        self.static = self.hash_balance_factor == 0
        self._host_name = host_name
        self.set_hosts(hosts)

    # ---- ring
    def set_hosts(self, hosts: Sequence[int]) -> None:
        """Rebuild the ring for a new host set (Envoy rebuilds on every membership change)."""
        self.hosts = [int(h) for h in hosts]
        self._probe_orders: dict[int, list[int]] = {}
        if not self.hosts:
            raise ValueError("a ring needs at least one host")
        n = len(self.hosts)
        weight = 1.0 / n
        scale = min(math.ceil(weight * self.minimum_ring_size) / weight, float(self.maximum_ring_size))
        entries = []
        current, target = 0.0, 0.0
        for h in self.hosts:
            target += scale * weight
            i = 0
            name = self._host_name(h)
            while current < target:
                entries.append((_ring_hash(f"{name}_{i}"), h))
                i += 1
                current += 1
        entries.sort(key=lambda e: e[0])
        self.ring_hashes = [e[0] for e in entries]
        self.ring_hosts = [e[1] for e in entries]
        self._ring_hosts_arr = np.array(self.ring_hosts, dtype=np.int64)
        self._ring_hashes_arr = np.array(self.ring_hashes, dtype=np.uint64)

    @property
    def ring_size(self) -> int:
        return len(self.ring_hashes)

    def host_for_hash(self, h: int) -> int:
        """First ring entry clockwise with hash >= h (wrapping), as Ketama's lookup."""
        k = bisect.bisect_left(self.ring_hashes, int(h))
        return self.ring_hosts[k if k < len(self.ring_hosts) else 0]

    def route(self, keys, hosts: Sequence[int] | None = None, n: int | None = None) -> np.ndarray:
        """Vectorised ``host_for_hash`` for an array of uint64 key hashes (the ring's own hosts)."""
        keys = np.asarray(keys, dtype=np.uint64)
        k = np.searchsorted(self._ring_hashes_arr, keys, side="left")
        k[k >= self._ring_hashes_arr.size] = 0
        return self._ring_hosts_arr[k]

    # ---- picking
    def pick(self, key, active, hosts: Sequence[int] | None = None) -> int:
        host = self.host_for_hash(key)
        if not self.hash_balance_factor:
            return host
        total = sum(active[h] for h in self.hosts)
        over = self._overload(active[host], total)
        if over <= 1.0:
            return host
        order = self._probe_orders.get(key)
        if order is None:
            rng = np.random.Generator(np.random.PCG64(int(key)))
            order = self._probe_orders[key] = [self.hosts[int(k)] for k in rng.permutation(len(self.hosts))]
        best, best_over = host, over
        for alt in order:
            if alt == host:
                continue
            o = self._overload(active[alt], total)
            if o <= 1.0:
                return alt
            if o < best_over:
                best, best_over = alt, o
        return best

    def slots(self, all_active: int) -> int:
        """Bounded load: the most active requests one (equal-weight) host may hold."""
        total_slots = ((all_active + 1) * self.hash_balance_factor + 99) // 100
        return max(math.ceil(total_slots / len(self.hosts)), 1)

    def _overload(self, host_active: int, all_active: int) -> float:
        return host_active / self.slots(all_active)


def _ring_hash(s: str) -> int:
    return xxhash64(s)


def keys_moved_fraction(before: RingHash, after: RingHash, key_hashes) -> float:
    """Share of keys whose host differs between two rings (consistent hashing's remap cost)."""
    a, b = before.route(key_hashes), after.route(key_hashes)
    return float(np.mean(a != b))


# --------------------------------------------------------------------------- the farm
def lindley_ends(arrivals: np.ndarray, service: np.ndarray) -> np.ndarray:
    """End times of one FIFO single-server queue (vectorised Lindley recursion).

    ``end_n = max(arrival_n, end_{n-1}) + service_n`` unrolls to
    ``end_n = S_n + max_{k<=n}(arrival_k - S_{k-1})`` with ``S`` the running sum
    of service times, so a cumulative maximum does the whole queue at once.
    """
    a = np.asarray(arrivals, dtype=float)
    s = np.asarray(service, dtype=float)
    if a.size == 0:
        return a.copy()
    S = np.cumsum(s)
    S_prev = S - s
    return S + np.maximum.accumulate(a - S_prev)


@dataclass
class FarmRun:
    """Per request: the host it went to, when service started and ended, whether it was served."""

    host: np.ndarray
    start: np.ndarray
    end: np.ndarray
    served: np.ndarray

    @property
    def n(self) -> int:
        return self.host.size


class FifoFarm:
    """Single-worker FIFO replicas, advanced request by request in time order.

    ``route(t, service, key)`` picks a host with the policy among ``hosts``
    (the ones that may take traffic), queues the request there and returns
    ``(host, start, end, served)``; ``route_batch`` does the same for a run of
    arrivals up to a time. Arrivals must come in non-decreasing time. Hosts are
    added with ``add_host`` and taken out of rotation with ``hosts.remove``
    (they still finish what they hold: a graceful drain).

    Busy time needs no per-request record: a FIFO worker that has been handed
    every request arriving before ``t`` is busy without a gap from ``t`` until
    its last end, so its busy seconds up to ``t`` are the service it was given
    minus ``max(last_end - t, 0)``.
    """

    def __init__(self, policy, n_hosts: int = 0, timeout: float = math.inf):
        self.policy = policy
        self.timeout = float(timeout)
        self.active: list[int] = []
        self.last_end: list[float] = []
        self.total_service: list[float] = []
        self.served_by: list[int] = []
        self.first_start: list[float] = []
        self.hosts: list[int] = []
        self._heap: list[tuple[float, int]] = []
        # for the time-average of requests in flight: sums of arrival and leave times per host,
        # and of the leave times of the requests still in flight
        self._arr_sum: list[float] = []
        self._leave_sum: list[float] = []
        self._open_leave_sum: list[float] = []
        for _ in range(n_hosts):
            self.add_host(in_rotation=True)

    def add_host(self, in_rotation: bool = False) -> int:
        h = len(self.active)
        self.active.append(0)
        self.last_end.append(-math.inf)
        self.total_service.append(0.0)
        self.served_by.append(0)
        self.first_start.append(math.nan)
        self._arr_sum.append(0.0)
        self._leave_sum.append(0.0)
        self._open_leave_sum.append(0.0)
        if in_rotation:
            self.hosts.append(h)
        return h

    def advance(self, t: float) -> None:
        """Retire every request that has left (answered or given up) by time ``t``."""
        heap, active, open_sum = self._heap, self.active, self._open_leave_sum
        while heap and heap[0][0] <= t:
            leave, h = heapq.heappop(heap)
            active[h] -= 1
            open_sum[h] -= leave

    def route(self, t: float, service: float, key: int = 0):
        self.advance(t)
        h = self.policy.pick(key, self.active, self.hosts)
        return (h, *self.enqueue(h, t, service))

    def enqueue(self, h: int, t: float, service: float):
        """Queue a request that arrives at ``t`` on host ``h``; returns (start, end, served)."""
        last = self.last_end[h]
        start = t if last < t else last
        self.active[h] += 1
        self._arr_sum[h] += t
        if start - t > self.timeout:
            leave = t + self.timeout
            heapq.heappush(self._heap, (leave, h))
            self._leave_sum[h] += leave
            self._open_leave_sum[h] += leave
            return start, leave, False
        end = start + service
        self.last_end[h] = end
        heapq.heappush(self._heap, (end, h))
        self._leave_sum[h] += end
        self._open_leave_sum[h] += end
        self.total_service[h] += service
        if self.served_by[h] == 0:
            self.first_start[h] = start
        self.served_by[h] += 1
        return start, end, True

    def route_batch(self, arrivals: list, service: list, keys: list, i: int, t_stop: float,
                    host, start, end, served) -> int:
        """Route arrivals ``i, i+1, ...`` that come before ``t_stop``; fill the output arrays; return the next i."""
        n = len(arrivals)
        heap, active, pick, enqueue = self._heap, self.active, self.policy.pick, self.enqueue
        pop = heapq.heappop
        hosts = self.hosts
        pol = self.policy
        if isinstance(pol, LeastRequest) and pol.choice_count == 2 and hosts:
            # fast path, same draws and choices as pick(): two uniforms per request
            j = bisect.bisect_left(arrivals, t_stop, lo=i)
            last_end, total, served_by, tmo = self.last_end, self.total_service, self.served_by, self.timeout
            arr_sum, leave_sum, open_sum = self._arr_sum, self._leave_sum, self._open_leave_sum
            push = heapq.heappush
            u = pol._u.take(2 * (j - i)).tolist()
            m = len(hosts)
            for k in range(i, j):
                t = arrivals[k]
                while heap and heap[0][0] <= t:
                    lv, hh = pop(heap)
                    active[hh] -= 1
                    open_sum[hh] -= lv
                q = 2 * (k - i)
                h = hosts[int(u[q] * m)]
                h2 = hosts[int(u[q + 1] * m)]
                if active[h2] < active[h]:
                    h = h2
                last = last_end[h]
                st = t if last < t else last
                active[h] += 1
                arr_sum[h] += t
                host[k] = h
                start[k] = st
                if st - t > tmo:
                    lv = t + tmo
                    end[k] = lv
                    served[k] = False
                    push(heap, (lv, h))
                    leave_sum[h] += lv
                    open_sum[h] += lv
                    continue
                sv = service[k]
                en = st + sv
                last_end[h] = en
                push(heap, (en, h))
                leave_sum[h] += en
                open_sum[h] += en
                total[h] += sv
                if served_by[h] == 0:
                    self.first_start[h] = st
                served_by[h] += 1
                end[k] = en
                served[k] = True
            return j
        advance = self.advance
        while i < n:
            t = arrivals[i]
            if t >= t_stop:
                break
            if heap and heap[0][0] <= t:
                advance(t)
            h = pick(keys[i], active, hosts)
            st, en, ok = enqueue(h, t, service[i])
            host[i], start[i], end[i], served[i] = h, st, en, ok
            i += 1
        return i

    def busy_until(self, h: int, t: float) -> float:
        """Seconds host ``h`` spent serving up to ``t`` (every arrival before ``t`` already routed)."""
        return self.total_service[h] - max(self.last_end[h] - t, 0.0)

    def in_flight_area(self, h: int, t: float) -> float:
        """Request-seconds host ``h`` held up to ``t``: the integral of its requests in flight.

        Every arrival before ``t`` must have been routed. Each request counts from
        arrival until it leaves (answered or gave up):
        sum(min(leave, t) - arrival) = leaves done + t x still in flight - arrivals.
        """
        self.advance(t)
        done = self._leave_sum[h] - self._open_leave_sum[h]
        return done + self.active[h] * t - self._arr_sum[h]

    def in_flight(self, h: int, t: float) -> int:
        """Active requests on host ``h`` at time ``t`` (retires departures up to t first)."""
        self.advance(t)
        return self.active[h]


def simulate_farm(arrivals, service, policy, n_hosts: int, keys=None, timeout: float = math.inf) -> FarmRun:
    """Route every request through ``policy`` onto ``n_hosts`` FIFO replicas.

    Static policies with no timeout take the vectorised path (route all, then a
    Lindley recursion per host); otherwise requests go one at a time through a
    ``FifoFarm``. Both give the same numbers for the same routing. A request
    that gave up has ``served`` False and ``end`` = arrival + timeout.
    """
    a = np.asarray(arrivals, dtype=float)
    s = np.asarray(service, dtype=float)
    n = a.size
    if keys is None:
        keys = np.zeros(n, dtype=np.uint64)
    hosts = list(range(n_hosts))
    if getattr(policy, "static", False) and math.isinf(timeout):
        host = np.asarray(policy.route(keys, hosts, n), dtype=np.int64)
        start, end = np.empty(n), np.empty(n)
        order = np.argsort(host, kind="stable")
        bounds = np.searchsorted(host[order], np.arange(n_hosts + 1))
        for h in range(n_hosts):
            idx = order[bounds[h]:bounds[h + 1]]
            if idx.size:
                e = lindley_ends(a[idx], s[idx])
                end[idx] = e
                start[idx] = e - s[idx]
        return FarmRun(host, start, end, np.ones(n, dtype=bool))
    if isinstance(policy, LeastRequest) and policy.choice_count == 2 and math.isinf(timeout):
        return _p2c_run(a, s, policy.candidates(n, n_hosts), n_hosts)
    farm = FifoFarm(policy, n_hosts, timeout)
    host = np.empty(n, dtype=np.int64)
    start, end = np.empty(n), np.empty(n)
    served = np.empty(n, dtype=bool)
    keys_list = keys.tolist() if hasattr(keys, "tolist") else list(keys)
    farm.route_batch(a.tolist(), s.tolist(), keys_list, 0, math.inf, host, start, end, served)
    return FarmRun(host, start, end, served)


def _p2c_run(a: np.ndarray, s: np.ndarray, cand: np.ndarray, n_hosts: int) -> FarmRun:
    """``simulate_farm`` for LEAST_REQUEST with two choices and no timeout (same result, less work).

    Only the two drawn hosts' active counts matter, so each host keeps its
    (ordered) end times and a pointer past the ones already over.
    """
    n = a.size
    ends: list[list[float]] = [[] for _ in range(n_hosts)]
    done = [0] * n_hosts
    last_end = [-math.inf] * n_hosts
    host = [0] * n
    end = [0.0] * n
    a_list, s_list = a.tolist(), s.tolist()
    c1, c2 = cand[:, 0].tolist(), cand[:, 1].tolist()
    for i in range(n):
        t = a_list[i]
        h = c1[i]
        e1 = ends[h]
        if e1 and e1[-1] > t:  # the last end is the largest: the scan below stops before it
            d = done[h]
            while e1[d] <= t:
                d += 1
            done[h] = d
            active1 = len(e1) - d
        else:
            active1 = 0
        h2 = c2[i]
        if h2 != h:
            e2 = ends[h2]
            if e2 and e2[-1] > t:
                d = done[h2]
                while e2[d] <= t:
                    d += 1
                done[h2] = d
                active2 = len(e2) - d
            else:
                active2 = 0
            if active2 < active1:  # the first draw wins ties, as in Envoy
                h, e1 = h2, e2
        last = last_end[h]
        e = (t if last < t else last) + s_list[i]
        last_end[h] = e
        e1.append(e)
        host[i] = h
        end[i] = e
    end_arr = np.array(end)
    return FarmRun(np.array(host, dtype=np.int64), end_arr - s, end_arr, np.ones(n, dtype=bool))


def simulate_farm_backend(arrivals, service, backend_service, policy, n_hosts: int, keys=None) -> FarmRun:
    """``simulate_farm`` with a shared back end every replica calls synchronously.

    A replica's single worker takes its next request, first calls the shared back end
    (a feature store or database: one FIFO server, ``backend_service[i]`` seconds of its
    time per call, served in the order calls are issued) and holds the worker until the
    answer returns, then runs inference for ``service[i]``. ``start`` is when the worker
    took the request and ``end`` when it finished, so ``end - start`` is the worker's busy
    time, back-end wait included. Events are handled in time order (an event heap), so
    ``policy.pick`` sees each replica's requests in flight at the arrival instant; with
    ``backend_service`` all zero the result equals ``simulate_farm``'s.
    """
    a = np.asarray(arrivals, dtype=float).tolist()
    s = np.asarray(service, dtype=float).tolist()
    b = np.asarray(backend_service, dtype=float).tolist()
    n = len(a)
    keys = [0] * n if keys is None else (keys.tolist() if hasattr(keys, "tolist") else list(keys))
    hosts = list(range(n_hosts))
    active, busy = [0] * n_hosts, [False] * n_hosts
    queues: list[list[int]] = [[] for _ in range(n_hosts)]
    heads = [0] * n_hosts
    host, start, end = [0] * n, [0.0] * n, [0.0] * n
    heap: list[tuple[float, int, int]] = []
    backend_free = -math.inf
    push, pop = heapq.heappush, heapq.heappop
    # The picks, drawn up front where they do not depend on the loads (the same hosts and draws as
    # ``policy.pick`` one at a time): a static policy's routes, or two-choice least request's candidates.
    routed = cand1 = cand2 = None
    if getattr(policy, "static", False):
        routed = np.asarray(policy.route(np.asarray(keys, dtype=np.uint64), hosts, n), dtype=np.int64).tolist()
    elif isinstance(policy, LeastRequest) and policy.choice_count == 2:
        cand = policy.candidates(n, n_hosts)
        cand1, cand2 = cand[:, 0].tolist(), cand[:, 1].tolist()
    pick = policy.pick

    # One loop, the event handling inlined (a hot path): before each arrival, every finish at or
    # before it, in (time, host, request) order; a finish starts the host's next queued request,
    # whose back-end call is issued then (FIFO in issue order).
    for i in range(n + 1):
        t = a[i] if i < n else math.inf
        while heap and heap[0][0] <= t:
            e, h, _ = pop(heap)
            active[h] -= 1
            q, k = queues[h], heads[h]
            if k < len(q):
                heads[h] = k + 1
                j = q[k]
                answered = (e if backend_free < e else backend_free) + b[j]
                backend_free = answered
                start[j] = e
                end[j] = done = answered + s[j]
                push(heap, (done, h, j))
            else:
                busy[h] = False
        if i == n:
            break
        if routed is not None:
            h = routed[i]
        elif cand1 is not None:
            h, h2 = cand1[i], cand2[i]
            if active[h2] < active[h]:  # the first draw wins ties, as in Envoy
                h = h2
        else:
            h = pick(keys[i], active, hosts)
        host[i] = h
        active[h] += 1
        if busy[h]:
            queues[h].append(i)
        else:
            answered = (t if backend_free < t else backend_free) + b[i]
            backend_free = answered
            start[i] = t
            end[i] = done = answered + s[i]
            busy[h] = True
            push(heap, (done, h, i))
    return FarmRun(np.array(host, dtype=np.int64), np.array(start), np.array(end), np.ones(n, dtype=bool))


_SESSION_HASHES: dict[int, np.ndarray] = {}


def session_key_hashes(users: int) -> np.ndarray:
    """xxHash64 of the session keys ``user-0`` ... ``user-<users-1>`` (what Envoy hashes from a header), memoised."""
    have = _SESSION_HASHES.get(0, np.empty(0, dtype=np.uint64))
    if have.size < users:
        extra = np.array([xxhash64(f"user-{k}") for k in range(have.size, users)], dtype=np.uint64)
        _SESSION_HASHES[0] = have = np.concatenate([have, extra])
    return have[:users]


def hottest_share(hosts: np.ndarray, weights: np.ndarray, n_hosts: int) -> float:
    """Largest long-run share of traffic on one host when key k (sending ``weights[k]``) always goes to ``hosts[k]``."""
    return float(np.bincount(hosts, weights=weights, minlength=n_hosts).max() / np.sum(weights))
