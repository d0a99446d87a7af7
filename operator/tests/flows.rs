//! Controller flows: the real reconcile function against kube-rs's mock API service (tower-test)
//! backed by a simulated cluster and a fake Raft data plane (see `support`).
#![allow(clippy::unwrap_used)]

mod support;

use parsec_operator::build::OptionalApis;
use parsec_operator::crd::{AutoscalingSpec, OperationKind};
use support::{Harness, cluster};

fn topology_members(h: &Harness, cluster: &str, shard: usize) -> usize {
    let world = h.world();
    let cm = world
        .get("api/v1", "configmaps", &format!("{cluster}-topology"))
        .unwrap();
    let config =
        parsec_core::ClusterConfig::from_yaml(cm["data"]["topology.yaml"].as_str().unwrap())
            .unwrap();
    config.shards[shard].replicas.len()
}

async fn created(spec: &str) -> Harness {
    let h = Harness::new(OptionalApis::default());
    h.world().put_cluster(&cluster("demo", spec));
    h.converge("demo", 5).await;
    h
}

#[tokio::test]
async fn create_brings_up_every_object_and_reports_available() {
    let h = created(
        "shards: {count: 2, replicas: 3}\nticketMachine: {replicas: 3}\nagents: {replicas: 2}",
    )
    .await;
    {
        let world = h.world();
        let mut sts = world.names("statefulsets");
        sts.sort();
        assert_eq!(sts, ["demo-shard-0", "demo-shard-1", "demo-ticketer"]);
        for name in &sts {
            assert_eq!(world.sts(name).unwrap()["spec"]["replicas"], 3);
        }
        assert_eq!(
            world.deployment("demo-agent").unwrap()["spec"]["replicas"],
            2
        );
        assert_eq!(
            world.names("pods").len(),
            9,
            "agents are not simulated as pods"
        );
        let mut pdbs = world.names("poddisruptionbudgets");
        pdbs.sort();
        assert_eq!(
            pdbs,
            [
                "demo-agent",
                "demo-shard-0",
                "demo-shard-1",
                "demo-ticketer"
            ]
        );
        // Nothing disruptive happened: no membership call, no pod deleted.
        assert!(
            world
                .log
                .iter()
                .all(|l| l.starts_with("APPLY") || l.starts_with("STATUS")),
            "{:?}",
            world.log
        );
    }
    assert_eq!(
        h.condition("demo", "Available"),
        ("True".into(), "Quorate".into(), Some(1))
    );
    assert_eq!(h.condition("demo", "Degraded").0, "False");
    assert_eq!(h.condition("demo", "Progressing").0, "False");
    let status = h.world().cluster("demo").status.unwrap();
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.shards.len(), 2);
    assert_eq!(status.shards[1].leader.as_deref(), Some("demo-shard-1-0"));
    assert_eq!(status.shards[1].members, 3);
    let agents = status.agents.unwrap();
    assert_eq!(
        agents.selector,
        "app.kubernetes.io/component=agent,app.kubernetes.io/instance=demo,app.kubernetes.io/name=parsec"
    );
    assert_eq!(agents.json_rpc_endpoint, "http://demo-rpc.default.svc:8545");
    assert!(
        h.event_reasons().contains(&"AvailableTrue".to_string()),
        "{:?}",
        h.event_reasons()
    );
}

#[tokio::test]
async fn a_quiet_cluster_is_not_rewritten() {
    let h = created("shards: {count: 1, replicas: 1}\nticketMachine: {replicas: 1}").await;
    let before = h.world().log.len();
    h.reconcile("demo").await;
    let status_writes = h.log(before, &["STATUS"]);
    assert!(
        status_writes.is_empty(),
        "status written although nothing changed: {status_writes:?}"
    );
}

#[tokio::test]
async fn scaling_agents_changes_the_deployment_only() {
    let h = created("shards: {count: 1, replicas: 3}\nagents: {replicas: 2}").await;
    let mark = h.world().log.len();
    // What `kubectl scale pc/demo --replicas=5` writes through the scale subresource.
    h.world()
        .edit_cluster("demo", |c| c.spec.agents.replicas = 5);
    h.converge("demo", 3).await;
    assert_eq!(
        h.world().deployment("demo-agent").unwrap()["spec"]["replicas"],
        5
    );
    assert!(
        h.log(mark, &["DELETE", "ADD_LEARNER", "REMOVE", "PROMOTE"])
            .is_empty()
    );
    let status = h.world().cluster("demo").status.unwrap();
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(status.agents.unwrap().replicas, 5);
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(2))
    );
}

