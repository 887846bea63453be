"""A model-version lifecycle as a guarded state machine, after MLflow's model registry (REFERENCES.md §16).

MLflow keeps one record per model version with a stage (``None``, ``Staging``, ``Production``,
``Archived``; ``MLFLOW_STAGE`` maps ours onto them) and, since 2.9, named aliases such as
``champion`` that point at exactly one version of a registered model. ``transition_model_version_stage(
name, version, stage, archive_existing_versions)`` checks only that the target stage exists: any stage
can be written from any other. ``AdHocRegistry`` is that behaviour, used the way a hand-written
pipeline uses it: read the record, do the checks in the client, then write the stage and archive the
champion it read.

``LifecycleMachine`` is the pattern, and where it differs from MLflow it says so:
- the transition table ``TRANSITIONS`` is data (drawn by ``graph()``); a write along any other edge is
  refused (MLflow has no transition graph);
- guards run in the registry, on the registry's own evidence: accuracy on the held-out set above
  ``min_accuracy``, at least ``min_staged_h`` hours in Staged, observed staging error rate below
  ``max_error_rate``, an approval (MLflow leaves all of this to the client);
- every version and registered model carries a ``revision`` bumped on each write; a write names the
  revisions it read and is refused if either moved (optimistic concurrency, an ETag-style
  compare-and-set; MLflow's REST API has no such precondition);
- promotion moves the ``champion`` alias and archives the previous champion in one step (MLflow's
  ``archive_existing_versions=True`` plus the alias semantics: one version per alias).

``invalid_reasons`` is the independent judge the labs and tests use: what a blind write would break,
judged on the true facts (the true serving error rate, not the sampled one the guard sees).
``state_violations`` checks a registry's state and history on its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Stage(str, Enum):
    DRAFT = "Draft"
    TRAINING = "Training"
    TRAINED = "Trained"
    VALIDATED = "Validated"
    STAGED = "Staged"
    PRODUCTION = "Production"
    ARCHIVED = "Archived"


#: Our stages as MLflow's registry would record them (MLflow has no stages before Staging).
MLFLOW_STAGE = {Stage.DRAFT: "None", Stage.TRAINING: "None", Stage.TRAINED: "None", Stage.VALIDATED: "None",
                Stage.STAGED: "Staging", Stage.PRODUCTION: "Production", Stage.ARCHIVED: "Archived"}


@dataclass(frozen=True)
class Transition:
    source: Stage
    target: Stage
    event: str
    guards: tuple[str, ...] = ()


S = Stage
#: The transition table: the only edges the machine accepts, with the guards each one checks.
TRANSITIONS: tuple[Transition, ...] = (
    Transition(S.DRAFT, S.TRAINING, "start_training"),
    Transition(S.TRAINING, S.TRAINED, "finish_training"),
    Transition(S.TRAINED, S.VALIDATED, "validate", ("accuracy",)),
    Transition(S.VALIDATED, S.STAGED, "deploy_to_staging"),
    Transition(S.STAGED, S.PRODUCTION, "promote", ("staged_time", "error_rate", "approval")),
    Transition(S.PRODUCTION, S.ARCHIVED, "retire"),
    Transition(S.STAGED, S.ARCHIVED, "reject"),
    Transition(S.VALIDATED, S.ARCHIVED, "reject"),
    Transition(S.TRAINED, S.ARCHIVED, "reject"),
)
EDGES: dict[tuple[Stage, Stage], Transition] = {(t.source, t.target): t for t in TRANSITIONS}
#: The stages a judge may reach from each stage, written out by hand rather than read off the table.
ALLOWED_NEXT = {S.DRAFT: {S.TRAINING}, S.TRAINING: {S.TRAINED}, S.TRAINED: {S.VALIDATED, S.ARCHIVED},
                S.VALIDATED: {S.STAGED, S.ARCHIVED}, S.STAGED: {S.PRODUCTION, S.ARCHIVED},
                S.PRODUCTION: {S.ARCHIVED}, S.ARCHIVED: set()}
CHAMPION = "champion"


def graph():
    """The transition table as a networkx DiGraph (edge attributes: event, guards)."""
    import networkx as nx

    g = nx.DiGraph()
    g.add_nodes_from(Stage)
    for t in TRANSITIONS:
        g.add_edge(t.source, t.target, event=t.event, guards=t.guards)
    return g


@dataclass(frozen=True)
class Guards:
    min_accuracy: float = 0.90
    min_staged_h: float = 24.0
    max_error_rate: float = 0.01
    require_approval: bool = True


@dataclass
class ModelVersion:
    name: str
    version: int
    accuracy: float  # on the held-out set, measured when the version is registered
    stage: Stage = Stage.DRAFT
    revision: int = 0
    staged_at: float | None = None
    approved: bool = False
    staging_requests: int = 0
    staging_errors: int = 0
    history: list = field(default_factory=list)  # (time, stage) entries, the first one Draft

    @property
    def observed_error_rate(self) -> float:
        return self.staging_errors / self.staging_requests if self.staging_requests else float("nan")


@dataclass
class RegisteredModel:
    name: str
    revision: int = 0
    aliases: dict = field(default_factory=dict)  # alias -> version number
    versions: dict = field(default_factory=dict)  # version number -> ModelVersion
    production: set = field(default_factory=set)  # version numbers whose stage is Production


@dataclass(frozen=True)
class Snapshot:
    """What a client read: the version's stage and revision, the model's revision and champion."""

    name: str
    version: int
    stage: Stage
    revision: int
    model_revision: int
    champion: int | None
    approved: bool
    observed_error_rate: float
    staged_at: float | None


@dataclass(frozen=True)
class Decision:
    applied: bool
    reason: str = ""


class AdHocRegistry:
    """MLflow's stage API as a hand-written pipeline uses it: any stage from any stage, no preconditions."""

    enforcing = False

    def __init__(self, guards: Guards = Guards()):
        self.guards = guards
        self.models: dict[str, RegisteredModel] = {}

    def create_version(self, name: str, accuracy: float, now: float) -> ModelVersion:
        m = self.models.setdefault(name, RegisteredModel(name))
        v = ModelVersion(name, len(m.versions) + 1, accuracy, history=[(now, Stage.DRAFT)])
        m.versions[v.version] = v
        return v

    def get(self, name: str, version: int) -> ModelVersion:
        return self.models[name].versions[version]

    def read(self, name: str, version: int) -> Snapshot:
        m, v = self.models[name], self.get(name, version)
        return Snapshot(name, version, v.stage, v.revision, m.revision, m.aliases.get(CHAMPION), v.approved,
                        v.observed_error_rate, v.staged_at)

    def set_approval(self, name: str, version: int, approved: bool) -> None:
        v = self.get(name, version)
        v.approved, v.revision = approved, v.revision + 1

    def record_staging(self, name: str, version: int, requests: int, errors: int) -> None:
        v = self.get(name, version)
        v.staging_requests, v.staging_errors, v.revision = requests, errors, v.revision + 1

    def transition(self, snap: Snapshot, target: Stage, now: float) -> Decision:
        self._apply(snap, target, now, archive=snap.champion)
        return Decision(True)

    # -- the write itself, shared by both registries
    def _set_stage(self, v: ModelVersion, target: Stage, now: float) -> None:
        prod = self.models[v.name].production
        prod.add(v.version) if target is Stage.PRODUCTION else prod.discard(v.version)
        v.stage, v.revision = target, v.revision + 1
        v.history.append((now, target))
        if target is Stage.STAGED:
            v.staged_at = now

    def _apply(self, snap: Snapshot, target: Stage, now: float, archive: int | None) -> None:
        m, v = self.models[snap.name], self.get(snap.name, snap.version)
        self._set_stage(v, target, now)
        if target is Stage.PRODUCTION:
            if archive is not None and archive != v.version:
                old = m.versions[archive]
                if old.stage is not Stage.ARCHIVED:
                    self._set_stage(old, Stage.ARCHIVED, now)
            m.aliases[CHAMPION] = v.version
            m.revision += 1
        elif m.aliases.get(CHAMPION) == v.version:
            del m.aliases[CHAMPION]
            m.revision += 1


