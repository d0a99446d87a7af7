//! Golden files of the builders: every object the operator creates for each fixture under
//! `tests/fixtures`, in `tests/golden/<fixture>.yaml`. `UPDATE_GOLDEN=1 cargo test -p
//! parsec-operator --test golden` rewrites them; review the diff like code.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use parsec_operator::build::{Environment, OptionalApis};
use parsec_operator::render::{parse_cluster, render, to_yaml_stream};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

/// Every optional API installed, the operator in `parsec-system`.
fn env() -> Environment {
    Environment {
        apis: OptionalApis::all(),
        operator_namespace: Some("parsec-system".into()),
    }
}

fn check(fixture: &str) -> Vec<serde_json::Value> {
    let manifest =
        std::fs::read_to_string(dir("fixtures").join(format!("{fixture}.yaml"))).unwrap();
    let cluster = parse_cluster(&manifest, "default").unwrap();
    let objects = render(&cluster, &env()).unwrap();
    let yaml = format!(
        "# Generated from tests/fixtures/{fixture}.yaml by tests/golden.rs; do not edit.\n{}",
        to_yaml_stream(&objects).unwrap()
    );
    let golden = dir("golden").join(format!("{fixture}.yaml"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &yaml).unwrap();
    } else {
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        assert!(
            expected == yaml,
            "{} is stale: run `UPDATE_GOLDEN=1 cargo test -p parsec-operator --test golden` and review the diff",
            golden.display()
        );
    }
    objects
}

fn kinds(objects: &[serde_json::Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

fn find<'a>(objects: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in {:?}", kinds(objects)))
}

#[test]
fn single_replica_groups_have_no_pdb_and_no_monitoring() {
    let objects = check("dev-single-replica");
    let kinds = kinds(&objects);
    assert!(
        !kinds
            .iter()
            .any(|k| k.starts_with("PodDisruptionBudget/dev-shard")),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"PodDisruptionBudget/dev-agent".to_string()));
    assert!(
        !kinds
            .iter()
            .any(|k| k.starts_with("ServiceMonitor") || k.starts_with("PrometheusRule"))
    );
    assert!(
        !kinds
            .iter()
            .any(|k| k.starts_with("HorizontalPodAutoscaler"))
    );
    let sts = find(&objects, "StatefulSet", "dev-shard-1");
    assert_eq!(sts["spec"]["replicas"], 1);
    assert_eq!(sts["spec"]["updateStrategy"]["type"], "OnDelete");
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    let args: Vec<&str> = sts["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args.join(" "),
        "shard --shard 1 --topology /etc/parsec/topology.yaml --node $(POD_INDEX) --listen 0.0.0.0:7100 \
         --data-dir /var/lib/parsec --metrics-listen 0.0.0.0:9100"
    );
    // The topology the services will parse.
    let topology = find(&objects, "ConfigMap", "dev-topology")["data"]["topology.yaml"]
        .as_str()
        .unwrap();
    let config = parsec_core::ClusterConfig::from_yaml(topology).unwrap();
    assert_eq!(config.shards.len(), 2);
    assert_eq!(
        config.shards[1].replicas[0].address,
        "dev-shard-1-0.dev-shard-1.parsec-dev.svc:7100"
    );
}

#[test]
fn three_replica_groups_get_quorum_safe_pdbs() {
    let objects = check("three-replicas-static");
    let pdb = find(&objects, "PodDisruptionBudget", "demo-shard-0");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let headless = find(&objects, "Service", "demo-shard-0");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    let deployment = find(&objects, "Deployment", "demo-agent");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let readiness = &find(&objects, "StatefulSet", "demo-ticketer")["spec"]["template"]["spec"]["containers"]
        [0]["readinessProbe"];
    // HTTP on the metrics port, which stays plain with mTLS (the kubelet has no certificate).
    assert_eq!(readiness["httpGet"]["path"], "/readyz");
    assert_eq!(readiness["httpGet"]["port"], "metrics");
}

