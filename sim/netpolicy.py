"""Kubernetes NetworkPolicy semantics as data, and an exhaustive cross-tenant access check.

Follows ``networking/v1`` ``NetworkPolicySpec`` (REFERENCES.md §26):
- A pod is isolated for ingress (egress) once a policy in its namespace selects it (``pod_selector``;
  an empty selector selects every pod of the namespace) with Ingress (Egress) in ``policy_types``.
  A pod that no such policy selects is non-isolated: everything is allowed in that direction.
- ``policy_types`` left unset means Ingress, plus Egress when the policy has egress rules.
- Rules add up across every policy that selects the pod; an isolated pod with no matching rule
  (e.g. an empty ``ingress`` list) denies all.
- A peer with only ``pod_selector`` means pods of the *policy's own namespace*; with only
  ``namespace_selector``, every pod of the matching namespaces (an empty selector matches ALL
  namespaces); with both, matching pods in matching namespaces. A rule with no peers matches any
  peer; a rule with no ports matches every port.
- A connection goes through only if the source's egress AND the destination's ingress allow it.
``platform_policies`` builds a tenant platform as data (tenant namespaces, platform, monitoring, DNS) in
four variants, one of them the classic bug of an empty ``namespaceSelector`` that admits every namespace.
Simplifications: no ``ipBlock``, no named ports, no ``endPort``, ``matchLabels`` only (no
``matchExpressions``), and pods are reachable on any port (the policy alone decides).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import NamedTuple

INGRESS, EGRESS = "Ingress", "Egress"


def _labels(d) -> tuple:
    return tuple(sorted((d or {}).items()))


@dataclass(frozen=True)
class Selector:
    """``matchLabels``; the empty selector matches everything."""

    match_labels: tuple = ()

    @classmethod
    def of(cls, **labels) -> "Selector":
        return cls(_labels(labels))

    def matches(self, labels: dict) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels)


EVERYTHING = Selector()


@dataclass(frozen=True)
class Peer:
    pod_selector: Selector | None = None
    namespace_selector: Selector | None = None


@dataclass(frozen=True)
class Port:
    port: int | None = None  # None: every port of the protocol
    protocol: str = "TCP"

    def matches(self, port: int, protocol: str) -> bool:
        return self.protocol == protocol and (self.port is None or self.port == port)


@dataclass(frozen=True)
class PolicyRule:
    """One ingress ``from`` / egress ``to`` rule: peers (empty: any) and ports (empty: any)."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[Port, ...] = ()


@dataclass(frozen=True)
class NetworkPolicy:
    name: str
    namespace: str
    pod_selector: Selector = EVERYTHING
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()
    policy_types: tuple[str, ...] | None = None

    @property
    def types(self) -> tuple[str, ...]:
        if self.policy_types is not None:
            return self.policy_types
        return (INGRESS, EGRESS) if self.egress else (INGRESS,)


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: tuple = ()


@dataclass
class PolicySet:
    """Namespaces (name -> labels), pods and policies; ``allowed`` answers one connection attempt."""

    namespaces: dict[str, dict]
    pods: list[Pod]
    policies: list[NetworkPolicy] = field(default_factory=list)

    def __post_init__(self):
        self._by_ns: dict[str, list[NetworkPolicy]] = {}
        for pol in self.policies:
            if pol.namespace not in self.namespaces:
                raise ValueError(f"policy {pol.name} is in unknown namespace {pol.namespace}")
            self._by_ns.setdefault(pol.namespace, []).append(pol)
        self._labels: dict[int, dict] = {}
        self._selecting: dict[tuple, list[NetworkPolicy]] = {}
        self._matching: dict[tuple, object] = {}

    def _pod_labels(self, pod: Pod) -> dict:
        d = self._labels.get(id(pod))
        if d is None:
            d = self._labels[id(pod)] = dict(pod.labels)
        return d

    def _peer_matches(self, peer: Peer, policy_ns: str, other: Pod) -> bool:
        if peer.namespace_selector is None:
            ns_ok = other.namespace == policy_ns
        else:
            ns_ok = peer.namespace_selector.matches(self.namespaces[other.namespace])
        return ns_ok and (peer.pod_selector is None or peer.pod_selector.matches(self._pod_labels(other)))

    def _rules_for(self, pod: Pod, other: Pod, direction: str):
        """True if ``pod`` is not isolated in ``direction``; else the port lists of the rules whose peers
        match ``other`` (a pod/peer pair is worked out once, then each port is a quick look-up)."""
        key = (id(pod), id(other), direction)
        hit = self._matching.get(key)
        if hit is not None:
            return hit
        skey = (id(pod), direction)
        selecting = self._selecting.get(skey)
        if selecting is None:
            labels = self._pod_labels(pod)
            selecting = self._selecting[skey] = [pol for pol in self._by_ns.get(pod.namespace, ())
                                                 if direction in pol.types and pol.pod_selector.matches(labels)]
        if not selecting:
            hit = True  # non-isolated in this direction
        else:
            hit = tuple(rule.ports for pol in selecting for rule in (pol.ingress if direction == INGRESS else pol.egress)
                        if not rule.peers or any(self._peer_matches(pr, pol.namespace, other) for pr in rule.peers))
        self._matching[key] = hit
        return hit

    def _direction_allows(self, pod: Pod, other: Pod, port: int, protocol: str, direction: str) -> bool:
        rules = self._rules_for(pod, other, direction)
        if rules is True:
            return True
        return any(not ports or any(pt.matches(port, protocol) for pt in ports) for ports in rules)

    def allowed(self, src: Pod, dst: Pod, port: int, protocol: str = "TCP") -> bool:
        return (self._direction_allows(src, dst, port, protocol, EGRESS)
                and self._direction_allows(dst, src, port, protocol, INGRESS))


