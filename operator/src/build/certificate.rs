//! The cert-manager `Certificate` of a cluster whose `spec.tls.certManager` is set: one
//! certificate every component presents, as server and as client. Built only when the
//! cert-manager.io/v1 API exists (checked by discovery).

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use crate::crd::CertManagerSpec;
use crate::naming::{
    APP, Group, LABEL_INSTANCE, LABEL_NAME, agent_service, instance_labels, service_dns_names,
    tls_secret,
};
use crate::validate::ValidatedCluster;

pub fn certificate_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    )
}

/// Every name a peer may dial: for each Raft group, every member's pod name under the group's
/// headless Service (a wildcard, since members come and go; `*.<sts>.<ns>.svc` is the form the
/// topology uses), and the agents' Service; each in its namespaced, `.svc` and
/// `.svc.cluster.local` forms, and the agents' Service also by its short name. No `*.<sts>`:
/// rustls (like NSS and browsers) ignores a wildcard followed by fewer than two labels, and some
/// issuers refuse to sign one.
pub fn dns_names(cluster: &ValidatedCluster) -> Vec<String> {
    let namespace = &cluster.namespace;
    let mut names: Vec<String> = Group::all(cluster.spec.shards.count)
        .into_iter()
        .flat_map(|group| service_dns_names(&group.stateful_set(&cluster.name), namespace))
        .filter(|name| name.contains('.'))
        .map(|name| format!("*.{name}"))
        .collect();
    names.extend(service_dns_names(&agent_service(&cluster.name), namespace));
    names
}

/// The Certificate, when `spec.tls.certManager` asks for one.
pub fn certificate(cluster: &ValidatedCluster) -> Option<DynamicObject> {
    let spec: &CertManagerSpec = cluster.spec.tls.as_ref()?.cert_manager.as_ref()?;
    let name = tls_secret(&cluster.name);
    let labels = instance_labels(&cluster.name);
    let mut certificate_spec = json!({
        "secretName": name,
        // The Secret carries the cluster's name, so `kubectl get secret -l` finds it (but not the
        // managed-by label: cert-manager, not the operator, manages it).
        "secretTemplate": {"labels": {
            LABEL_NAME: APP,
            LABEL_INSTANCE: cluster.name,
        }},
        "dnsNames": dns_names(cluster),
        "issuerRef": {
            "name": spec.issuer_ref.name,
            "kind": spec.issuer_ref.kind.as_str(),
            "group": spec.issuer_ref.group,
        },
        // A fresh key at every renewal; ECDSA P-256 keeps handshakes cheap.
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        // Every component is a server to some peers and a client of others.
        "usages": ["digital signature", "server auth", "client auth"],
    });
    if let Some(duration) = &spec.duration {
        certificate_spec["duration"] = json!(duration);
    }
    if let Some(renew_before) = &spec.renew_before {
        certificate_spec["renewBefore"] = json!(renew_before);
    }
    let mut object = DynamicObject::new(&name, &certificate_resource())
        .data(json!({ "spec": certificate_spec }));
    object.metadata = cluster.child_meta(name, labels);
    Some(object)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::build::{spec_sizes, topology};
    use crate::test_support::validated;

    /// RFC 6125 matching as rustls does it: a wildcard covers exactly one leftmost label.
    fn covered(host: &str, names: &[String]) -> bool {
        names.iter().any(|name| match name.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
            None => name == host,
        })
    }

    #[test]
    fn names_cover_every_address_of_the_topology_and_the_agents_service() {
        let cluster = validated(
            "shards: {count: 3, replicas: 5}\ntls: {certManager: {issuerRef: {name: ca}}}",
        );
        let names = dns_names(&cluster);
        let config = topology::cluster_config(&cluster, &spec_sizes(&cluster)).unwrap();
        let addresses = config
            .shards
            .iter()
            .flat_map(|s| s.replicas.iter())
            .chain(config.ticket_machine.replicas.iter())
            .map(|r| r.address.clone());
        for address in addresses {
            let host = parsec_transport::host_of(&address).unwrap();
            assert!(covered(host, &names), "{host} not in {names:?}");
            // Members added later (ordinal 7) are covered too, in every form.
            let sts = host.split_once('.').unwrap().1.split('.').next().unwrap();
            for form in [
                format!("{sts}-7.{sts}.ns"),
                format!("{sts}-7.{sts}.ns.svc.cluster.local"),
            ] {
                assert!(covered(&form, &names), "{form}");
            }
        }
        assert!(covered("demo-rpc.ns.svc", &names));
        assert!(covered("demo-rpc", &names));
        assert!(
            !covered("demo-shard-0.ns.svc", &names),
            "no bare Service names"
        );
        assert!(
            !covered("x.demo-shard-0.other.svc", &names),
            "no other namespace"
        );
        assert!(
            !names.contains(&"*.demo-shard-0".to_string()),
            "rustls ignores a wildcard over one label"
        );
        assert_eq!(names.len(), 3 * (3 + 1) + 4);
    }

    #[test]
    fn certificate_asks_for_an_ecdsa_key_rotated_at_every_renewal_for_both_ends() {
        let cluster = validated(
            "shards: {count: 1}\ntls: {certManager: {issuerRef: {name: ca, kind: ClusterIssuer}, duration: 720h, renewBefore: 240h}}",
        );
        let object = serde_json::to_value(certificate(&cluster).unwrap()).unwrap();
        assert_eq!(object["apiVersion"], "cert-manager.io/v1");
        assert_eq!(object["kind"], "Certificate");
        assert_eq!(object["metadata"]["name"], "demo-tls");
        assert_eq!(
            object["metadata"]["ownerReferences"][0]["kind"],
            "ParsecCluster"
        );
        let spec = &object["spec"];
        assert_eq!(spec["secretName"], "demo-tls");
        assert_eq!(
            spec["issuerRef"],
            json!({"name": "ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
        );
        assert_eq!(spec["privateKey"]["algorithm"], "ECDSA");
        assert_eq!(spec["privateKey"]["rotationPolicy"], "Always");
        let usages = spec["usages"].as_array().unwrap();
        assert!(usages.contains(&json!("server auth")) && usages.contains(&json!("client auth")));
        assert_eq!(spec["duration"], "720h");
        assert_eq!(spec["renewBefore"], "240h");
        assert_eq!(
            spec["secretTemplate"]["labels"]["app.kubernetes.io/instance"],
            "demo"
        );
    }

    #[test]
    fn no_certificate_without_cert_manager() {
        assert!(certificate(&validated("shards: {count: 1}")).is_none());
        assert!(certificate(&validated("shards: {count: 1}\ntls: {secretName: mine}")).is_none());
    }
}