#[tokio::test]
async fn autoscaling_hands_replicas_to_the_hpa_without_a_reset() {
    let h = created(
        "shards: {count: 1, replicas: 1}\nticketMachine: {replicas: 1}\nagents: {replicas: 4}",
    )
    .await;
    let mark = h.world().log.len();
    h.world().edit_cluster("demo", |c| {
        c.spec.agents.autoscaling = Some(AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 10,
            target_cpu_utilization_percentage: Some(70),
            target_in_flight_transactions: None,
        })
    });
    h.reconcile("demo").await;
    // The replicas stayed at 4 (a naive apply without the field would reset them to 1) …
    assert_eq!(
        h.world().deployment("demo-agent").unwrap()["spec"]["replicas"],
        4
    );
    assert!(
        h.world()
            .get(
                "apis/autoscaling/v2",
                "horizontalpodautoscalers",
                "demo-agent"
            )
            .is_some()
    );
    // … because the hand-over manager took co-ownership before the operator let go.
    let applies = h.log(
        mark,
        &[
            "APPLY parsec-operator-hpa-handover deployments",
            "APPLY parsec-operator deployments",
        ],
    );
    assert_eq!(
        applies,
        [
            "APPLY parsec-operator-hpa-handover deployments/demo-agent",
            "APPLY parsec-operator deployments/demo-agent"
        ]
    );

    // The HPA scales to 7; the operator leaves that alone, and hands over only once.
    h.world().hpa_scales("demo-agent", 7);
    let mark = h.world().log.len();
    h.converge("demo", 3).await;
    assert_eq!(
        h.world().deployment("demo-agent").unwrap()["spec"]["replicas"],
        7
    );
    assert!(
        h.log(mark, &["APPLY parsec-operator-hpa-handover"])
            .is_empty()
    );
    let agents = h.world().cluster("demo").status.unwrap().agents.unwrap();
    assert_eq!(agents.desired_replicas, Some(7));

    // Autoscaling off: the HPA goes, the operator owns replicas again.
    h.world()
        .edit_cluster("demo", |c| c.spec.agents.autoscaling = None);
    h.converge("demo", 3).await;
    assert!(
        h.world()
            .get(
                "apis/autoscaling/v2",
                "horizontalpodautoscalers",
                "demo-agent"
            )
            .is_none()
    );
    assert_eq!(
        h.world().deployment("demo-agent").unwrap()["spec"]["replicas"],
        4
    );
}