class Attempt(NamedTuple):
    src: Pod
    dst: Pod
    port: int
    protocol: str


def cross_tenant_attempts(ps: PolicySet, tenants: list[str], ports: list[tuple[int, str]]):
    """Every ordered pair of distinct tenant namespaces × every pod pair × every (port, protocol)."""
    by_ns: dict[str, list[Pod]] = {}
    for pod in ps.pods:
        by_ns.setdefault(pod.namespace, []).append(pod)
    for a, b in itertools.permutations(tenants, 2):
        for src, dst in itertools.product(by_ns.get(a, ()), by_ns.get(b, ())):
            for port, proto in ports:
                yield Attempt(src, dst, port, proto)


def count_leaks(ps: PolicySet, attempts) -> tuple[int, int]:
    """(allowed, total) over the attempts; for cross-tenant attempts every allowed one is a leak."""
    allowed = total = 0
    for src, dst, port, protocol in attempts:
        total += 1
        allowed += ps.allowed(src, dst, port, protocol)
    return allowed, total


# ---------------------------------------------------------------------- a tenant platform's policies
TENANT_PODS = ("train", "serve", "notebook")
POLICY_VARIANTS = ("default_deny", "ingress_only", "empty_namespace_selector", "none")


def platform_policies(tenants: list[str], variant: str) -> PolicySet:
    """Tenant namespaces plus platform, monitoring and kube-system, with the variant's NetworkPolicies."""
    namespaces = {t: {"kubernetes.io/metadata.name": t, "kind": "tenant"} for t in tenants}
    for name in ("platform", "monitoring", "kube-system"):
        namespaces[name] = {"kubernetes.io/metadata.name": name, "kind": name}
    if variant not in POLICY_VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(POLICY_VARIANTS)}")
    pods = [Pod(t, f"{t}-{app}", (("app", app),)) for t in tenants for app in TENANT_PODS]
    pods += [Pod("platform", "registry", (("app", "registry"),)), Pod("monitoring", "prometheus", (("app", "prom"),)),
             Pod("kube-system", "coredns", (("k8s-app", "kube-dns"),))]
    ns_named = lambda n: Selector.of(**{"kubernetes.io/metadata.name": n})  # noqa: E731
    same = Peer(namespace_selector=EVERYTHING) if variant == "empty_namespace_selector" else Peer(pod_selector=EVERYTHING)
    policies = []
    if variant != "none":
        types = (INGRESS,) if variant == "ingress_only" else (INGRESS, EGRESS)
        for t in tenants:
            egress = () if variant == "ingress_only" else (
                PolicyRule((same,)),
                PolicyRule((Peer(Selector.of(app="registry"), ns_named("platform")),), (Port(443),)),
                PolicyRule((Peer(namespace_selector=ns_named("kube-system")),), (Port(53, "UDP"), Port(53))))
            policies += [
                NetworkPolicy("default-deny", t, policy_types=types),
                NetworkPolicy("allow-same-namespace", t, ingress=(PolicyRule((same,)),), egress=egress,
                              policy_types=types),
                NetworkPolicy("allow-monitoring", t, ingress=(PolicyRule((Peer(namespace_selector=ns_named(
                    "monitoring")),), (Port(9090),)),), policy_types=(INGRESS,)),
            ]
    return PolicySet(namespaces, pods, policies)


def declared_flows_allowed_pct(ps: PolicySet, tenants: list[str]) -> float:
    """Share of the declared flows that work: tenant -> registry:443, -> DNS:53/UDP, prometheus -> tenant:9090."""
    by_name = {pod.name: pod for pod in ps.pods}
    ok = total = 0
    for t in tenants:
        for app in TENANT_PODS:
            pod = by_name[f"{t}-{app}"]
            for a, b, port, proto in ((pod, by_name["registry"], 443, "TCP"), (pod, by_name["coredns"], 53, "UDP"),
                                      (by_name["prometheus"], pod, 9090, "TCP")):
                ok += ps.allowed(a, b, port, proto)
                total += 1
    return 100.0 * ok / total
