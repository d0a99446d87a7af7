//! Volume growth. A StatefulSet's volume claim template cannot change, so the operator keeps the
//! template as created and instead patches every member's claim up to the spec's size (the
//! StorageClass must allow expansion; the CRD rejects shrinking). Claims of members added later
//! start at the template's size and are grown on the next reconcile.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::Error;
use super::observe::Observed;
use crate::naming::{DATA_VOLUME, Group};
use crate::validate::ValidatedCluster;

/// The size the spec asks of `group`'s volumes.
fn wanted(cluster: &ValidatedCluster, group: Group) -> &str {
    match group {
        Group::TicketMachine => &cluster.spec.ticket_machine.storage.size,
        Group::Shard(_) => &cluster.spec.shards.storage.size,
    }
}

/// Claims to grow: `(claim name, size)` for every member of a group whose template size differs
/// from the spec's.
pub fn claims_to_grow(cluster: &ValidatedCluster, observed: &Observed) -> Vec<(String, String)> {
    let mut claims = Vec::new();
    for (&group, live) in &observed.groups {
        let size = wanted(cluster, group);
        if live.volume_size.as_deref().is_none_or(|s| s == size) {
            continue;
        }
        let sts = group.stateful_set(&cluster.name);
        for ordinal in live.pods.keys() {
            claims.push((format!("{DATA_VOLUME}-{sts}-{ordinal}"), size.to_string()));
        }
    }
    claims
}

/// Patches the claims that are smaller than the spec asks. Returns a line per claim patched.
pub async fn grow(
    client: &Client,
    cluster: &ValidatedCluster,
    observed: &Observed,
) -> Result<Vec<String>, Error> {
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &cluster.namespace);
    let mut grown = Vec::new();
    for (claim, size) in claims_to_grow(cluster, observed) {
        let Some(live) = api.get_opt(&claim).await.map_err(|source| Error::Kube {
            action: "get",
            kind: "PersistentVolumeClaim",
            name: claim.clone(),
            source,
        })?
        else {
            continue;
        };
        let current = live
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone());
        if current.as_deref() == Some(size.as_str()) {
            continue;
        }
        let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}});
        api.patch(&claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::Kube {
                action: "expand",
                kind: "PersistentVolumeClaim",
                name: claim.clone(),
                source,
            })?;
        grown.push(format!("{claim}: {} → {size}", current.unwrap_or_default()));
    }
    Ok(grown)
}
