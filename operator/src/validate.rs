//! Pure validation: a `ParsecCluster` as read from the API server becomes a [`ValidatedCluster`]
//! or a list of reasons it cannot be reconciled. CEL rules in the CRD catch most of these at
//! admission; this catches the rest (and everything, should the installed CRD be stale).

use kube::ResourceExt;
use kube::api::ObjectMeta;
use thiserror::Error;

use crate::crd::{ParsecCluster, ParsecClusterSpec, TlsSpec};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("the ParsecCluster has no namespace")]
    NoNamespace,
    #[error("the ParsecCluster has no uid (not read from the API server?)")]
    NoUid,
    #[error("metadata.name {0:?} is longer than 40 characters")]
    NameTooLong(String),
    #[error("{field} must be odd and within 1..=7, got {value}")]
    Replicas { field: &'static str, value: i32 },
    #[error("shards.count must be within 1..=256, got {0}")]
    ShardCount(u32),
    #[error(
        "shards.count is immutable: the cluster runs {running} shards, the spec asks for {asked}"
    )]
    ShardCountChanged { running: usize, asked: u32 },
    #[error("agents.autoscaling: minReplicas {min} exceeds maxReplicas {max}")]
    AutoscalingBounds { min: i32, max: i32 },
    #[error(
        "agents.autoscaling needs targetCPUUtilizationPercentage or targetInFlightTransactions"
    )]
    AutoscalingTarget,
    #[error("agents.replicas must be within 0..=1000, got {0}")]
    AgentReplicas(i32),
    #[error("agents.runners must not be empty")]
    NoRunner,
    #[error("image.repository and image.tag must not be empty")]
    Image,
    #[error("{field}: {value:?} is not a quantity")]
    Quantity { field: &'static str, value: String },
    #[error("tls needs exactly one source: secretName (an existing Secret) or certManager")]
    TlsSource,
    #[error("tls.secretName {0:?} is not a Secret name (a DNS subdomain)")]
    TlsSecretName(String),
    #[error("{field}: {value:?} is not a duration such as 2160h")]
    Duration { field: &'static str, value: String },
    #[error("tls.certManager.duration must be at least 1h, got {0:?}")]
    CertificateTooShort(String),
    #[error(
        "tls.certManager.renewBefore ({renew_before}) must be shorter than duration ({duration})"
    )]
    RenewTooLate {
        duration: String,
        renew_before: String,
    },
}

/// Every reason at once, so the user fixes them in one edit.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid ParsecCluster: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ValidationErrors(pub Vec<ValidationError>);

/// A cluster that passed validation: the builders take nothing else.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedCluster {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub generation: Option<i64>,
    pub spec: ParsecClusterSpec,
}

impl ValidatedCluster {
    /// Metadata for a child object: namespace, labels and an owner reference to the cluster, so
    /// that deleting the cluster garbage-collects its children.
    pub fn child_meta(
        &self,
        name: String,
        labels: std::collections::BTreeMap<String, String>,
    ) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![self.owner_reference()]),
            ..ObjectMeta::default()
        }
    }

    pub fn owner_reference(
        &self,
    ) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "parsec.dev/v1alpha1".into(),
            kind: "ParsecCluster".into(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    pub fn image(&self) -> String {
        format!("{}:{}", self.spec.image.repository, self.spec.image.tag)
    }
}

