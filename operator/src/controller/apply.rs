//! Server-side apply of every desired object under one field manager, then deletion of the
//! objects this cluster no longer needs (orphans), found by the instance labels.

use std::collections::BTreeSet;
use std::fmt::Debug;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::Error;
use super::observe::ObservedDeployment;
use crate::build::certificate::certificate_resource;
use crate::build::monitoring::{prometheus_rule_resource, service_monitor_resource};
use crate::build::{Desired, OptionalApis};
use crate::naming::{FIELD_MANAGER, HPA_HANDOVER_MANAGER, instance_selector};
use crate::validate::ValidatedCluster;

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

async fn apply_one<K>(client: &Client, namespace: &str, object: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let name = object.name_any();
    Api::<K>::namespaced(client.clone(), namespace)
        .patch(&name, &apply_params(), &Patch::Apply(object))
        .await
        .map_err(|source| Error::Kube {
            action: "apply",
            kind: <K as k8s_openapi::Resource>::KIND,
            name,
            source,
        })?;
    Ok(())
}

/// The custom resources of other projects the operator may create, with the kind each error
/// names.
fn dynamic_kinds() -> [(ApiResource, &'static str); 3] {
    [
        (service_monitor_resource(), "ServiceMonitor"),
        (prometheus_rule_resource(), "PrometheusRule"),
        (certificate_resource(), "Certificate"),
    ]
}

/// Applies a custom resource of another project (ServiceMonitor, PrometheusRule, Certificate).
pub async fn apply_dynamic(
    client: &Client,
    namespace: &str,
    resource: &ApiResource,
    object: &DynamicObject,
) -> Result<(), Error> {
    let name = object.name_any();
    let kind = dynamic_kinds()
        .into_iter()
        .find(|(r, _)| r == resource)
        .map_or("custom resource", |(_, kind)| kind);
    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, resource)
        .patch(&name, &apply_params(), &Patch::Apply(object))
        .await
        .map_err(|source| Error::Kube {
            action: "apply",
            kind,
            name,
            source,
        })?;
    Ok(())
}

/// Hands the agent Deployment's `spec.replicas` to the HPA. Our apply is about to stop setting
/// the field; if our manager is its only owner, the API server would remove it and the
/// Deployment would fall back to 1 replica. So first a second manager applies the current value,
/// becoming co-owner; once our manager drops the field, the hand-over manager keeps it and the
/// HPA takes it over on its next write (the "transferring ownership" recipe of the SSA docs).
async fn hand_replicas_to_hpa(
    client: &Client,
    cluster: &ValidatedCluster,
    deployment: &Deployment,
    live: &ObservedDeployment,
) -> Result<(), Error> {
    let Some(live_replicas) = live.replicas else {
        return Ok(());
    };
    // An HPA never scales a Deployment up from 0 (as a stopped cluster leaves it): hand over at
    // least the autoscaler's minimum.
    let minimum = cluster
        .spec
        .agents
        .autoscaling
        .as_ref()
        .map_or(1, |a| a.min_replicas);
    let replicas = live_replicas.max(minimum);
    let name = deployment.name_any();
    let handover = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": cluster.namespace},
        "spec": {"replicas": replicas},
    });
    Api::<Deployment>::namespaced(client.clone(), &cluster.namespace)
        .patch(
            &name,
            &PatchParams::apply(HPA_HANDOVER_MANAGER),
            &Patch::Apply(&handover),
        )
        .await
        .map_err(|source| Error::Kube {
            action: "hand over replicas of",
            kind: "Deployment",
            name,
            source,
        })?;
    tracing::info!(
        replicas,
        "handed agent replicas to the HorizontalPodAutoscaler"
    );
    Ok(())
}

/// Applies every object of `desired`.
pub async fn apply(
    client: &Client,
    cluster: &ValidatedCluster,
    desired: &Desired,
    live_deployment: Option<&ObservedDeployment>,
) -> Result<(), Error> {
    let ns = &cluster.namespace;
    // The Certificate first: cert-manager can issue while the rest is applied.
    if let Some(certificate) = &desired.certificate {
        apply_dynamic(client, ns, &certificate_resource(), certificate).await?;
    }
    for o in &desired.network_policies {
        apply_one(client, ns, o).await?;
    }
    for o in &desired.config_maps {
        apply_one(client, ns, o).await?;
    }
    for o in &desired.services {
        apply_one(client, ns, o).await?;
    }
    for o in &desired.stateful_sets {
        apply_one(client, ns, o).await?;
    }
    if let Some(deployment) = &desired.deployment {
        let leaves_replicas = deployment.spec.replicas.is_none();
        if let Some(live) =
            live_deployment.filter(|l| leaves_replicas && l.replicas_owned_by_operator)
        {
            hand_replicas_to_hpa(client, cluster, deployment, live).await?;
        }
        apply_one(client, ns, deployment).await?;
    }
    if let Some(hpa) = &desired.hpa {
        apply_one(client, ns, hpa).await?;
    }
    for o in &desired.pdbs {
        apply_one(client, ns, o).await?;
    }
    for o in &desired.monitoring {
        let resource = match o.types.as_ref().map(|t| t.kind.as_str()) {
            Some("PrometheusRule") => prometheus_rule_resource(),
            _ => service_monitor_resource(),
        };
        apply_dynamic(client, ns, &resource, o).await?;
    }
    Ok(())
}