#[tokio::test]
async fn three_to_five_replicas_adds_one_learner_at_a_time_then_back_to_three() {
    let h = created("shards: {count: 1, replicas: 3}\nticketMachine: {replicas: 1}").await;
    let mark = h.world().log.len();
    h.world()
        .edit_cluster("demo", |c| c.spec.shards.replicas = 5);

    // Step by step: exactly one operation, and the StatefulSet grows one pod at a time.
    let mut seen_kinds = Vec::new();
    for _ in 0..20 {
        h.reconcile("demo").await;
        let status = h.world().cluster("demo").status.unwrap();
        let replicas = h.world().sts("demo-shard-0").unwrap()["spec"]["replicas"]
            .as_i64()
            .unwrap();
        assert!(
            replicas <= status.shards[0].members as i64 + 1,
            "grew by more than one pod"
        );
        match status.operation {
            Some(op) => seen_kinds.push(op.kind),
            None if status.shards[0].members == 5 => break,
            None => {}
        }
    }
    assert!(seen_kinds.iter().all(|k| *k == OperationKind::AddMember));
    assert_eq!(
        h.log(mark, &["ADD_LEARNER", "PROMOTE", "REMOVE", "DELETE pods"]),
        [
            "ADD_LEARNER demo-shard-0 3",
            "PROMOTE demo-shard-0 3",
            "ADD_LEARNER demo-shard-0 4",
            "PROMOTE demo-shard-0 4"
        ]
    );
    {
        let world = h.world();
        let raft = &world.raft["demo-shard-0"];
        assert_eq!(
            raft.voters.iter().copied().collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        assert_eq!(world.sts("demo-shard-0").unwrap()["spec"]["replicas"], 5);
    }
    assert_eq!(topology_members(&h, "demo", 0), 5);
    assert!(
        h.event_reasons()
            .contains(&"OperationCompleted".to_string())
    );
    h.converge("demo", 3).await;
    assert_eq!(h.condition("demo", "Available").0, "True");

    // And back: each member leaves Raft before its pod goes.
    let mark = h.world().log.len();
    h.world()
        .edit_cluster("demo", |c| c.spec.shards.replicas = 3);
    h.converge("demo", 20).await;
    assert_eq!(
        h.log(mark, &["ADD_LEARNER", "PROMOTE", "REMOVE", "DELETE pods"]),
        ["REMOVE demo-shard-0 4", "REMOVE demo-shard-0 3"]
    );
    let world = h.world();
    assert_eq!(world.sts("demo-shard-0").unwrap()["spec"]["replicas"], 3);
    assert_eq!(world.raft["demo-shard-0"].voters.len(), 3);
    let pods = world.names("pods");
    assert!(
        !pods.contains(&"demo-shard-0-4".to_string())
            && !pods.contains(&"demo-shard-0-3".to_string())
    );
}

#[tokio::test]
async fn scale_in_removes_the_member_from_raft_before_its_pod() {
    let h = created("shards: {count: 1, replicas: 5}\nticketMachine: {replicas: 1}").await;
    let mark = h.world().log.len();
    h.world()
        .edit_cluster("demo", |c| c.spec.shards.replicas = 3);
    h.converge("demo", 20).await;
    let log = h.world().log[mark..].to_vec();
    let removed_4 = log
        .iter()
        .position(|l| l == "REMOVE demo-shard-0 4")
        .unwrap();
    let removed_3 = log
        .iter()
        .position(|l| l == "REMOVE demo-shard-0 3")
        .unwrap();
    assert!(removed_4 < removed_3);
    // Between the two removals the StatefulSet was shrunk to 4 (pod 4 gone before member 3 left).
    let world = h.world();
    assert_eq!(world.sts("demo-shard-0").unwrap()["spec"]["replicas"], 3);
}

#[tokio::test]
async fn rolling_upgrade_restarts_not_ready_first_then_followers_then_the_leader() {
    let h = created("shards: {count: 1, replicas: 3}\nticketMachine: {replicas: 3}").await;
    // Member 1 of the shard is broken (not ready) when the upgrade starts.
    h.world().broken_pods.insert("demo-shard-0-1".into());
    let mark = h.world().log.len();
    h.world()
        .edit_cluster("demo", |c| c.spec.image.tag = "2".into());
    // The broken member recovers once restarted on the new template.
    for _ in 0..60 {
        h.reconcile("demo").await;
        let mut world = h.world();
        if world.log[mark..]
            .iter()
            .any(|l| l == "DELETE pods/demo-shard-0-1")
        {
            world.broken_pods.clear();
        }
        drop(world);
        if h.quiet("demo")
            && h.world().log[mark..]
                .iter()
                .any(|l| l.starts_with("DELETE"))
        {
            break;
        }
    }
    let steps = h.log(mark, &["DELETE pods", "REMOVE", "ADD_LEARNER", "PROMOTE"]);
    assert_eq!(
        steps,
        [
            // The not-ready member, wherever it is, goes first (it cannot hurt quorum more).
            "DELETE pods/demo-shard-0-1",
            // Then groups in order: the ticket machine's followers, highest ordinal first …
            "DELETE pods/demo-ticketer-2",
            "DELETE pods/demo-ticketer-1",
            // … and its leader last: removed from Raft (the others elect), restarted, re-added.
            "REMOVE demo-ticketer 0",
            "DELETE pods/demo-ticketer-0",
            "ADD_LEARNER demo-ticketer 0",
            "PROMOTE demo-ticketer 0",
            // Then the shard: its follower, then its leader.
            "DELETE pods/demo-shard-0-2",
            "REMOVE demo-shard-0 0",
            "DELETE pods/demo-shard-0-0",
            "ADD_LEARNER demo-shard-0 0",
            "PROMOTE demo-shard-0 0",
        ]
    );
    // Quorum was never at risk: apart from the broken member itself, no pod was deleted while
    // another member of its group was not ready.
    {
        let world = h.world();
        for (pod, unready) in &world.unready_at_delete {
            assert_eq!(
                *unready, 0,
                "{pod} deleted while {unready} other member(s) were not ready"
            );
        }
        assert_eq!(world.raft["demo-ticketer"].voters.len(), 3);
        assert_eq!(world.raft["demo-shard-0"].voters.len(), 3);
    }
    h.converge("demo", 3).await;
    let status = h.world().cluster("demo").status.unwrap();
    assert_eq!(status.image.as_deref(), Some("parsec:2"));
}

#[tokio::test]
async fn pause_applies_nothing_but_reports_status() {
    let h = created("shards: {count: 1, replicas: 3}").await;
    h.world().edit_cluster("demo", |c| {
        c.spec.cluster_operation.reconciliation_paused = true;
        c.spec.image.tag = "2".into();
        c.spec.agents.replicas = 9;
    });
    let mark = h.world().log.len();
    h.reconcile("demo").await;
    h.reconcile("demo").await;
    let writes = h.log(
        mark,
        &["APPLY", "DELETE", "ADD_LEARNER", "REMOVE", "PROMOTE"],
    );
    assert!(writes.is_empty(), "paused but wrote {writes:?}");
    assert_eq!(
        h.condition("demo", "ReconciliationPaused"),
        ("True".into(), "Paused".into(), Some(2))
    );
    assert!(
        h.event_reasons()
            .contains(&"ReconciliationPaused".to_string())
    );

    h.world().edit_cluster("demo", |c| {
        c.spec.cluster_operation.reconciliation_paused = false
    });
    h.converge("demo", 40).await;
    assert_eq!(
        h.world().deployment("demo-agent").unwrap()["spec"]["replicas"],
        9
    );
    assert_eq!(h.condition("demo", "ReconciliationPaused").0, "False");
}

#[tokio::test]
async fn stop_scales_to_zero_keeps_membership_and_resumes() {
    let h = created("shards: {count: 1, replicas: 3}\nagents: {replicas: 2, autoscaling: {minReplicas: 2, maxReplicas: 4, targetCPUUtilizationPercentage: 50}}").await;
    assert!(
        h.world()
            .get(
                "apis/autoscaling/v2",
                "horizontalpodautoscalers",
                "demo-agent"
            )
            .is_some()
    );
    h.world()
        .edit_cluster("demo", |c| c.spec.cluster_operation.stopped = true);
    h.converge("demo", 3).await;
    {
        let world = h.world();
        assert_eq!(world.sts("demo-shard-0").unwrap()["spec"]["replicas"], 0);
        assert_eq!(world.sts("demo-ticketer").unwrap()["spec"]["replicas"], 0);
        assert_eq!(
            world.deployment("demo-agent").unwrap()["spec"]["replicas"],
            0
        );
        assert!(
            world
                .get(
                    "apis/autoscaling/v2",
                    "horizontalpodautoscalers",
                    "demo-agent"
                )
                .is_none()
        );
        assert!(world.names("pods").is_empty());
    }
    assert_eq!(h.condition("demo", "Stopped").0, "True");
    assert_eq!(
        h.condition("demo", "Available"),
        ("False".into(), "Stopped".into(), Some(2))
    );
    assert_eq!(topology_members(&h, "demo", 0), 3);

    h.world()
        .edit_cluster("demo", |c| c.spec.cluster_operation.stopped = false);
    h.converge("demo", 5).await;
    assert_eq!(
        h.world().sts("demo-shard-0").unwrap()["spec"]["replicas"],
        3
    );
    // The agents come back at the autoscaler's minimum (an HPA never scales up from 0).
    assert_eq!(
        h.world().deployment("demo-agent").unwrap()["spec"]["replicas"],
        2
    );
    assert_eq!(h.condition("demo", "Available").0, "True");
    assert_eq!(h.condition("demo", "Stopped").0, "False");
}

#[tokio::test]
async fn deletion_leaves_children_to_the_garbage_collector() {
    let h = created("shards: {count: 1, replicas: 1}\nticketMachine: {replicas: 1}").await;
    {
        let world = h.world();
        for (key, object) in &world.objects {
            // Pods and claims belong to their StatefulSet, not to the cluster.
            if key.1 == "pods" || key.1 == "persistentvolumeclaims" || key.1 == "parsecclusters" {
                continue;
            }
            let owner = &object["metadata"]["ownerReferences"][0];
            assert_eq!(owner["kind"], "ParsecCluster", "{key:?}");
            assert_eq!(owner["uid"], "cluster-uid");
            assert_eq!(owner["blockOwnerDeletion"], true);
        }
        let retention =
            &world.sts("demo-shard-0").unwrap()["spec"]["persistentVolumeClaimRetentionPolicy"];
        assert_eq!(retention["whenDeleted"], "Retain");
        assert_eq!(retention["whenScaled"], "Delete");
    }
    h.world().edit_cluster("demo", |c| {
        c.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
    });
    let mark = h.world().log.len();
    let action = h.reconcile("demo").await;
    assert!(
        h.world().log[mark..].is_empty(),
        "a deleted cluster must not be written to"
    );
    assert_eq!(action, kube::runtime::controller::Action::await_change());
}

#[tokio::test]
async fn an_invalid_spec_is_rejected_without_touching_the_cluster() {
    let h = created("shards: {count: 2, replicas: 3}").await;
    let mark = h.world().log.len();
    h.world().edit_cluster("demo", |c| {
        c.spec.shards.count = 3;
        c.spec.shards.replicas = 4;
    });
    h.reconcile("demo").await;
    assert!(h.log(mark, &["APPLY", "DELETE"]).is_empty());
    let (status, reason, generation) = h.condition("demo", "Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str(), generation),
        ("True", "SpecRejected", Some(2))
    );
    assert!(h.event_reasons().contains(&"SpecRejected".to_string()));
}

#[tokio::test]
async fn storage_growth_expands_claims_and_keeps_the_immutable_template() {
    let h = created(
        "shards: {count: 1, replicas: 3, storage: {size: 10Gi}}\nticketMachine: {replicas: 1}",
    )
    .await;
    h.world()
        .edit_cluster("demo", |c| c.spec.shards.storage.size = "20Gi".into());
    // The fake API server rejects (panics on) any change of the volume claim template.
    h.converge("demo", 3).await;
    let world = h.world();
    for ordinal in 0..3 {
        let claim = world
            .get(
                "api/v1",
                "persistentvolumeclaims",
                &format!("data-demo-shard-0-{ordinal}"),
            )
            .unwrap();
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "20Gi");
    }
    let template = &world.sts("demo-shard-0").unwrap()["spec"]["volumeClaimTemplates"][0];
    assert_eq!(template["spec"]["resources"]["requests"]["storage"], "10Gi");
    // The ticket machine's volumes were not touched.
    let tm = world
        .get("api/v1", "persistentvolumeclaims", "data-demo-ticketer-0")
        .unwrap();
    assert_eq!(tm["spec"]["resources"]["requests"]["storage"], "10Gi");
    assert_eq!(
        world.log.iter().filter(|l| l.starts_with("EXPAND")).count(),
        3
    );
}