#[test]
fn autoscaled_agents_leave_replicas_to_the_hpa_and_monitoring_objects_exist() {
    let objects = check("production");
    let deployment = find(&objects, "Deployment", "payments-agent");
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "{}",
        deployment["spec"]
    );
    let hpa = find(&objects, "HorizontalPodAutoscaler", "payments-agent");
    assert_eq!(hpa["spec"]["minReplicas"], 4);
    assert_eq!(hpa["spec"]["metrics"].as_array().unwrap().len(), 2);
    find(&objects, "ServiceMonitor", "payments");
    find(&objects, "PrometheusRule", "payments");
    let dashboards = find(&objects, "ConfigMap", "payments-dashboards");
    assert_eq!(dashboards["metadata"]["labels"]["grafana_dashboard"], "1");
    let sts = find(&objects, "StatefulSet", "payments-shard-3");
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
        "fast-ssd"
    );
    assert!(sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]
        .is_array());
}

#[test]
fn stopped_clusters_run_nothing_and_drop_the_hpa() {
    let objects = check("stopped");
    assert_eq!(
        find(&objects, "StatefulSet", "demo-shard-0")["spec"]["replicas"],
        0
    );
    assert_eq!(
        find(&objects, "StatefulSet", "demo-ticketer")["spec"]["replicas"],
        0
    );
    assert_eq!(
        find(&objects, "Deployment", "demo-agent")["spec"]["replicas"],
        0
    );
    assert!(
        !kinds(&objects)
            .iter()
            .any(|k| k.starts_with("HorizontalPodAutoscaler"))
    );
    // The topology still lists every member: stopping does not change membership.
    let topology = find(&objects, "ConfigMap", "demo-topology")["data"]["topology.yaml"]
        .as_str()
        .unwrap();
    assert_eq!(
        parsec_core::ClusterConfig::from_yaml(topology)
            .unwrap()
            .shards[0]
            .replicas
            .len(),
        3
    );
}

#[test]
fn paused_clusters_render_what_would_be_applied() {
    let objects = check("paused");
    let image = &find(&objects, "StatefulSet", "demo-shard-0")["spec"]["template"]["spec"]["containers"]
        [0]["image"];
    assert_eq!(image, "ghcr.io/example/parsec:0.2.0");
}

#[test]
fn every_object_is_owned_by_the_cluster_and_labelled_for_orphan_cleanup() {
    for fixture in [
        "dev-single-replica",
        "production",
        "three-replicas-static",
        "stopped",
        "tls-secret",
        "tls-cert-manager",
        "network-policy",
    ] {
        let manifest =
            std::fs::read_to_string(dir("fixtures").join(format!("{fixture}.yaml"))).unwrap();
        let cluster = parse_cluster(&manifest, "default").unwrap();
        for object in render(&cluster, &env()).unwrap() {
            let meta = &object["metadata"];
            assert_eq!(
                meta["ownerReferences"][0]["kind"], "ParsecCluster",
                "{meta}"
            );
            assert_eq!(meta["ownerReferences"][0]["controller"], true);
            assert_eq!(
                meta["labels"]["app.kubernetes.io/managed-by"],
                "parsec-operator"
            );
            assert_eq!(
                meta["labels"]["app.kubernetes.io/instance"],
                cluster.metadata.name.clone().unwrap()
            );
        }
    }
}

/// The pod spec of every workload (StatefulSets and the Deployment).
fn pod_specs(objects: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    objects
        .iter()
        .filter(|o| o["kind"] == "StatefulSet" || o["kind"] == "Deployment")
        .map(|o| &o["spec"]["template"]["spec"])
        .collect()
}

