//! End-to-end on a real cluster (kind or any kubeconfig), with the operator installed:
//!
//! ```text
//! docker build -f operator/Dockerfile -t parsec:e2e . && kind load docker-image parsec:e2e
//! kubectl apply --server-side -f manifests/install.yaml
//! kubectl -n parsec-system set image deploy/parsec-operator operator=parsec:e2e
//! PARSEC_E2E=1 PARSEC_E2E_IMAGE=parsec:e2e cargo test -p parsec-operator --test e2e -- --nocapture
//! ```
//!
//! Skipped unless `PARSEC_E2E=1` (so a stray kubeconfig is never touched) and the API server
//! answers. Creates a namespace `parsec-e2e-<pid>`, deletes it at the end.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt};
use parsec_operator::crd::ParsecCluster;
use serde_json::json;

async fn reachable() -> Option<Client> {
    if std::env::var_os("PARSEC_E2E").is_none() {
        eprintln!(
            "SKIPPED: set PARSEC_E2E=1 (and PARSEC_E2E_IMAGE) to run against the current kubeconfig"
        );
        return None;
    }
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIPPED: no usable kubeconfig: {e}");
            return None;
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), client.apiserver_version()).await {
        Ok(Ok(v)) => {
            eprintln!("e2e against Kubernetes {}.{}", v.major, v.minor);
            Some(client)
        }
        _ => {
            eprintln!("SKIPPED: the API server does not answer");
            None
        }
    }
}

fn condition_is(
    type_: &'static str,
    value: &'static str,
) -> impl Fn(Option<&ParsecCluster>) -> bool {
    move |c: Option<&ParsecCluster>| {
        c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
            s.observed_generation == c.and_then(|c| c.metadata.generation)
                && s.conditions
                    .iter()
                    .any(|x| x.type_ == type_ && x.status == value)
        })
    }
}

#[tokio::test]
async fn dev_cluster_comes_up_scales_and_pauses() {
    let Some(client) = reachable().await else {
        return;
    };
    let image =
        std::env::var("PARSEC_E2E_IMAGE").unwrap_or_else(|_| "ghcr.io/example/parsec:0.1.0".into());
    let (repository, tag) = image.rsplit_once(':').unwrap();
    let ns = format!("parsec-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();

    let clusters: Api<ParsecCluster> = Api::namespaced(client.clone(), &ns);
    let manifest = json!({
        "apiVersion": "parsec.dev/v1alpha1", "kind": "ParsecCluster",
        "metadata": {"name": "e2e"},
        "spec": {
            "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
            "shards": {"count": 2, "replicas": 1, "storage": {"size": "1Gi"}},
            "ticketMachine": {"replicas": 1, "storage": {"size": "1Gi"}},
            "agents": {"replicas": 1},
            "chain": {"devAccounts": true},
            "placement": {"zoneSpread": false, "antiAffinity": "None"}
        }
    });
    let apply = PatchParams::apply("parsec-e2e");
    clusters
        .patch("e2e", &apply, &Patch::Apply(&manifest))
        .await
        .unwrap();
    let available = await_condition(clusters.clone(), "e2e", condition_is("Available", "True"));
    tokio::time::timeout(Duration::from_secs(600), available)
        .await
        .expect("Available within 10 minutes")
        .unwrap();

    // kubectl scale pc/e2e --replicas=2
    clusters
        .patch_scale(
            "e2e",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let scaled = await_condition(deployments, "e2e-agent", |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref())
            .and_then(|s| s.ready_replicas)
            == Some(2)
    });
    tokio::time::timeout(Duration::from_secs(300), scaled)
        .await
        .expect("2 agents within 5 minutes")
        .unwrap();

    // Pause: the condition flips and nothing else changes.
    clusters
        .patch(
            "e2e",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"clusterOperation": {"reconciliationPaused": true}}})),
        )
        .await
        .unwrap();
    let paused = await_condition(
        clusters.clone(),
        "e2e",
        condition_is("ReconciliationPaused", "True"),
    );
    tokio::time::timeout(Duration::from_secs(60), paused)
        .await
        .unwrap()
        .unwrap();

    let cluster = clusters.get("e2e").await.unwrap();
    eprintln!("status of {}: {:#?}", cluster.name_any(), cluster.status);
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}