/// Validates `cluster`. `running_shards` is the shard count the cluster already runs (from its
/// status), if any.
pub fn validate(cluster: &ParsecCluster) -> Result<ValidatedCluster, ValidationErrors> {
    let mut errors = Vec::new();
    let name = cluster.name_any();
    if name.len() > 40 {
        errors.push(ValidationError::NameTooLong(name.clone()));
    }
    let namespace = cluster.namespace();
    if namespace.is_none() {
        errors.push(ValidationError::NoNamespace);
    }
    let uid = cluster.uid();
    if uid.is_none() {
        errors.push(ValidationError::NoUid);
    }
    let spec = &cluster.spec;
    if spec.image.repository.is_empty() || spec.image.tag.is_empty() {
        errors.push(ValidationError::Image);
    }
    if !(1..=256).contains(&spec.shards.count) {
        errors.push(ValidationError::ShardCount(spec.shards.count));
    }
    let running = cluster.status.as_ref().map(|s| s.shards.len()).unwrap_or(0);
    if running != 0 && running != spec.shards.count as usize {
        errors.push(ValidationError::ShardCountChanged {
            running,
            asked: spec.shards.count,
        });
    }
    for (field, value) in [
        ("shards.replicas", spec.shards.replicas),
        ("ticketMachine.replicas", spec.ticket_machine.replicas),
    ] {
        if !(1..=7).contains(&value) || value % 2 == 0 {
            errors.push(ValidationError::Replicas { field, value });
        }
    }
    for (field, value) in [
        ("shards.storage.size", &spec.shards.storage.size),
        (
            "ticketMachine.storage.size",
            &spec.ticket_machine.storage.size,
        ),
    ] {
        if !is_quantity(value) {
            errors.push(ValidationError::Quantity {
                field,
                value: value.clone(),
            });
        }
    }
    let agents = &spec.agents;
    if !(0..=1000).contains(&agents.replicas) {
        errors.push(ValidationError::AgentReplicas(agents.replicas));
    }
    if agents.runners.is_empty() {
        errors.push(ValidationError::NoRunner);
    }
    if let Some(auto) = &agents.autoscaling {
        if auto.min_replicas > auto.max_replicas {
            errors.push(ValidationError::AutoscalingBounds {
                min: auto.min_replicas,
                max: auto.max_replicas,
            });
        }
        if auto.target_cpu_utilization_percentage.is_none()
            && auto.target_in_flight_transactions.is_none()
        {
            errors.push(ValidationError::AutoscalingTarget);
        }
    }
    if let Some(tls) = &spec.tls {
        errors.extend(validate_tls(tls));
    }
    match (namespace, uid) {
        (Some(namespace), Some(uid)) if errors.is_empty() => Ok(ValidatedCluster {
            name,
            namespace,
            uid,
            generation: cluster.metadata.generation,
            spec: spec.clone(),
        }),
        _ => Err(ValidationErrors(errors)),
    }
}

fn validate_tls(tls: &TlsSpec) -> Vec<ValidationError> {
    let mut errors = Vec::new();
    match (&tls.secret_name, &tls.cert_manager) {
        (Some(_), Some(_)) | (None, None) => errors.push(ValidationError::TlsSource),
        (Some(name), None) if !is_dns_subdomain(name) => {
            errors.push(ValidationError::TlsSecretName(name.clone()))
        }
        _ => {}
    }
    let Some(cert_manager) = &tls.cert_manager else {
        return errors;
    };
    let mut parse = |field, value: &Option<String>| {
        let value = value.as_ref()?;
        let seconds = go_duration_seconds(value);
        if seconds.is_none() {
            errors.push(ValidationError::Duration {
                field,
                value: value.clone(),
            });
        }
        seconds.map(|s| (value.clone(), s))
    };
    let duration = parse("tls.certManager.duration", &cert_manager.duration);
    let renew_before = parse("tls.certManager.renewBefore", &cert_manager.renew_before);
    if let Some((value, seconds)) = &duration
        && *seconds < 3600.0
    {
        errors.push(ValidationError::CertificateTooShort(value.clone()));
    }
    if let (Some((duration, d)), Some((renew_before, r))) = (duration, renew_before)
        && r >= d
    {
        errors.push(ValidationError::RenewTooLate {
            duration,
            renew_before,
        });
    }
    errors
}

/// A DNS subdomain (RFC 1123), as Kubernetes object names must be.
fn is_dns_subdomain(name: &str) -> bool {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    name.len() <= 253 && name.split('.').all(label_ok)
}

/// Seconds of a Go duration (`2160h`, `1h30m`, `90s`, `1.5h`), as cert-manager parses it.
fn go_duration_seconds(value: &str) -> Option<f64> {
    let mut rest = value;
    let mut total = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let (unit, seconds) = [
            ("ns", 1e-9),
            ("us", 1e-6),
            ("µs", 1e-6),
            ("ms", 1e-3),
            ("s", 1.0),
            ("m", 60.0),
            ("h", 3600.0),
        ]
        .into_iter()
        // "ms" before "m", "ns"/"us" before "s": the first unit that matches is the longest.
        .find(|(unit, _)| rest.starts_with(unit))?;
        total += number * seconds;
        rest = &rest[unit.len()..];
    }
    Some(total)
}