class LifecycleMachine(AdHocRegistry):
    """The enforced machine: compare-and-set on revisions, the transition table, guards in the registry."""

    enforcing = True

    def guard_failures(self, v: ModelVersion, target: Stage, now: float) -> list[str]:
        """The guards of the edge into ``target`` that fail on the registry's evidence."""
        edge = EDGES.get((v.stage, target))
        g, out = self.guards, []
        for name in edge.guards if edge else ():
            if name == "accuracy" and not v.accuracy > g.min_accuracy:
                out.append(f"accuracy {v.accuracy:.3f} <= {g.min_accuracy:g}")
            elif name == "staged_time" and (v.staged_at is None or now - v.staged_at < g.min_staged_h):
                out.append(f"staged < {g.min_staged_h:g} h")
            elif name == "error_rate" and not v.observed_error_rate < g.max_error_rate:
                out.append(f"staging error rate {v.observed_error_rate:.4f} >= {g.max_error_rate:g}")
            elif name == "approval" and g.require_approval and not v.approved:
                out.append("no approval")
        return out

    def transition(self, snap: Snapshot, target: Stage, now: float) -> Decision:
        m, v = self.models[snap.name], self.get(snap.name, snap.version)
        if v.revision != snap.revision:
            return Decision(False, f"stale: version revision {snap.revision} read, now {v.revision}")
        if target is Stage.PRODUCTION and m.revision != snap.model_revision:
            return Decision(False, f"stale: model revision {snap.model_revision} read, now {m.revision}")
        if (v.stage, target) not in EDGES:
            return Decision(False, f"no transition {v.stage.value} -> {target.value}")
        failed = self.guard_failures(v, target, now)
        if failed:
            return Decision(False, "guard: " + "; ".join(failed))
        self._apply(snap, target, now, archive=m.aliases.get(CHAMPION))
        return Decision(True)


