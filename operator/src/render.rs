//! `parsec-operator render`: the objects the operator would create for a ParsecCluster manifest,
//! without a cluster. Used by the golden tests, the schema validation script and the local
//! process harness.

use kube::ResourceExt;
use thiserror::Error;

use crate::build::{self, BuildError, Environment};
use crate::crd::ParsecCluster;
use crate::validate::{ValidationErrors, validate};

#[derive(Debug, Error)]
pub enum RenderError {
    #[error("not a ParsecCluster manifest: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot serialise the objects: {0}")]
    Json(#[from] serde_json::Error),
}

/// Parses a ParsecCluster manifest and fills in what the API server would: a namespace (when the
/// manifest has none), a uid and a generation.
pub fn parse_cluster(manifest: &str, namespace: &str) -> Result<ParsecCluster, RenderError> {
    let mut cluster: ParsecCluster = serde_yaml::from_str(manifest)?;
    if cluster.namespace().is_none() {
        cluster.metadata.namespace = Some(namespace.into());
    }
    let uid = format!("00000000-0000-0000-0000-{:012}", cluster.name_any().len());
    cluster.metadata.uid.get_or_insert(uid);
    cluster.metadata.generation.get_or_insert(1);
    Ok(cluster)
}

/// Every object of a freshly created cluster, as JSON values in apply order. `env` says which
/// optional APIs to assume installed and where the operator runs. Pod templates carry no TLS
/// hash: offline, there is no Secret to read (the running operator adds it).
pub fn render(
    cluster: &ParsecCluster,
    env: &Environment,
) -> Result<Vec<serde_json::Value>, RenderError> {
    let validated = validate(cluster)?;
    let sizes = build::spec_sizes(&validated);
    Ok(build::build(&validated, &sizes, &Default::default(), env, None)?.to_values()?)
}

/// Multi-document YAML of `objects`.
pub fn to_yaml_stream(objects: &[serde_json::Value]) -> Result<String, RenderError> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(object)?);
    }
    Ok(out)
}
