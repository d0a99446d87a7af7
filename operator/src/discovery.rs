//! Which optional APIs (CRDs of other projects) the API server serves. Their objects are built
//! only where the API exists; asking for them costs one discovery request per API group.

use kube::Client;

use crate::build::OptionalApis;

/// Whether `group_version` serves each of `plurals` (all false when the group is unknown).
async fn serves<const N: usize>(
    client: &Client,
    group_version: &str,
    plurals: [&str; N],
) -> [bool; N] {
    match client.list_api_group_resources(group_version).await {
        Ok(list) => plurals.map(|plural| list.resources.iter().any(|r| r.name == plural)),
        Err(error) => {
            tracing::debug!(%error, group_version, "API group not served");
            [false; N]
        }
    }
}

/// Whether cert-manager's Certificate API is installed.
pub async fn certificates(client: &Client) -> bool {
    let [certificates] = serves(client, "cert-manager.io/v1", ["certificates"]).await;
    certificates
}

/// Every optional API the operator may use.
pub async fn optional_apis(client: &Client) -> OptionalApis {
    let [service_monitor, prometheus_rule] = serves(
        client,
        "monitoring.coreos.com/v1",
        ["servicemonitors", "prometheusrules"],
    )
    .await;
    OptionalApis {
        service_monitor,
        prometheus_rule,
        certificate: certificates(client).await,
    }
}