#[test]
fn tls_from_a_secret_mounts_it_in_every_pod_and_names_it_in_the_topology() {
    let objects = check("tls-secret");
    let specs = pod_specs(&objects);
    assert_eq!(specs.len(), 4);
    for spec in specs {
        let volume = &spec["volumes"][0];
        assert_eq!(volume["name"], "topology");
        let sources = volume["projected"]["sources"].as_array().unwrap();
        assert_eq!(sources[0]["configMap"]["name"], "ledger-topology");
        assert_eq!(sources[1]["secret"]["name"], "ledger-certs");
        let paths: Vec<&str> = sources[1]["secret"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, ["tls/ca.crt", "tls/tls.crt", "tls/tls.key"]);
        // Readable by the pod's group (fsGroup), nobody else.
        assert_eq!(volume["projected"]["defaultMode"], 0o440);
        assert_eq!(spec["securityContext"]["fsGroup"], 10001);
        let container = &spec["containers"][0];
        assert_eq!(container["volumeMounts"][0]["mountPath"], "/etc/parsec");
        assert_eq!(container["volumeMounts"][0]["readOnly"], true);
        // The kubelet cannot present a client certificate: probes are plain HTTP.
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            assert!(container[probe].get("grpc").is_none(), "{probe}");
            assert_eq!(container[probe]["httpGet"]["port"], "metrics", "{probe}");
        }
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    }
    let topology = find(&objects, "ConfigMap", "ledger-topology")["data"]["topology.yaml"]
        .as_str()
        .unwrap();
    let tls = parsec_core::ClusterConfig::from_yaml(topology)
        .unwrap()
        .tls
        .unwrap();
    assert_eq!(tls.ca_file.to_str(), Some("/etc/parsec/tls/ca.crt"));
    assert!(
        !kinds(&objects).iter().any(|k| k.starts_with("Certificate")),
        "a given Secret needs no Certificate"
    );
}

#[test]
fn tls_from_cert_manager_adds_a_certificate_for_every_member_address() {
    let objects = check("tls-cert-manager");
    let certificate = find(&objects, "Certificate", "ledger-tls");
    assert_eq!(certificate["apiVersion"], "cert-manager.io/v1");
    let spec = &certificate["spec"];
    assert_eq!(spec["secretName"], "ledger-tls");
    assert_eq!(spec["duration"], "2160h");
    assert_eq!(spec["renewBefore"], "720h");
    let names: Vec<&str> = spec["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for name in [
        "*.ledger-ticketer.payments.svc",
        "*.ledger-shard-1.payments",
        "*.ledger-shard-1.payments.svc",
        "*.ledger-shard-1.payments.svc.cluster.local",
        "ledger-rpc.payments.svc",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    for spec in pod_specs(&objects) {
        assert_eq!(
            spec["volumes"][0]["projected"]["sources"][1]["secret"]["name"],
            "ledger-tls"
        );
    }
}

#[test]
fn network_policies_admit_only_the_traffic_of_the_topology() {
    let objects = check("network-policy");
    let shard = find(&objects, "NetworkPolicy", "demo-shard");
    let from = &shard["spec"]["ingress"][0]["from"];
    assert_eq!(
        from.as_array().unwrap().len(),
        3,
        "shards, agents, operator"
    );
    assert_eq!(
        from[2]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "parsec-system"
    );
    let agent = find(&objects, "NetworkPolicy", "demo-agent");
    assert_eq!(
        agent["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["parsec.dev/client"],
        "true"
    );
    find(&objects, "NetworkPolicy", "demo-ticket-machine");
    // Without the flag, no policy.
    assert!(
        !kinds(&check("three-replicas-static"))
            .iter()
            .any(|k| k.starts_with("NetworkPolicy"))
    );
}

#[test]
fn every_pod_runs_non_root_read_only_without_capabilities_or_token() {
    for fixture in ["dev-single-replica", "production", "tls-secret"] {
        for spec in pod_specs(&check(fixture)) {
            assert_eq!(spec["automountServiceAccountToken"], false, "{fixture}");
            let pod = &spec["securityContext"];
            assert_eq!(pod["runAsNonRoot"], true);
            assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault");
            for container in spec["containers"].as_array().unwrap() {
                let sc = &container["securityContext"];
                assert_eq!(sc["runAsNonRoot"], true);
                assert_eq!(sc["readOnlyRootFilesystem"], true);
                assert_eq!(sc["allowPrivilegeEscalation"], false);
                assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
            }
        }
    }
}