#[tokio::test]
async fn api_failures_back_off_exponentially_and_reset_on_success() {
    use kube::runtime::controller::Action;
    use std::time::Duration;
    let h = created("shards: {count: 1, replicas: 1}\nticketMachine: {replicas: 1}").await;
    h.world().fail_applies_of = Some("statefulsets".into());
    assert_eq!(
        h.failing_reconcile("demo").await,
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        h.failing_reconcile("demo").await,
        Action::requeue(Duration::from_secs(10))
    );
    assert_eq!(
        h.failing_reconcile("demo").await,
        Action::requeue(Duration::from_secs(20))
    );
    h.world().fail_applies_of = None;
    h.reconcile("demo").await;
    h.world().fail_applies_of = Some("statefulsets".into());
    assert_eq!(
        h.failing_reconcile("demo").await,
        Action::requeue(Duration::from_secs(5))
    );
}

/// A CA and the certificates it issues for the cluster's Secret.
struct Pki(parsec_transport::Authority);

impl Pki {
    fn new() -> Self {
        Pki(parsec_transport::Authority::new("cluster CA").unwrap())
    }

    /// Writes a freshly issued certificate into Secret `name`, as cert-manager does.
    fn issue_into(&self, h: &Harness, name: &str) {
        let issued = self
            .0
            .issue(&["*.demo-shard-0.default.svc".into()])
            .unwrap();
        h.world()
            .put_secret(name, &self.0.ca_pem(), &issued.cert_pem, &issued.key_pem);
    }
}

