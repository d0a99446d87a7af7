//! NetworkPolicies (`spec.networkPolicy.enabled`): each role's pods admit and send only the
//! traffic the topology needs.
//!
//! | pods           | ingress                                                     | egress                      |
//! |----------------|-------------------------------------------------------------|-----------------------------|
//! | shards         | gRPC 7100 from every shard (Raft, recovery), agents, operator | gRPC 7100 to shards, DNS   |
//! | ticket machine | gRPC 7200 from its members, agents, operator                | gRPC 7200 to its members, DNS |
//! | agents         | JSON-RPC 8545 and gRPC 7400 from `clients` (default: anyone) | shards, ticket machine, DNS |
//!
//! Every pod's metrics port admits `metrics` peers (default: anyone). Egress is restricted too:
//! a compromised process reaches nothing but its cluster's pods and DNS (port 53 to any
//! address, since node-local DNS caches listen outside the cluster's pod network). Probes need
//! no rule: traffic from a pod's own node (the kubelet) is always allowed.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::naming::{
    AGENT_COMPONENT, AGENT_GRPC_PORT, Group, JSON_RPC_PORT, LABEL_NAMESPACE_NAME, METRICS_PORT,
    OPERATOR_POD_LABELS, SHARD_PORT, TICKETER_PORT, agent_selector, component_selector,
    instance_labels, network_policy,
};
use crate::validate::ValidatedCluster;

fn selector(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}

/// Pods of this cluster (in its namespace) carrying `labels`.
fn pods(labels: BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(selector(labels)),
        ..NetworkPolicyPeer::default()
    }
}

/// The operator's pods: in its namespace when known, else in any namespace (the label alone).
fn operator(namespace: Option<&str>) -> NetworkPolicyPeer {
    let namespaces = namespace.map_or_else(BTreeMap::new, |ns| {
        BTreeMap::from([(LABEL_NAMESPACE_NAME.to_string(), ns.to_string())])
    });
    NetworkPolicyPeer {
        namespace_selector: Some(selector(namespaces)),
        pod_selector: Some(selector(
            OPERATOR_POD_LABELS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )),
        ..NetworkPolicyPeer::default()
    }
}

fn ports(numbers: &[i32], protocol: &str) -> Vec<NetworkPolicyPort> {
    numbers
        .iter()
        .map(|&port| NetworkPolicyPort {
            port: Some(IntOrString::Int(port)),
            protocol: Some(protocol.into()),
            ..NetworkPolicyPort::default()
        })
        .collect()
}

/// Admits `peers` (anyone when empty) on `numbers`.
fn ingress(numbers: &[i32], peers: &[NetworkPolicyPeer]) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        ports: Some(ports(numbers, "TCP")),
        from: (!peers.is_empty()).then(|| peers.to_vec()),
    }
}

fn egress(numbers: &[i32], peers: Vec<NetworkPolicyPeer>) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        ports: Some(ports(numbers, "TCP")),
        to: Some(peers),
    }
}

/// Name resolution, wherever the resolver is.
fn dns() -> NetworkPolicyEgressRule {
    let mut dns = ports(&[53], "UDP");
    dns.extend(ports(&[53], "TCP"));
    NetworkPolicyEgressRule {
        ports: Some(dns),
        to: None,
    }
}