async fn delete_orphans_of<K>(
    client: &Client,
    cluster: &ValidatedCluster,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api = Api::<K>::namespaced(client.clone(), &cluster.namespace);
    let listed = api
        .list(&ListParams::default().labels(&instance_selector(&cluster.name)))
        .await
        .map_err(|source| Error::Kube {
            action: "list",
            kind: <K as k8s_openapi::Resource>::KIND,
            name: cluster.name.clone(),
            source,
        })?;
    let mut deleted = Vec::new();
    for object in listed.items {
        let name = object.name_any();
        if keep.contains(&name) {
            continue;
        }
        api.delete(&name, &DeleteParams::default())
            .await
            .map_err(|source| Error::Kube {
                action: "delete",
                kind: <K as k8s_openapi::Resource>::KIND,
                name: name.clone(),
                source,
            })?;
        deleted.push(format!("{}/{name}", <K as k8s_openapi::Resource>::KIND));
    }
    Ok(deleted)
}

async fn delete_dynamic_orphans(
    client: &Client,
    cluster: &ValidatedCluster,
    resource: &ApiResource,
    kind: &'static str,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, Error> {
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), &cluster.namespace, resource);
    let listed = api
        .list(&ListParams::default().labels(&instance_selector(&cluster.name)))
        .await
        .map_err(|source| Error::Kube {
            action: "list",
            kind,
            name: cluster.name.clone(),
            source,
        })?;
    let mut deleted = Vec::new();
    for object in listed.items {
        let name = object.name_any();
        if keep.contains(&name) {
            continue;
        }
        api.delete(&name, &DeleteParams::default())
            .await
            .map_err(|source| Error::Kube {
                action: "delete",
                kind,
                name: name.clone(),
                source,
            })?;
        deleted.push(format!("{kind}/{name}"));
    }
    Ok(deleted)
}

fn names<K: ResourceExt>(objects: &[K]) -> BTreeSet<String> {
    objects.iter().map(ResourceExt::name_any).collect()
}

/// Deletes what this cluster's labels select but `desired` no longer contains (an HPA after
/// autoscaling was turned off, a PDB of a group shrunk to one member, a ServiceMonitor after
/// monitoring was turned off, NetworkPolicies once disabled, the Certificate once TLS no longer
/// comes from cert-manager). Returns `Kind/name` of each deleted object.
pub async fn delete_orphans(
    client: &Client,
    cluster: &ValidatedCluster,
    desired: &Desired,
    apis: OptionalApis,
) -> Result<Vec<String>, Error> {
    let mut deleted = Vec::new();
    deleted.extend(
        delete_orphans_of::<ConfigMap>(client, cluster, &names(&desired.config_maps)).await?,
    );
    deleted.extend(delete_orphans_of::<Service>(client, cluster, &names(&desired.services)).await?);
    deleted.extend(
        delete_orphans_of::<StatefulSet>(client, cluster, &names(&desired.stateful_sets)).await?,
    );
    let deployments: BTreeSet<String> = desired
        .deployment
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    deleted.extend(delete_orphans_of::<Deployment>(client, cluster, &deployments).await?);
    let hpas: BTreeSet<String> = desired.hpa.iter().map(ResourceExt::name_any).collect();
    deleted.extend(delete_orphans_of::<HorizontalPodAutoscaler>(client, cluster, &hpas).await?);
    deleted.extend(
        delete_orphans_of::<PodDisruptionBudget>(client, cluster, &names(&desired.pdbs)).await?,
    );
    deleted.extend(
        delete_orphans_of::<NetworkPolicy>(client, cluster, &names(&desired.network_policies))
            .await?,
    );
    let present = [apis.service_monitor, apis.prometheus_rule, apis.certificate];
    for ((resource, kind), present) in dynamic_kinds().into_iter().zip(present) {
        if !present {
            continue;
        }
        let keep: BTreeSet<String> = desired
            .monitoring
            .iter()
            .chain(&desired.certificate)
            .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == kind))
            .map(ResourceExt::name_any)
            .collect();
        deleted.extend(delete_dynamic_orphans(client, cluster, &resource, kind, &keep).await?);
    }
    Ok(deleted)
}