def invalid_reasons(reg: AdHocRegistry, snap: Snapshot, target: Stage, now: float,
                    true_error_rate: float) -> list[str]:
    """What writing ``target`` blindly from ``snap`` would break, judged on the true facts.

    Written apart from the machine on purpose: it reads the current state (not the snapshot) and the
    version's true serving error rate (not the sampled one), so it can disagree with the machine.
    """
    g, m, v = reg.guards, reg.models[snap.name], reg.get(snap.name, snap.version)
    out = []
    if v.stage is not target and target not in ALLOWED_NEXT[v.stage]:
        out.append(f"illegal edge {v.stage.value} -> {target.value}")
    if target in (Stage.VALIDATED, Stage.PRODUCTION) and not v.accuracy > g.min_accuracy:
        out.append("accuracy at or below the bar")
    if target is Stage.PRODUCTION:
        if v.stage is not Stage.STAGED or v.staged_at is None or now - v.staged_at < g.min_staged_h:
            out.append("not staged long enough")
        if not true_error_rate < g.max_error_rate:
            out.append("serving error rate at or above the bar")
        if g.require_approval and not v.approved:
            out.append("not approved")
        champion = m.aliases.get(CHAMPION)
        if champion not in (None, v.version, snap.champion) and champion in m.production:
            # promoted by someone else since the read: the blind write archives the old champion and
            # leaves this one in Production beside the new one (a lost update)
            out.append(f"a second version in Production (v{champion} promoted since the read)")
    return out


def state_violations(reg: AdHocRegistry) -> list[str]:
    """Structural problems of a registry's state: histories off the table, several Production versions,
    an alias on a version that is not in Production, a Production entry without its guards' evidence."""
    g, out = reg.guards, []
    for m in reg.models.values():
        prod = [k for k, v in m.versions.items() if v.stage is Stage.PRODUCTION]
        if len(prod) > 1:
            out.append(f"{m.name}: {len(prod)} versions in Production")
        champ = m.aliases.get(CHAMPION)
        if champ is not None and m.versions[champ].stage is not Stage.PRODUCTION:
            out.append(f"{m.name}: champion v{champ} is {m.versions[champ].stage.value}")
        for v in m.versions.values():
            for (t0, a), (t1, b) in zip(v.history, v.history[1:]):
                if (a, b) not in EDGES:
                    out.append(f"{m.name} v{v.version}: {a.value} -> {b.value} at {t1:g} h")
                if b is Stage.PRODUCTION and (v.staged_at is None or t1 - v.staged_at < g.min_staged_h
                                              or not v.accuracy > g.min_accuracy):
                    out.append(f"{m.name} v{v.version}: promoted without its guards at {t1:g} h")
    return out