/// The NetworkPolicies of `cluster` (none unless enabled). `operator_namespace` is where the
/// operator's pods run; they call every Raft member's admin API.
pub fn network_policies(
    cluster: &ValidatedCluster,
    operator_namespace: Option<&str>,
) -> Vec<NetworkPolicy> {
    let spec = &cluster.spec.network_policy;
    if !spec.enabled {
        return Vec::new();
    }
    let name = &cluster.name;
    let shard = Group::Shard(0).component();
    let ticket_machine = Group::TicketMachine.component();
    let shards = || pods(component_selector(name, shard));
    let ticketers = || pods(component_selector(name, ticket_machine));
    let agents = || pods(agent_selector(name));
    let metrics = ingress(&[METRICS_PORT], &spec.metrics);
    let policy = |component: &str,
                  ingress: Vec<NetworkPolicyIngressRule>,
                  egress: Vec<NetworkPolicyEgressRule>| NetworkPolicy {
        metadata: cluster.child_meta(network_policy(name, component), instance_labels(name)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(component_selector(name, component))),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    };
    vec![
        policy(
            shard,
            vec![
                // Raft between a shard's members, recovery between shards, the agents' calls
                // and the operator's admin API all use the one gRPC port.
                ingress(
                    &[SHARD_PORT],
                    &[shards(), agents(), operator(operator_namespace)],
                ),
                metrics.clone(),
            ],
            vec![egress(&[SHARD_PORT], vec![shards()]), dns()],
        ),
        policy(
            ticket_machine,
            vec![
                ingress(
                    &[TICKETER_PORT],
                    &[ticketers(), agents(), operator(operator_namespace)],
                ),
                metrics.clone(),
            ],
            vec![egress(&[TICKETER_PORT], vec![ticketers()]), dns()],
        ),
        policy(
            AGENT_COMPONENT,
            vec![
                ingress(&[JSON_RPC_PORT, AGENT_GRPC_PORT], &spec.clients),
                metrics,
            ],
            vec![
                egress(&[SHARD_PORT], vec![shards()]),
                egress(&[TICKETER_PORT], vec![ticketers()]),
                dns(),
            ],
        ),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::test_support::validated;
    use serde_json::{Value, json};

    fn policies(spec: &str, operator_namespace: Option<&str>) -> BTreeMap<String, Value> {
        network_policies(&validated(spec), operator_namespace)
            .into_iter()
            .map(|p| {
                (
                    p.metadata.name.clone().unwrap(),
                    serde_json::to_value(p).unwrap(),
                )
            })
            .collect()
    }

    /// The label sets admitted on `port` by `policy`'s ingress (`None`: anyone).
    fn admitted(policy: &Value, port: i32) -> Option<Vec<Value>> {
        let rule = policy["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["port"] == port)
            })
            .unwrap_or_else(|| panic!("no ingress rule for {port}"));
        rule["from"].as_array().cloned()
    }

    #[test]
    fn disabled_by_default() {
        assert!(policies("shards: {count: 1}", Some("ops")).is_empty());
    }

    #[test]
    fn raft_ports_admit_peers_agents_and_the_operator_only() {
        let all = policies(
            "shards: {count: 2}\nnetworkPolicy: {enabled: true}",
            Some("ops"),
        );
        assert_eq!(
            all.keys().collect::<Vec<_>>(),
            ["demo-agent", "demo-shard", "demo-ticket-machine"]
        );
        let shard = &all["demo-shard"];
        assert_eq!(
            shard["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "shard"
        );
        assert_eq!(shard["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        let from = admitted(shard, 7100).unwrap();
        let components: Vec<&Value> = from
            .iter()
            .filter_map(|p| p["podSelector"]["matchLabels"].get("app.kubernetes.io/component"))
            .collect();
        assert_eq!(components, [&json!("shard"), &json!("agent")]);
        let operator = from
            .iter()
            .find(|p| p.get("namespaceSelector").is_some())
            .unwrap();
        assert_eq!(
            operator["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "ops"
        );
        assert_eq!(
            operator["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
            "parsec-operator"
        );
        // Peers are this cluster's pods only.
        for peer in from.iter().filter(|p| p.get("namespaceSelector").is_none()) {
            assert_eq!(
                peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
                "demo"
            );
        }
        // Nothing else reaches the Raft port: the agent ports are not open on members.
        assert_eq!(shard["spec"]["ingress"].as_array().unwrap().len(), 2);

        let ticketer = &all["demo-ticket-machine"];
        let from = admitted(ticketer, 7200).unwrap();
        assert_eq!(
            from[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "ticket-machine"
        );
    }

    #[test]
    fn an_operator_of_unknown_namespace_is_admitted_by_its_label_in_any_namespace() {
        let all = policies("shards: {count: 1}\nnetworkPolicy: {enabled: true}", None);
        let from = admitted(&all["demo-shard"], 7100).unwrap();
        let operator = from
            .iter()
            .find(|p| p.get("namespaceSelector").is_some())
            .unwrap();
        assert_eq!(operator["namespaceSelector"], json!({"matchLabels": {}}));
    }

    #[test]
    fn clients_and_metrics_are_open_unless_restricted() {
        let open = policies(
            "shards: {count: 1}\nnetworkPolicy: {enabled: true}",
            Some("ops"),
        );
        assert_eq!(admitted(&open["demo-agent"], 8545), None);
        assert_eq!(admitted(&open["demo-agent"], 7400), None);
        assert_eq!(admitted(&open["demo-shard"], 9100), None);
        let restricted = policies(
            "shards: {count: 1}\nnetworkPolicy: {enabled: true, \
             clients: [{namespaceSelector: {matchLabels: {team: payments}}}], \
             metrics: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]}",
            Some("ops"),
        );
        let clients = admitted(&restricted["demo-agent"], 8545).unwrap();
        assert_eq!(
            clients[0]["namespaceSelector"]["matchLabels"]["team"],
            "payments"
        );
        for policy in restricted.values() {
            let metrics = admitted(policy, 9100).unwrap();
            assert_eq!(
                metrics[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
                "monitoring"
            );
        }
    }

    #[test]
    fn egress_reaches_only_the_cluster_and_dns() {
        let all = policies(
            "shards: {count: 1}\nnetworkPolicy: {enabled: true}",
            Some("ops"),
        );
        let egress = |name: &str| all[name]["spec"]["egress"].as_array().unwrap().clone();
        let agent = egress("demo-agent");
        assert_eq!(agent.len(), 3);
        assert_eq!(agent[0]["ports"][0]["port"], 7100);
        assert_eq!(
            agent[0]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "shard"
        );
        assert_eq!(agent[1]["ports"][0]["port"], 7200);
        let dns = &agent[2];
        assert!(dns.get("to").is_none(), "DNS anywhere");
        assert_eq!(
            dns["ports"],
            json!([{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}])
        );
        // Members reach their own role only.
        let shard = egress("demo-shard");
        assert_eq!(shard.len(), 2);
        assert_eq!(
            shard[0]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "shard"
        );
        let ticketer = egress("demo-ticket-machine");
        assert_eq!(ticketer[0]["ports"][0]["port"], 7200);
    }
}
