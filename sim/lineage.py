"""Lineage in OpenLineage's shape (REFERENCES §19, spec 2-0-2), kept as a networkx DAG.

``Tracker.run(job, fn, inputs)`` runs one transformation as an OpenLineage run: a
``START`` RunEvent, the call, then a ``COMPLETE`` (or ``FAIL``) RunEvent whose
``inputs`` and ``outputs`` are datasets ``{namespace, name, facets}``; the version
facet carries the artefact's content digest. Event fields follow ``RunEvent``:
``eventTime, producer, schemaURL, eventType, run{runId, facets}, job{namespace,
name, facets}, inputs, outputs``. The graph is input dataset → run of a job →
output dataset, as OpenLineage draws it.

Where this differs from OpenLineage: events are kept in memory (no transport), run
ids are UUIDs derived from the inputs (uuid5, so a seeded run is reproducible) and
``eventTime`` is a logical counter, not a clock.

``ExecutionTrace`` is the ground truth a lineage record is checked against: a
``sys.setprofile`` hook that counts every call of the watched transformation
functions, however they are invoked (through the tracker or by hand).
Completeness = tracked runs ÷ transformations actually executed, per function.
"""
from __future__ import annotations

import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import networkx as nx

from .content_store import content_bytes, digest_bytes

SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
PRODUCER = "https://github.com/archlab/archlab/sim/lineage.py"
RUN_STATES = ("START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER")
_NS = uuid.UUID("6f1c2e8a-4d0b-4a53-9d7e-0c9a7a1e2b11")


@dataclass(frozen=True)
class Artifact:
    """A dataset version: OpenLineage name, content digest and the value itself (not serialised)."""

    name: str
    digest: str
    value: Any = None

    def ref(self, namespace: str) -> dict:
        return {"namespace": namespace, "name": self.name, "facets": {"version": {"datasetVersion": self.digest}}}


def artifact(name: str, value, digest: str | None = None) -> Artifact:
    """Wrap a value; its digest is SHA-256 of ``content_bytes(value)`` unless given."""
    return Artifact(name, digest or digest_bytes(content_bytes(value)), value)


class Tracker:
    """Runs transformations as OpenLineage runs and keeps the events and the lineage graph."""

    def __init__(self, namespace: str = "archlab"):
        self.namespace = namespace
        self.events: list[dict] = []
        self.graph = nx.DiGraph()
        self._clock = 0

    def _event(self, kind: str, run_id: str, job: str, inputs: list[dict], outputs: list[dict]) -> dict:
        if kind not in RUN_STATES:
            raise ValueError(f"eventType {kind!r} is not one of {RUN_STATES}")
        self._clock += 1
        ev = {"eventTime": self._clock, "producer": PRODUCER, "schemaURL": SCHEMA_URL, "eventType": kind,
              "run": {"runId": run_id, "facets": {}}, "job": {"namespace": self.namespace, "name": job, "facets": {}},
              "inputs": inputs, "outputs": outputs}
        self.events.append(ev)
        return ev

    def run(self, fn: Callable, inputs: Iterable[Artifact], output: str, job: str | None = None,
            **params) -> Artifact:
        """Call ``fn(*input values, **params)`` as one run of ``job`` (default: the function's name);
        its result becomes dataset ``output``."""
        inputs, job = list(inputs), job or fn.__name__
        seed_text = "|".join([job, output, repr(sorted(params.items()))] + [a.digest for a in inputs])
        run_id = str(uuid.uuid5(_NS, f"{seed_text}|{len(self.events)}"))
        ins = [a.ref(self.namespace) for a in inputs]
        self._event("START", run_id, job, ins, [])
        try:
            value = fn(*[a.value for a in inputs], **params)
        except Exception:
            self._event("FAIL", run_id, job, ins, [])
            raise
        out = artifact(output, value)
        self._event("COMPLETE", run_id, job, ins, [out.ref(self.namespace)])
        self._add(run_id, job, inputs, out)
        return out

    def record_source(self, art: Artifact) -> None:
        """A source dataset (e.g. a pinned store version) enters the graph with no producing run."""
        self.graph.add_node(node(art), kind="dataset", name=art.name, version=art.digest, source=True)

    def _add(self, run_id: str, job: str, inputs: list[Artifact], out: Artifact) -> None:
        g, r = self.graph, f"run:{run_id}"
        g.add_node(r, kind="run", job=job)
        for a in inputs:
            if node(a) not in g:
                g.add_node(node(a), kind="dataset", name=a.name, version=a.digest, source=False)
            g.add_edge(node(a), r)
        g.add_node(node(out), kind="dataset", name=out.name, version=out.digest, source=False)
        g.add_edge(r, node(out))

    # -------------------------------------------------------------- queries
    def completed_runs(self) -> Counter:
        """COMPLETE events per job name."""
        return Counter(e["job"]["name"] for e in self.events if e["eventType"] == "COMPLETE")

    def traces_to_source(self, art: Artifact) -> bool:
        """True when ``art`` is in the graph and one of its ancestors is a recorded source dataset."""
        g = self.graph
        if node(art) not in g:
            return False
        return any(g.nodes[n].get("source") for n in nx.ancestors(g, node(art)))

    def well_formed(self) -> bool:
        """A DAG, runs alternate with datasets, and every run has exactly one START and one terminal event."""
        g = self.graph
        if not nx.is_directed_acyclic_graph(g):
            return False
        if any(g.nodes[a]["kind"] == g.nodes[b]["kind"] for a, b in g.edges):
            return False
        per_run = Counter((e["run"]["runId"], e["eventType"]) for e in self.events)
        runs = {e["run"]["runId"] for e in self.events}
        return all(per_run[(r, "START")] == 1 and
                   sum(per_run[(r, t)] for t in ("COMPLETE", "ABORT", "FAIL")) == 1 for r in runs)


def node(a: Artifact) -> str:
    return f"dataset:{a.name}@{a.digest[:16]}"


class ExecutionTrace:
    """Counts calls of the watched functions while active (``sys.setprofile``), whoever calls them.

    The hook looks only at ``call`` events whose code object is watched, so it does not
    depend on the tracker it audits. Nested use keeps the outer hook.
    """

    def __init__(self, functions: Iterable[Callable]):
        self._codes = {f.__code__: f.__name__ for f in functions}
        self.calls: Counter = Counter()
        self._prev = None

    def _hook(self, frame, event, arg):
        if event == "call":
            name = self._codes.get(frame.f_code)
            if name is not None:
                self.calls[name] += 1
        if callable(self._prev):
            self._prev(frame, event, arg)

    def __enter__(self):
        self._prev = sys.getprofile()
        sys.setprofile(self._hook)
        return self

    def __exit__(self, *exc):
        sys.setprofile(self._prev)
        return False


def completeness(tracked: Counter, executed: Counter) -> tuple[int, int]:
    """(tracked, executed) transformations: per function, a run counts only up to the calls that happened."""
    done = sum(executed.values())
    hit = sum(min(tracked.get(name, 0), n) for name, n in executed.items())
    return hit, done