/// A Kubernetes quantity in the forms storage sizes use: digits, an optional fraction and an
/// optional binary or decimal suffix (`10Gi`, `500M`, `1.5Ti`, `1e9`).
fn is_quantity(value: &str) -> bool {
    let digits_end = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(digits_end);
    let number_ok = !number.is_empty()
        && number.chars().filter(|c| *c == '.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    let suffix_ok = matches!(
        suffix,
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "k" | "M" | "G" | "T" | "P" | "E"
    ) || (suffix.starts_with(['e', 'E']) && suffix[1..].parse::<u32>().is_ok());
    number_ok && suffix_ok
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::crd::*;

    fn cluster() -> ParsecCluster {
        let spec: ParsecClusterSpec =
            serde_yaml::from_str("image: {repository: parsec, tag: '1'}\nshards: {count: 2}\n")
                .unwrap();
        let mut c = ParsecCluster::new("demo", spec);
        c.metadata.namespace = Some("ns".into());
        c.metadata.uid = Some("uid-1".into());
        c
    }

    #[test]
    fn defaults_are_valid() {
        let v = validate(&cluster()).unwrap();
        assert_eq!(v.spec.shards.replicas, 3);
        assert_eq!(v.spec.ticket_machine.replicas, 3);
        assert_eq!(v.spec.agents.replicas, 2);
        assert_eq!(v.image(), "parsec:1");
    }

    #[test]
    fn every_reason_is_reported_at_once() {
        let mut c = cluster();
        c.spec.shards.replicas = 4;
        c.spec.ticket_machine.replicas = 9;
        c.spec.agents.autoscaling = Some(AutoscalingSpec {
            min_replicas: 5,
            max_replicas: 2,
            target_cpu_utilization_percentage: None,
            target_in_flight_transactions: None,
        });
        c.spec.shards.storage.size = "ten gigs".into();
        let errors = validate(&c).unwrap_err().0;
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors.contains(&ValidationError::Replicas {
            field: "shards.replicas",
            value: 4
        }));
        assert!(errors.contains(&ValidationError::AutoscalingBounds { min: 5, max: 2 }));
    }

    #[test]
    fn shard_count_cannot_change_once_running() {
        let mut c = cluster();
        c.status = Some(ParsecClusterStatus {
            shards: vec![RaftGroupStatus::default(); 3],
            ..Default::default()
        });
        assert_eq!(
            validate(&c).unwrap_err().0,
            vec![ValidationError::ShardCountChanged {
                running: 3,
                asked: 2
            }]
        );
    }

    #[test]
    fn tls_needs_one_source_and_sane_lifetimes() {
        let tls = |yaml: &str| -> Vec<ValidationError> {
            let mut c = cluster();
            c.spec.tls = Some(serde_yaml::from_str(yaml).unwrap());
            validate(&c).err().map(|e| e.0).unwrap_or_default()
        };
        assert_eq!(tls("secretName: certs"), vec![]);
        assert_eq!(
            tls("certManager: {issuerRef: {name: ca}, duration: 2160h, renewBefore: 720h}"),
            vec![]
        );
        assert_eq!(tls("{}"), vec![ValidationError::TlsSource]);
        assert_eq!(
            tls("{secretName: a, certManager: {issuerRef: {name: ca}}}"),
            vec![ValidationError::TlsSource]
        );
        assert_eq!(
            tls("secretName: Not_A_Name"),
            vec![ValidationError::TlsSecretName("Not_A_Name".into())]
        );
        assert_eq!(
            tls("certManager: {issuerRef: {name: ca}, duration: 30m, renewBefore: 1h}"),
            vec![
                ValidationError::CertificateTooShort("30m".into()),
                ValidationError::RenewTooLate {
                    duration: "30m".into(),
                    renew_before: "1h".into()
                }
            ]
        );
        assert_eq!(
            tls("certManager: {issuerRef: {name: ca}, duration: 90 days}"),
            vec![ValidationError::Duration {
                field: "tls.certManager.duration",
                value: "90 days".into()
            }]
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_seconds("2160h"), Some(2160.0 * 3600.0));
        assert_eq!(go_duration_seconds("1h30m"), Some(5400.0));
        assert_eq!(go_duration_seconds("1.5h"), Some(5400.0));
        assert_eq!(go_duration_seconds("500ms"), Some(0.5));
        for bad in ["", "h", "10", "10d", "1h30"] {
            assert_eq!(go_duration_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn quantities() {
        for ok in ["10Gi", "1", "1.5Ti", "500M", "1e9"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "Gi", "10GB", "1..2Gi", "ten"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}
