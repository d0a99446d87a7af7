//! A process's TLS identity and the cluster's CA, loaded and checked once at start.

use std::path::{Path, PathBuf};

use parsec_core::TlsFiles;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} holds no PEM {expected}")]
    NoPem {
        what: String,
        expected: &'static str,
    },
    #[error("{what} is not valid PEM: {reason}")]
    BadPem { what: String, reason: String },
}

/// The mutual-TLS material of one process: its certificate chain and key, and the CA that
/// signs every component's certificate (and so decides who may connect).
#[derive(Clone)]
pub struct Tls {
    ca: Certificate,
    identity: Identity,
}

impl std::fmt::Debug for Tls {
    // The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls { .. }")
    }
}

impl Tls {
    /// Reads the three PEM files; fails with the file and the reason when one is missing or
    /// holds no usable PEM.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let ca = read("CA file", &files.ca_file)?;
        let cert = read("certificate file", &files.cert_file)?;
        let key = read("key file", &files.key_file)?;
        Self::from_pem_named(
            (&ca, &files.ca_file.display().to_string()),
            (&cert, &files.cert_file.display().to_string()),
            (&key, &files.key_file.display().to_string()),
        )
    }

    /// From PEM text held in memory (e.g. the `ca.crt`, `tls.crt` and `tls.key` of a
    /// Kubernetes Secret).
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        Self::from_pem_named((ca, "CA"), (cert, "certificate"), (key, "private key"))
    }

    fn from_pem_named(
        (ca, ca_name): (&[u8], &str),
        (cert, cert_name): (&[u8], &str),
        (key, key_name): (&[u8], &str),
    ) -> Result<Self, TlsError> {
        check_certificates(ca, ca_name)?;
        check_certificates(cert, cert_name)?;
        PrivateKeyDer::from_pem_slice(key)
            .map_err(|error| pem_error(key_name, "private key", error))?;
        Ok(Self {
            ca: Certificate::from_pem(ca),
            identity: Identity::from_pem(cert, key),
        })
    }

    /// A server that accepts only clients with a certificate signed by the CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    /// A client that presents this identity and accepts a server certificate signed by the CA
    /// and valid for `host` (a DNS name or an IP address).
    pub fn client_config(&self, host: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(host)
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn check_certificates(pem: &[u8], what: &str) -> Result<(), TlsError> {
    let mut found = false;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        certificate.map_err(|error| pem_error(what, "certificate", error))?;
        found = true;
    }
    if found {
        Ok(())
    } else {
        Err(TlsError::NoPem {
            what: what.to_owned(),
            expected: "certificate",
        })
    }
}

fn pem_error(what: &str, expected: &'static str, error: rustls_pki_types::pem::Error) -> TlsError {
    match error {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoPem {
            what: what.to_owned(),
            expected,
        },
        other => TlsError::BadPem {
            what: what.to_owned(),
            reason: other.to_string(),
        },
    }
}
