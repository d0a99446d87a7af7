//! The CRD: the checked-in YAML is what the code generates, and its CEL rules accept and reject
//! what they should (evaluated offline by kube-cel, the Kubernetes CEL libraries in Rust,
//! including the quantity library and transition rules with `oldSelf`).
#![allow(clippy::unwrap_used)]

use std::path::Path;

use kube::CustomResourceExt;
use kube_cel::Validator;
use parsec_operator::crd::{ParsecCluster, crd_yaml};
use serde_json::{Value, json};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Writes `expected` to `path` under UPDATE_GOLDEN=1, else fails when `path` differs.
fn check_file(path: &str, expected: &str) {
    let path = repo(path);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, expected).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == expected,
        "{} is stale: run `UPDATE_GOLDEN=1 cargo test -p parsec-operator --test crd` and review the diff",
        path.display()
    );
}

#[test]
fn checked_in_crd_copies_are_not_stale() {
    let generated = crd_yaml().unwrap();
    check_file("crds/parseccluster.yaml", &generated);
    // The Helm chart installs the same CRD (charts cannot read files outside their folder).
    check_file(
        "charts/parsec-operator/files/parseccluster.yaml",
        &generated,
    );
    // `kubectl apply -f manifests/install.yaml` = the CRD, then the operator.
    let operator = std::fs::read_to_string(repo("manifests/operator.yaml")).unwrap();
    check_file(
        "manifests/install.yaml",
        &format!(
            "# Generated from crds/parseccluster.yaml and manifests/operator.yaml by operator/tests/crd.rs.\n\
             # kubectl apply --server-side -f manifests/install.yaml\n{generated}---\n{operator}"
        ),
    );
    // The chart ships the same dashboards and rules as the operator (from manifests/monitoring).
    for (name, json) in parsec_operator::build::config_map::DASHBOARDS {
        check_file(&format!("charts/parsec-operator/files/{name}"), json);
    }
}

#[test]
fn crd_shape() {
    let crd = serde_json::to_value(ParsecCluster::crd()).unwrap();
    assert_eq!(crd["metadata"]["name"], "parsecclusters.parsec.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "pc");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    assert_eq!(
        version["subresources"]["scale"]["specReplicasPath"],
        ".spec.agents.replicas"
    );
    assert_eq!(
        version["subresources"]["scale"]["labelSelectorPath"],
        ".status.agents.selector"
    );
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Shards",
            "Replicas",
            "Agents",
            "Available",
            "Operation",
            "Age"
        ]
    );
}

