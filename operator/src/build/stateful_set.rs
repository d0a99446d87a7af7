//! One StatefulSet per Raft group (each shard, and the ticket machine).
//!
//! - `podManagementPolicy: Parallel`: every member of a new group starts at once, so the group
//!   can form a quorum (members wait for each other);
//! - `updateStrategy: OnDelete`: the operator, not the StatefulSet controller, decides which
//!   member restarts when (not-ready first, followers, leader last; see `controller::plan`);
//! - the config hash on the pod template rolls members when settings change.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodTemplateSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::GroupSize;
use super::pod;
use crate::naming::{DATA_DIR, DATA_VOLUME, Group, METRICS_PORT, group_labels, group_selector};
use crate::validate::ValidatedCluster;

pub fn raft_group(
    cluster: &ValidatedCluster,
    group: Group,
    size: GroupSize,
    config_hash: &str,
    tls_hash: Option<&str>,
    live_volume_size: Option<&str>,
) -> StatefulSet {
    let name = group.stateful_set(&cluster.name);
    let labels = group_labels(&cluster.name, group);
    let selector = group_selector(&cluster.name, group);
    let (storage, resources) = match group {
        Group::TicketMachine => (
            &cluster.spec.ticket_machine.storage,
            cluster.spec.ticket_machine.resources.clone(),
        ),
        Group::Shard(_) => (
            &cluster.spec.shards.storage,
            cluster.spec.shards.resources.clone(),
        ),
    };

    let mut container = pod::container(cluster, resources);
    container.args = Some(pod::raft_args(group));
    container.env = Some(pod::env(cluster, true));
    container.ports = Some(vec![
        pod::port("grpc", group.port()),
        pod::port("metrics", METRICS_PORT),
    ]);
    container.working_dir = Some(DATA_DIR.into());
    container.volume_mounts = Some(vec![pod::topology_mount(), pod::data_mount()]);

    let mut pod_spec = pod::pod_spec(container, vec![pod::topology_volume(cluster)], 30);
    pod::place(cluster, &mut pod_spec, &selector);

    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(live_volume_size.unwrap_or(&storage.size).to_string()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };

    StatefulSet {
        metadata: cluster.child_meta(name.clone(), labels.clone()),
        spec: StatefulSetSpec {
            replicas: Some(size.replicas),
            service_name: Some(name),
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(cluster.spec.pvc_retention.when_deleted.as_str().into()),
                    when_scaled: Some(cluster.spec.pvc_retention.when_scaled.as_str().into()),
                },
            ),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(pod::template_annotations(config_hash, tls_hash)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        },
        status: None,
    }
}
