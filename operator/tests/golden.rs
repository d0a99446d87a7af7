//! Golden files of the builders: every object the operator creates for each fixture under
//! `tests/fixtures`, in `tests/golden/<fixture>.yaml`. `UPDATE_GOLDEN=1 cargo test -p
//! parsec-operator --test golden` rewrites them; review the diff like code.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use parsec_operator::build::MonitoringApis;
use parsec_operator::render::{parse_cluster, render, to_yaml_stream};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

fn check(fixture: &str) -> Vec<serde_json::Value> {
    let manifest =
        std::fs::read_to_string(dir("fixtures").join(format!("{fixture}.yaml"))).unwrap();
    let cluster = parse_cluster(&manifest, "default").unwrap();
    let apis = MonitoringApis {
        service_monitor: true,
        prometheus_rule: true,
    };
    let objects = render(&cluster, apis).unwrap();
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
    assert_eq!(readiness["grpc"]["service"], "parsec.raft");
    assert_eq!(readiness["grpc"]["port"], 7200);
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
    ] {
        let manifest =
            std::fs::read_to_string(dir("fixtures").join(format!("{fixture}.yaml"))).unwrap();
        let cluster = parse_cluster(&manifest, "default").unwrap();
        for object in render(
            &cluster,
            MonitoringApis {
                service_monitor: true,
                prometheus_rule: true,
            },
        )
        .unwrap()
        {
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
