//! The Parsec operator: reconciles a `ParsecCluster` into Raft-replicated shards, a ticket
//! machine and autoscaled agents, and keeps quorum through every change.
//!
//! The pipeline (one module each): [`crd`] (the resource) → [`validate`] (pure) → [`build`]
//! (pure builders, one file per kind or role) → [`controller`] (server-side apply, orphan
//! cleanup, at most one disruptive step per reconcile persisted in status, status).

pub mod admin;
pub mod build;
pub mod controller;
pub mod crd;
pub mod discovery;
pub mod metrics;
pub mod naming;
pub mod render;
pub mod telemetry;
pub mod validate;

#[cfg(test)]
pub(crate) mod test_support {
    #![allow(clippy::unwrap_used)]
    use crate::crd::{ParsecCluster, ParsecClusterSpec};
    use crate::validate::{ValidatedCluster, validate};

    /// A validated cluster `demo` in namespace `ns` from a YAML spec fragment (image added).
    pub fn validated(spec: &str) -> ValidatedCluster {
        validate(&cluster(spec)).unwrap()
    }

    pub fn cluster(spec: &str) -> ParsecCluster {
        let yaml = format!("image: {{repository: parsec, tag: '1'}}\n{spec}\n");
        let spec: ParsecClusterSpec = serde_yaml::from_str(&yaml).unwrap();
        let mut c = ParsecCluster::new("demo", spec);
        c.metadata.namespace = Some("ns".into());
        c.metadata.uid = Some("uid-1".into());
        c.metadata.generation = Some(1);
        c
    }
}