const CERT_MANAGER_CLUSTER: &str = "shards: {count: 1, replicas: 3}\nticketMachine: {replicas: 1}\n\
     tls: {certManager: {issuerRef: {name: cluster-ca, kind: ClusterIssuer}}}";

fn pod_annotation(h: &Harness, sts: &str, key: &str) -> Option<String> {
    h.world().sts(sts).unwrap()["spec"]["template"]["metadata"]["annotations"][key]
        .as_str()
        .map(String::from)
}

#[tokio::test]
async fn tls_via_cert_manager_applies_the_certificate_and_waits_for_its_secret() {
    let h = Harness::new(OptionalApis {
        certificate: true,
        ..OptionalApis::default()
    });
    h.world().cert_manager_installed = true;
    h.world()
        .put_cluster(&cluster("demo", CERT_MANAGER_CLUSTER));
    let action = h.reconcile("demo").await;
    {
        let world = h.world();
        let certificate = world
            .get("apis/cert-manager.io/v1", "certificates", "demo-tls")
            .expect("the Certificate is applied first");
        assert_eq!(certificate["spec"]["secretName"], "demo-tls");
        assert_eq!(certificate["spec"]["issuerRef"]["kind"], "ClusterIssuer");
        assert_eq!(
            certificate["metadata"]["ownerReferences"][0]["kind"],
            "ParsecCluster"
        );
        // Nothing that would mount the missing Secret.
        assert!(world.names("statefulsets").is_empty());
        assert!(world.names("deployments").is_empty());
    }
    assert_eq!(
        h.condition("demo", "TLSReady"),
        ("False".into(), "WaitingForSecret".into(), Some(1))
    );
    assert_eq!(
        h.condition("demo", "Progressing"),
        ("True".into(), "WaitingForSecret".into(), Some(1))
    );
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(15)),
        "no crash loop: it looks again"
    );

    // cert-manager issues the certificate.
    let pki = Pki::new();
    pki.issue_into(&h, "demo-tls");
    h.converge("demo", 6).await;
    assert_eq!(
        h.condition("demo", "TLSReady"),
        ("True".into(), "SecretReady".into(), Some(1))
    );
    assert_eq!(h.condition("demo", "Available").0, "True");
    assert!(pod_annotation(&h, "demo-shard-0", "parsec.dev/tls-hash").is_some());
    {
        let world = h.world();
        let volume = &world.sts("demo-ticketer").unwrap()["spec"]["template"]["spec"]["volumes"][0];
        assert_eq!(
            volume["projected"]["sources"][1]["secret"]["name"],
            "demo-tls"
        );
        let topology =
            world.get("api/v1", "configmaps", "demo-topology").unwrap()["data"]["topology.yaml"]
                .as_str()
                .unwrap()
                .to_string();
        let config = parsec_core::ClusterConfig::from_yaml(&topology).unwrap();
        assert_eq!(
            config.tls.unwrap().key_file.to_str(),
            Some("/etc/parsec/tls/tls.key")
        );
        // The operator asked every member for its view over mTLS, never in plain text.
        assert!(world.admin_calls_tls > 0);
        assert_eq!(world.admin_calls_plain, 0);
    }

    // The same Secret, now named directly: the Certificate goes, nothing restarts (same content).
    let mark = h.world().log.len();
    h.world().edit_cluster("demo", |c| {
        c.spec.tls = Some(parsec_operator::crd::TlsSpec {
            secret_name: Some("demo-tls".into()),
            cert_manager: None,
        })
    });
    h.converge("demo", 4).await;
    assert!(
        h.world()
            .get("apis/cert-manager.io/v1", "certificates", "demo-tls")
            .is_none()
    );
    assert_eq!(
        h.log(mark, &["DELETE certificates"]),
        ["DELETE certificates/demo-tls"]
    );
    assert!(h.log(mark, &["DELETE pods"]).is_empty());
}

