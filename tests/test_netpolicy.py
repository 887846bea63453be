"""sim.netpolicy against NetworkPolicy semantics (networking/v1): isolation, peers, ports, both directions."""
from sim.netpolicy import (EVERYTHING, EGRESS, INGRESS, NetworkPolicy, Peer, Pod, PolicyRule, PolicySet, Port,
                           Selector, count_leaks, cross_tenant_attempts)

NS = {"a": {"team": "a"}, "b": {"team": "b"}, "c": {"team": "c"}}
PODS = [Pod(n, f"{n}-{app}", (("app", app),)) for n in NS for app in ("web", "db")]
P = {p.name: p for p in PODS}


def ps(*policies):
    return PolicySet(NS, PODS, list(policies))


def test_without_policies_every_pod_is_open():
    s = ps()
    assert s.allowed(P["a-web"], P["b-db"], 5432) and s.allowed(P["b-db"], P["a-web"], 80, "UDP")


def test_an_empty_ingress_list_denies_all_ingress_but_leaves_egress_open():
    s = ps(NetworkPolicy("deny", "b"))  # policyTypes unset, no egress rules: Ingress only
    assert not s.allowed(P["a-web"], P["b-db"], 5432)
    assert not s.allowed(P["b-web"], P["b-db"], 5432)  # same namespace too: nothing is allowed in
    assert s.allowed(P["b-db"], P["a-web"], 80)


def test_policy_types_default_to_ingress_plus_egress_when_egress_rules_exist():
    pol = NetworkPolicy("p", "a", egress=(PolicyRule(ports=(Port(53, "UDP"),)),))
    assert pol.types == (INGRESS, EGRESS)
    assert NetworkPolicy("q", "a").types == (INGRESS,)
    s = ps(pol)
    assert s.allowed(P["a-web"], P["b-db"], 53, "UDP") and not s.allowed(P["a-web"], P["b-db"], 53, "TCP")


def test_a_pod_selector_peer_means_the_policys_own_namespace():
    allow_same = NetworkPolicy("same", "b", ingress=(PolicyRule((Peer(pod_selector=EVERYTHING),)),))
    s = ps(allow_same)
    assert s.allowed(P["b-web"], P["b-db"], 5432) and not s.allowed(P["a-web"], P["b-db"], 5432)


def test_an_empty_namespace_selector_means_every_namespace():
    allow_all_ns = NetworkPolicy("oops", "b", ingress=(PolicyRule((Peer(namespace_selector=EVERYTHING),)),))
    assert ps(allow_all_ns).allowed(P["a-web"], P["b-db"], 5432)


def test_pod_and_namespace_selectors_in_one_peer_are_anded():
    peer = Peer(pod_selector=Selector.of(app="web"), namespace_selector=Selector.of(team="a"))
    s = ps(NetworkPolicy("p", "b", ingress=(PolicyRule((peer,)),)))
    assert s.allowed(P["a-web"], P["b-db"], 1)
    assert not s.allowed(P["a-db"], P["b-db"], 1) and not s.allowed(P["c-web"], P["b-db"], 1)


def test_rules_add_up_across_policies_and_ports_must_match():
    deny = NetworkPolicy("deny", "b")
    web = NetworkPolicy("web", "b", pod_selector=Selector.of(app="web"),
                        ingress=(PolicyRule((Peer(namespace_selector=Selector.of(team="a")),), (Port(443),)),))
    s = ps(deny, web)
    assert s.allowed(P["a-db"], P["b-web"], 443)
    assert not s.allowed(P["a-db"], P["b-web"], 80) and not s.allowed(P["a-db"], P["b-web"], 443, "UDP")
    assert not s.allowed(P["a-db"], P["b-db"], 443)  # the db pod is not selected by the web policy


def test_a_connection_needs_the_source_egress_and_the_destination_ingress():
    open_in = NetworkPolicy("in", "b", ingress=(PolicyRule(),))
    no_out = NetworkPolicy("out", "a", policy_types=(EGRESS,))
    s = ps(open_in, no_out)
    assert not s.allowed(P["a-web"], P["b-db"], 80)  # a may not send
    assert s.allowed(P["c-web"], P["b-db"], 80)


def test_the_attempt_set_is_every_ordered_pair_of_tenants_pods_and_ports():
    s = ps()
    ports = [(80, "TCP"), (53, "UDP")]
    attempts = list(cross_tenant_attempts(s, ["a", "b", "c"], ports))
    assert len(attempts) == 3 * 2 * (2 * 2) * 2
    assert all(a.src.namespace != a.dst.namespace for a in attempts)
    assert count_leaks(s, attempts) == (len(attempts), len(attempts))  # no policy: every attempt gets through
    deny_all = [NetworkPolicy("deny", n) for n in NS]
    assert count_leaks(ps(*deny_all), attempts) == (0, len(attempts))
