"""A synchronous call chain: each event's caller calls every downstream in turn and waits for it.

The baseline that a broker replaces. ``workers`` callers take events first come,
first served (the Kiefer-Wolfowitz recursion for a multi-server FIFO queue); a
call costs half a round trip out, the downstream's service time, half a round trip
back. Downstream services are assumed to have a free instance for every caller
(the chain's limit is the caller's waiting, not the downstreams' capacity). A call
that meets a downstream that is down either fails after a round trip and the
caller moves on (``on_failure="skip"``: that downstream never sees the event) or is
retried every ``retry_s`` until the downstream is back (``"retry"``: the caller,
and every event behind it, waits).
"""
from __future__ import annotations

import heapq
import math
from typing import Sequence

import numpy as np


def sync_chain(arrivals: np.ndarray, service: np.ndarray, workers: int, rtt_s: float,
               down: Sequence[tuple[float, float] | None], on_failure: str = "skip",
               retry_s: float = 0.1) -> dict[str, np.ndarray]:
    """``service[j, i]``: downstream j's time for event i; ``down[j]``: its outage window or None.

    Returns per event the chain's end, and per (downstream, event) the time the call was
    issued and the time the downstream started on it (NaN when the call was skipped).
    """
    if on_failure not in ("skip", "retry"):
        raise ValueError(f"on_failure must be skip or retry, got {on_failure!r}")
    k, n = service.shape
    half = rtt_s / 2
    free = [0.0] * workers
    end = np.empty(n)
    issued = np.full((k, n), np.nan)
    started = np.full((k, n), np.nan)
    for i in range(n):
        t = max(arrivals[i], heapq.heappop(free))
        for j in range(k):
            issued[j, i] = t
            t += half
            w = down[j]
            if w is not None and w[0] <= t < w[1]:
                if on_failure == "skip":
                    t += half  # the error comes back
                    continue
                t += math.ceil((w[1] - t) / retry_s) * retry_s if retry_s > 0 else w[1] - t
            started[j, i] = t
            t += service[j, i] + half
        end[i] = t
        heapq.heappush(free, t)
    return {"end": end, "issued": issued, "started": started}