#[tokio::test]
async fn tls_via_cert_manager_without_cert_manager_is_reported_and_creates_nothing() {
    let h = Harness::new(OptionalApis::default());
    h.world()
        .put_cluster(&cluster("demo", CERT_MANAGER_CLUSTER));
    h.reconcile("demo").await;
    h.reconcile("demo").await;
    assert!(h.log(0, &["APPLY", "DELETE"]).is_empty());
    let (status, reason, _) = h.condition("demo", "Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "CertManagerMissing")
    );
    assert_eq!(h.condition("demo", "TLSReady").1, "CertManagerMissing");
    assert_eq!(h.condition("demo", "Progressing").0, "False");
    let warning = h
        .world()
        .events
        .iter()
        .find(|e| e["reason"] == "DegradedTrue")
        .cloned()
        .unwrap();
    assert_eq!(warning["type"], "Warning");
    assert!(
        warning["note"]
            .as_str()
            .unwrap()
            .contains("cert-manager is not installed"),
        "{warning}"
    );

    // cert-manager installed later is found without restarting the operator.
    h.world().cert_manager_installed = true;
    h.reconcile("demo").await;
    assert!(
        h.world()
            .get("apis/cert-manager.io/v1", "certificates", "demo-tls")
            .is_some()
    );
    assert_eq!(h.condition("demo", "Degraded").0, "False");
}