fn schema() -> Value {
    let crd = serde_json::to_value(ParsecCluster::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn base() -> Value {
    json!({
        "apiVersion": "parsec.dev/v1alpha1",
        "kind": "ParsecCluster",
        "metadata": {"name": "demo", "namespace": "default"},
        "spec": {
            "image": {"repository": "parsec", "tag": "1"},
            "shards": {"count": 2, "replicas": 3, "storage": {"size": "10Gi"}},
            "ticketMachine": {"replicas": 3, "storage": {"size": "1Gi"}},
            "agents": {"replicas": 2}
        }
    })
}

fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    *object.pointer_mut(pointer).unwrap() = value;
    object
}

/// The messages of the rules `object` breaks (updating from `old` when given).
fn broken(object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema(), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

#[test]
fn valid_objects_pass() {
    assert_eq!(broken(&base(), None), Vec::<String>::new());
    // Updates that keep the shard count and grow storage.
    let grown = with(base(), "/spec/shards/storage/size", json!("20Gi"));
    assert_eq!(broken(&grown, Some(&base())), Vec::<String>::new());
    let more_replicas = with(base(), "/spec/shards/replicas", json!(5));
    assert_eq!(broken(&more_replicas, Some(&base())), Vec::<String>::new());
    let autoscaled = with(
        base(),
        "/spec/agents",
        json!({"replicas": 2, "autoscaling": {"minReplicas": 2, "maxReplicas": 2, "targetCPUUtilizationPercentage": 50}}),
    );
    assert_eq!(broken(&autoscaled, None), Vec::<String>::new());
}

#[test]
fn even_replicas_are_rejected() {
    let object = with(base(), "/spec/shards/replicas", json!(4));
    let errors = broken(&object, None);
    assert!(errors.iter().any(|e| e.contains("odd")), "{errors:?}");
    let object = with(base(), "/spec/ticketMachine/replicas", json!(2));
    assert!(broken(&object, None).iter().any(|e| e.contains("odd")));
}

#[test]
fn shard_count_is_immutable() {
    let object = with(base(), "/spec/shards/count", json!(3));
    assert_eq!(
        broken(&object, None),
        Vec::<String>::new(),
        "creation may pick any count"
    );
    let errors = broken(&object, Some(&base()));
    assert!(errors.iter().any(|e| e.contains("immutable")), "{errors:?}");
}

#[test]
fn storage_may_grow_but_never_shrink() {
    let shrunk = with(base(), "/spec/shards/storage/size", json!("5Gi"));
    let errors = broken(&shrunk, Some(&base()));
    assert!(
        errors.iter().any(|e| e.contains("never shrink")),
        "{errors:?}"
    );
    // Same size in other units is not a shrink.
    let same = with(base(), "/spec/shards/storage/size", json!("10240Mi"));
    assert_eq!(broken(&same, Some(&base())), Vec::<String>::new());
    let bogus = with(base(), "/spec/shards/storage/size", json!("ten gigs"));
    assert!(broken(&bogus, None).iter().any(|e| e.contains("quantity")));
}

#[test]
fn autoscaling_bounds_and_target() {
    let inverted = with(
        base(),
        "/spec/agents",
        json!({"autoscaling": {"minReplicas": 5, "maxReplicas": 2, "targetCPUUtilizationPercentage": 50}}),
    );
    let errors = broken(&inverted, None);
    assert!(
        errors.iter().any(|e| e.contains("must not exceed")),
        "{errors:?}"
    );
    let no_target = with(
        base(),
        "/spec/agents",
        json!({"autoscaling": {"minReplicas": 1, "maxReplicas": 2}}),
    );
    assert!(
        broken(&no_target, None)
            .iter()
            .any(|e| e.contains("needs a target"))
    );
}

#[test]
fn long_names_are_rejected() {
    let object = with(base(), "/metadata/name", json!("x".repeat(41)));
    assert!(
        broken(&object, None)
            .iter()
            .any(|e| e.contains("40 characters"))
    );
}

#[test]
fn example_clusters_pass_the_cel_rules_and_parse() {
    for example in ["dev", "production"] {
        let text =
            std::fs::read_to_string(repo(&format!("manifests/examples/{example}.yaml"))).unwrap();
        let object: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(broken(&object, None), Vec::<String>::new(), "{example}");
        let cluster: ParsecCluster = serde_json::from_value(object).unwrap();
        parsec_operator::render::render(
            &parsec_operator::render::parse_cluster(&text, "default").unwrap(),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(
            cluster.metadata.name.as_deref().map(str::is_empty),
            Some(false)
        );
    }
}

fn with_tls(tls: Value) -> Value {
    let mut object = base();
    object["spec"]["tls"] = tls;
    object
}

#[test]
fn tls_specs_with_one_source_pass() {
    for tls in [
        json!({"secretName": "ledger-certs"}),
        json!({"certManager": {"issuerRef": {"name": "ca"}}}),
        json!({"certManager": {"issuerRef": {"name": "ca", "kind": "ClusterIssuer"},
            "duration": "2160h", "renewBefore": "720h"}}),
    ] {
        assert_eq!(
            broken(&with_tls(tls.clone()), None),
            Vec::<String>::new(),
            "{tls}"
        );
        // The certificate's source may change on a running cluster (same CA: see README).
        assert_eq!(
            broken(
                &with_tls(tls),
                Some(&with_tls(json!({"secretName": "other"})))
            ),
            Vec::<String>::new()
        );
    }
}

#[test]
fn tls_needs_exactly_one_source() {
    let both =
        with_tls(json!({"secretName": "certs", "certManager": {"issuerRef": {"name": "ca"}}}));
    let errors = broken(&both, None);
    assert!(
        errors.iter().any(|e| e.contains("exactly one source")),
        "{errors:?}"
    );
    let neither = with_tls(json!({}));
    assert!(
        broken(&neither, None)
            .iter()
            .any(|e| e.contains("exactly one source"))
    );
}

#[test]
fn certificate_lifetimes_are_checked() {
    let renew_too_late = with_tls(json!({"certManager": {"issuerRef": {"name": "ca"},
        "duration": "24h", "renewBefore": "48h"}}));
    let errors = broken(&renew_too_late, None);
    assert!(
        errors.iter().any(|e| e.contains("shorter than")),
        "{errors:?}"
    );
    let too_short = with_tls(json!({"certManager": {"issuerRef": {"name": "ca"},
        "duration": "30m"}}));
    let errors = broken(&too_short, None);
    assert!(
        errors.iter().any(|e| e.contains("at least 1h")),
        "{errors:?}"
    );
}

#[test]
fn tls_is_switched_on_or_off_only_with_the_cluster_stopped() {
    let plain = base();
    let secured = with_tls(json!({"secretName": "certs"}));
    for (from, to) in [(&plain, &secured), (&secured, &plain)] {
        let errors = broken(to, Some(from));
        assert!(
            errors
                .iter()
                .any(|e| e.contains("clusterOperation.stopped")),
            "{errors:?}"
        );
    }
    // Stopping in the same edit, or while stopped, or resuming in the same edit: allowed.
    let stop = |mut o: Value| {
        o["spec"]["clusterOperation"] = json!({"stopped": true});
        o
    };
    assert_eq!(
        broken(&stop(secured.clone()), Some(&plain)),
        Vec::<String>::new()
    );
    assert_eq!(
        broken(&secured, Some(&stop(plain.clone()))),
        Vec::<String>::new()
    );
    // Creation with TLS is no switch.
    assert_eq!(broken(&secured, None), Vec::<String>::new());
}
