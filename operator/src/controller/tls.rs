//! The cluster's TLS material, read from its Secret at every reconcile: the operator presents it
//! to the members' admin API, and its hash on the pod templates rolls the pods when the
//! certificate changes (processes load it at start).
//!
//! The operator only `get`s the one Secret each cluster names: it never lists or watches
//! Secrets, so it caches none. A renewed certificate is noticed at the next reconcile: at once
//! with cert-manager (the Certificate's status changes, and the operator watches Certificates),
//! else within the idle requeue (five minutes).

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use parsec_transport::Tls;
use thiserror::Error;

use super::Error as ReconcileError;
use super::observe::Observed;
use crate::build::topology::hash;
use crate::naming::{TLS_CA_KEY, TLS_CERT_KEY, TLS_KEY_KEY};
use crate::validate::ValidatedCluster;

/// A usable certificate: what the admin client presents, and the hash pod templates carry.
#[derive(Clone, Debug)]
pub struct TlsMaterial {
    pub secret: String,
    pub hash: String,
    pub tls: Tls,
}

/// Why TLS is asked for but cannot be used yet. The operator then leaves the workloads as they
/// are and starts nothing; a new cluster is not created until it can be.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum TlsProblem {
    #[error(
        "spec.tls.certManager is set but cert-manager is not installed (the API server serves no \
         cert-manager.io/v1 Certificate): install cert-manager, or give spec.tls.secretName"
    )]
    CertManagerMissing,
    #[error("waiting for Secret {secret}: {why}")]
    SecretMissing { secret: String, why: &'static str },
    #[error("Secret {secret} cannot be used: {reason}")]
    SecretInvalid { secret: String, reason: String },
}

impl TlsProblem {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            TlsProblem::CertManagerMissing => "CertManagerMissing",
            TlsProblem::SecretMissing { .. } => "WaitingForSecret",
            TlsProblem::SecretInvalid { .. } => "SecretInvalid",
        }
    }

    /// A problem only the user can fix (as opposed to waiting for cert-manager).
    pub fn needs_user(&self) -> bool {
        !matches!(self, TlsProblem::SecretMissing { .. })
    }
}

/// TLS as this reconcile finds it.
#[derive(Clone, Debug)]
pub enum TlsState {
    /// `spec.tls` is absent: plain gRPC.
    Off,
    Ready(TlsMaterial),
    Waiting(TlsProblem),
}

impl TlsState {
    /// The identity to present to the members' admin API.
    pub fn identity(&self) -> Option<&Tls> {
        match self {
            TlsState::Ready(material) => Some(&material.tls),
            _ => None,
        }
    }

    pub fn hash(&self) -> Option<&str> {
        match self {
            TlsState::Ready(material) => Some(&material.hash),
            _ => None,
        }
    }
}

/// The material in `secret` (named `name`): its `ca.crt`, `tls.crt` and `tls.key`, checked to be
/// PEM a TLS stack accepts.
pub fn material(name: &str, secret: &Secret) -> Result<TlsMaterial, TlsProblem> {
    let invalid = |reason: String| TlsProblem::SecretInvalid {
        secret: name.to_string(),
        reason,
    };
    let data = secret.data.clone().unwrap_or_default();
    let mut parts = Vec::new();
    for key in [TLS_CA_KEY, TLS_CERT_KEY, TLS_KEY_KEY] {
        let value = data.get(key).filter(|v| !v.0.is_empty()).ok_or_else(|| {
            invalid(format!(
                "it has no {key} (it needs {TLS_CA_KEY}, {TLS_CERT_KEY} and {TLS_KEY_KEY}; \
                     a cert-manager issuer must write the CA, as CA and Vault issuers do)"
            ))
        })?;
        let text =
            std::str::from_utf8(&value.0).map_err(|_| invalid(format!("{key} is not PEM text")))?;
        parts.push(text);
    }
    let [ca, cert, key] = [parts[0], parts[1], parts[2]];
    let tls = Tls::from_pem(ca.as_bytes(), cert.as_bytes(), key.as_bytes())
        .map_err(|e| invalid(e.to_string()))?;
    Ok(TlsMaterial {
        secret: name.to_string(),
        hash: hash(&parts),
        tls,
    })
}

/// Why the spec's TLS mode cannot be applied to the running cluster, if it cannot: a member
/// restarted in the other mode could not talk to the rest. The CRD's CEL rule refuses the edit;
/// this catches it should the installed CRD be stale. A stopped cluster (no member runs, or the
/// spec stops it) may switch.
pub fn switch_refused(cluster: &ValidatedCluster, observed: &Observed) -> Option<String> {
    let wanted = cluster.spec.tls.is_some();
    if cluster.spec.cluster_operation.stopped {
        return None;
    }
    observed
        .groups
        .values()
        .any(|group| group.replicas > 0 && group.mounts_tls != wanted)
        .then(|| {
            format!(
                "spec.tls turns mutual TLS {} on a running cluster: plain and mTLS members cannot \
                 talk to each other, so set clusterOperation.stopped in the same edit (or first)",
                if wanted { "on" } else { "off" }
            )
        })
}