/// Cluster `demo` with one ticket machine member and `replicas` per shard, whose certificate
/// comes from Secret `certs` (not created yet).
fn secret_tls_cluster(replicas: i32) -> Harness {
    let h = Harness::new(OptionalApis::default());
    h.world().put_cluster(&cluster(
        "demo",
        &format!(
            "shards: {{count: 1, replicas: {replicas}}}\nticketMachine: {{replicas: 1}}\n\
             tls: {{secretName: certs}}"
        ),
    ));
    h
}

#[tokio::test]
async fn tls_from_a_secret_waits_for_a_usable_secret_then_starts() {
    let h = secret_tls_cluster(1);
    h.reconcile("demo").await;
    assert!(h.log(0, &["APPLY"]).is_empty());
    assert_eq!(h.condition("demo", "Progressing").1, "WaitingForSecret");

    // A Secret without the CA (what an ACME issuer writes) is refused with the reason.
    h.world().put_secret("certs", "", "x", "y");
    h.reconcile("demo").await;
    assert_eq!(h.condition("demo", "Degraded").1, "SecretInvalid");
    assert!(h.log(0, &["APPLY"]).is_empty());

    let pki = Pki::new();
    pki.issue_into(&h, "certs");
    h.converge("demo", 6).await;
    assert_eq!(h.condition("demo", "TLSReady").0, "True");
    assert_eq!(h.condition("demo", "Degraded").0, "False");
    assert_eq!(h.world().names("statefulsets").len(), 2);

    // The Secret of a running cluster disappears: its pods keep running untouched, and the
    // operator, which cannot present a certificate, does not call the members at all.
    h.world()
        .objects
        .retain(|key, _| !(key.1 == "secrets" && key.3 == "certs"));
    let (mark, calls) = {
        let world = h.world();
        (
            world.log.len(),
            world.admin_calls_plain + world.admin_calls_tls,
        )
    };
    h.reconcile("demo").await;
    h.reconcile("demo").await;
    assert!(h.log(mark, &["APPLY", "DELETE"]).is_empty());
    {
        let world = h.world();
        assert_eq!(world.admin_calls_plain + world.admin_calls_tls, calls);
        assert_eq!(world.names("pods").len(), 2, "both members still run");
    }
    assert_eq!(h.condition("demo", "TLSReady").1, "WaitingForSecret");
    assert_eq!(h.condition("demo", "Available").1, "TLSNotReady");
    pki.issue_into(&h, "certs");
    h.converge("demo", 40).await;
    assert_eq!(h.condition("demo", "Available").0, "True");
}

