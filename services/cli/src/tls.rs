//! This process's mutual-TLS identity: the topology's `tls` files, with the certificate, key or
//! CA overridden from the command line (a local cluster gives every process its own).

use std::path::PathBuf;

use clap::Args;
use parsec_core::TlsFiles;
use parsec_transport::Tls;

#[derive(Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// This process's TLS certificate (PEM), instead of the topology's `tls.certFile`.
    #[arg(long, env = "PARSEC_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM), instead of the topology's `tls.keyFile`.
    #[arg(long, env = "PARSEC_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA (PEM), instead of the topology's `tls.caFile`.
    #[arg(long, env = "PARSEC_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The files to use: the topology's with these overrides, or these alone when the
    /// topology has none (all three are then needed); `None` means plain connections.
    pub fn files(&self, topology: Option<&TlsFiles>) -> Result<Option<TlsFiles>, String> {
        let given = [&self.tls_ca, &self.tls_cert, &self.tls_key];
        match topology {
            Some(files) => Ok(Some(TlsFiles {
                ca_file: self.tls_ca.clone().unwrap_or_else(|| files.ca_file.clone()),
                cert_file: self
                    .tls_cert
                    .clone()
                    .unwrap_or_else(|| files.cert_file.clone()),
                key_file: self
                    .tls_key
                    .clone()
                    .unwrap_or_else(|| files.key_file.clone()),
            })),
            None if given.iter().all(|path| path.is_none()) => Ok(None),
            None => match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
                (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles {
                    ca_file: ca.clone(),
                    cert_file: cert.clone(),
                    key_file: key.clone(),
                })),
                _ => Err(
                    "without a topology that sets `tls`, mutual TLS needs all of \
                          --tls-ca, --tls-cert and --tls-key"
                        .into(),
                ),
            },
        }
    }

    /// Loads the identity to use (see [`Self::files`]).
    pub fn load(&self, topology: Option<&TlsFiles>) -> Result<Option<Tls>, String> {
        match self.files(topology)? {
            Some(files) => Tls::load(&files)
                .map(Some)
                .map_err(|e| format!("mutual TLS: {e}")),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> TlsFiles {
        TlsFiles {
            ca_file: "/t/ca.crt".into(),
            cert_file: "/t/tls.crt".into(),
            key_file: "/t/tls.key".into(),
        }
    }

    #[test]
    fn no_tls_anywhere_means_plain() {
        assert_eq!(TlsArgs::default().files(None).unwrap(), None);
    }

    #[test]
    fn flags_override_the_topology_one_by_one() {
        let args = TlsArgs {
            tls_cert: Some("/own.crt".into()),
            tls_key: Some("/own.key".into()),
            tls_ca: None,
        };
        let files = args.files(Some(&topology())).unwrap().unwrap();
        assert_eq!(files.cert_file, PathBuf::from("/own.crt"));
        assert_eq!(files.key_file, PathBuf::from("/own.key"));
        assert_eq!(files.ca_file, PathBuf::from("/t/ca.crt"));
    }

    #[test]
    fn without_a_topology_all_three_are_needed() {
        let partial = TlsArgs {
            tls_cert: Some("/own.crt".into()),
            tls_key: Some("/own.key".into()),
            tls_ca: None,
        };
        let error = partial.files(None).unwrap_err();
        assert!(error.contains("--tls-ca"), "{error}");
        let full = TlsArgs {
            tls_ca: Some("/ca.crt".into()),
            ..partial
        };
        assert!(full.files(None).unwrap().is_some());
    }
}