/// Reads the TLS Secret of `cluster`, if it asks for TLS. `certificates` says whether
/// cert-manager's Certificate API is served.
pub async fn read(
    client: &Client,
    cluster: &ValidatedCluster,
    certificates: bool,
) -> Result<TlsState, ReconcileError> {
    let Some(spec) = &cluster.spec.tls else {
        return Ok(TlsState::Off);
    };
    let cert_manager = spec.cert_manager.is_some();
    if cert_manager && !certificates {
        return Ok(TlsState::Waiting(TlsProblem::CertManagerMissing));
    }
    let name = spec.secret(&cluster.name);
    let secret = Api::<Secret>::namespaced(client.clone(), &cluster.namespace)
        .get_opt(&name)
        .await
        .map_err(|source| ReconcileError::Kube {
            action: "get",
            kind: "Secret",
            name: name.clone(),
            source,
        })?;
    Ok(match secret {
        None => TlsState::Waiting(TlsProblem::SecretMissing {
            secret: name,
            why: if cert_manager {
                "cert-manager has not issued the certificate yet"
            } else {
                "spec.tls.secretName names a Secret that does not exist"
            },
        }),
        Some(secret) => match material(&name, &secret) {
            Ok(material) => TlsState::Ready(material),
            Err(problem) => TlsState::Waiting(problem),
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::ByteString;
    use parsec_transport::Authority;
    use std::collections::BTreeMap;

    fn secret(entries: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        }
    }

    fn issued() -> (String, String, String) {
        let ca = Authority::new("test CA").unwrap();
        let cert = ca.issue(&["*.demo-shard-0.ns.svc".into()]).unwrap();
        (ca.ca_pem(), cert.cert_pem, cert.key_pem)
    }

    #[test]
    fn a_complete_secret_gives_material_whose_hash_follows_its_content() {
        let (ca, cert, key) = issued();
        let first = material(
            "certs",
            &secret(&[("ca.crt", &ca), ("tls.crt", &cert), ("tls.key", &key)]),
        )
        .unwrap();
        assert_eq!(first.secret, "certs");
        let again = material(
            "certs",
            &secret(&[("ca.crt", &ca), ("tls.crt", &cert), ("tls.key", &key)]),
        )
        .unwrap();
        assert_eq!(first.hash, again.hash, "same content, same hash");
        let (_, cert2, key2) = issued();
        let renewed = material(
            "certs",
            &secret(&[("ca.crt", &ca), ("tls.crt", &cert2), ("tls.key", &key2)]),
        )
        .unwrap();
        assert_ne!(
            first.hash, renewed.hash,
            "a renewed certificate rolls the pods"
        );
    }

    #[test]
    fn switching_tls_needs_a_stopped_cluster() {
        use crate::controller::observe::ObservedGroup;
        use crate::naming::Group;
        use crate::test_support::validated;
        let running = |replicas, mounts_tls| {
            let mut observed = Observed::default();
            observed.groups.insert(
                Group::Shard(0),
                ObservedGroup {
                    replicas,
                    mounts_tls,
                    ..ObservedGroup::default()
                },
            );
            observed
        };
        let secured = validated("shards: {count: 1}\ntls: {secretName: certs}");
        let plain = validated("shards: {count: 1}");
        let refused = switch_refused(&secured, &running(3, false)).unwrap();
        assert!(refused.contains("mutual TLS on"), "{refused}");
        assert!(switch_refused(&plain, &running(3, true)).is_some());
        // Same mode, nothing running, or stopping in the same edit: fine.
        assert_eq!(switch_refused(&secured, &running(3, true)), None);
        assert_eq!(switch_refused(&secured, &running(0, false)), None);
        assert_eq!(switch_refused(&secured, &Observed::default()), None);
        let stopping = validated(
            "shards: {count: 1}\ntls: {secretName: certs}\nclusterOperation: {stopped: true}",
        );
        assert_eq!(switch_refused(&stopping, &running(3, false)), None);
    }

    #[test]
    fn a_secret_without_the_ca_or_with_garbage_is_refused_with_the_reason() {
        let (ca, cert, key) = issued();
        // What an ACME issuer writes: no CA.
        let error =
            material("certs", &secret(&[("tls.crt", &cert), ("tls.key", &key)])).unwrap_err();
        assert_eq!(error.reason(), "SecretInvalid");
        assert!(error.to_string().contains("no ca.crt"), "{error}");
        let error = material(
            "certs",
            &secret(&[("ca.crt", ""), ("tls.crt", &cert), ("tls.key", &key)]),
        )
        .unwrap_err();
        assert!(error.to_string().contains("no ca.crt"), "{error}");
        let error = material(
            "certs",
            &secret(&[
                ("ca.crt", &ca),
                ("tls.crt", "not a certificate"),
                ("tls.key", &key),
            ]),
        )
        .unwrap_err();
        assert!(error.to_string().contains("certificate"), "{error}");
        assert!(error.needs_user());
        assert!(
            !TlsProblem::SecretMissing {
                secret: "x".into(),
                why: "w"
            }
            .needs_user()
        );
    }
}