#[tokio::test]
async fn a_renewed_certificate_rolls_every_member_one_at_a_time_leader_last() {
    let h = secret_tls_cluster(3);
    let pki = Pki::new();
    pki.issue_into(&h, "certs");
    h.converge("demo", 6).await;
    let before = pod_annotation(&h, "demo-shard-0", "parsec.dev/tls-hash").unwrap();
    let agents_before = h.world().deployment("demo-agent").unwrap()["spec"]["template"].clone();

    // Renewal: same CA, new key and certificate.
    pki.issue_into(&h, "certs");
    let mark = h.world().log.len();
    h.converge("demo", 40).await;
    let after = pod_annotation(&h, "demo-shard-0", "parsec.dev/tls-hash").unwrap();
    assert_ne!(before, after);
    assert_ne!(
        h.world().deployment("demo-agent").unwrap()["spec"]["template"],
        agents_before,
        "the agents roll too (their Deployment does it)"
    );
    assert_eq!(
        h.log(mark, &["DELETE pods", "REMOVE", "ADD_LEARNER", "PROMOTE"]),
        [
            "DELETE pods/demo-ticketer-0",
            "DELETE pods/demo-shard-0-2",
            "DELETE pods/demo-shard-0-1",
            "REMOVE demo-shard-0 0",
            "DELETE pods/demo-shard-0-0",
            "ADD_LEARNER demo-shard-0 0",
            "PROMOTE demo-shard-0 0",
        ]
    );
    for (pod, unready) in &h.world().unready_at_delete {
        assert_eq!(
            *unready, 0,
            "{pod} deleted while another member was not ready"
        );
    }
    assert!(h.quiet("demo"));
}

#[tokio::test]
async fn network_policies_are_created_and_removed_with_the_spec() {
    let h = created("shards: {count: 1, replicas: 1}\nticketMachine: {replicas: 1}").await;
    assert!(h.world().names("networkpolicies").is_empty());
    h.world()
        .edit_cluster("demo", |c| c.spec.network_policy.enabled = true);
    h.converge("demo", 3).await;
    let mut names = h.world().names("networkpolicies");
    names.sort();
    assert_eq!(names, ["demo-agent", "demo-shard", "demo-ticket-machine"]);
    {
        let world = h.world();
        let shard = world
            .get("apis/networking.k8s.io/v1", "networkpolicies", "demo-shard")
            .unwrap();
        let operator = &shard["spec"]["ingress"][0]["from"][2];
        assert_eq!(
            operator["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            support::OPERATOR_NS
        );
    }

    let mark = h.world().log.len();
    h.world()
        .edit_cluster("demo", |c| c.spec.network_policy.enabled = false);
    h.converge("demo", 3).await;
    assert!(h.world().names("networkpolicies").is_empty());
    let mut deleted = h.log(mark, &["DELETE networkpolicies"]);
    deleted.sort();
    assert_eq!(
        deleted,
        [
            "DELETE networkpolicies/demo-agent",
            "DELETE networkpolicies/demo-shard",
            "DELETE networkpolicies/demo-ticket-machine"
        ]
    );
    assert!(h.event_reasons().contains(&"Deleted".to_string()));
}

#[tokio::test]
async fn tls_is_not_switched_on_under_running_members_even_past_a_stale_crd() {
    let h = created("shards: {count: 1, replicas: 3}\nticketMachine: {replicas: 1}").await;
    Pki::new().issue_into(&h, "certs");
    let secured = || {
        Some(parsec_operator::crd::TlsSpec {
            secret_name: Some("certs".into()),
            cert_manager: None,
        })
    };
    // The fake API server runs no CEL: the edit gets through, as with a stale CRD.
    let mark = h.world().log.len();
    h.world().edit_cluster("demo", |c| c.spec.tls = secured());
    h.reconcile("demo").await;
    assert!(h.log(mark, &["APPLY", "DELETE"]).is_empty());
    assert_eq!(h.condition("demo", "Degraded").1, "SpecRejected");
    assert!(h.event_reasons().contains(&"SpecRejected".to_string()));

    // Stopped in the same edit: every member goes, then all come back with mTLS.
    h.world()
        .edit_cluster("demo", |c| c.spec.cluster_operation.stopped = true);
    h.converge("demo", 5).await;
    assert!(h.world().names("pods").is_empty());
    h.world()
        .edit_cluster("demo", |c| c.spec.cluster_operation.stopped = false);
    h.converge("demo", 6).await;
    assert_eq!(h.condition("demo", "Available").0, "True");
    assert_eq!(h.condition("demo", "TLSReady").0, "True");
    assert!(pod_annotation(&h, "demo-shard-0", "parsec.dev/tls-hash").is_some());
}
