//! Controller flows: the real reconcile function against kube-rs's mock API service (tower-test)
//! backed by a simulated cluster and a fake Raft data plane (see `support`).
#![allow(clippy::unwrap_used)]

mod support;

use parsec_operator::build::MonitoringApis;
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
    let h = Harness::new(MonitoringApis::default());
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
