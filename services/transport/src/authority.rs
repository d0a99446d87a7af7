//! A small certificate authority for clusters that have none of their own: `parsec tls`,
//! `parsec cluster up --tls` and the tests. Production clusters on Kubernetes get their
//! certificates from cert-manager or a Secret instead (see the operator).

use std::path::{Path, PathBuf};

use parsec_core::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot create a certificate for {names:?}: {source}")]
    Generate {
        names: Vec<String>,
        source: rcgen::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A self-signed CA that issues certificates valid for both ends of a connection (every
/// component is a server to some peers and a client of others).
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    /// A new CA named `name` with a fresh key.
    pub fn new(name: &str) -> Result<Self, CertError> {
        let generate = |source| CertError::Generate {
            names: vec![name.to_owned()],
            source,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(generate)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(generate)?;
        Ok(Self { issuer })
    }

    /// The CA certificate every component trusts.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for DNS names and IP addresses in `names` (the first is also its common
    /// name), for TLS servers and clients alike.
    pub fn issue(&self, names: &[String]) -> Result<IssuedCert, CertError> {
        let generate = |source| CertError::Generate {
            names: names.to_vec(),
            source,
        };
        let mut params = CertificateParams::new(names.to_vec()).map_err(generate)?;
        params.distinguished_name =
            distinguished_name(names.first().map_or("parsec", String::as_str));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(generate)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `ca.crt`, and `<name>.crt` / `<name>.key` for a certificate issued for `names`,
    /// into `dir`; returns the three paths. The key file is readable by its owner only.
    pub fn write_issued(
        &self,
        dir: &Path,
        name: &str,
        names: &[String],
    ) -> Result<TlsFiles, CertError> {
        let issued = self.issue(names)?;
        let files = TlsFiles {
            ca_file: dir.join("ca.crt"),
            cert_file: dir.join(format!("{name}.crt")),
            key_file: dir.join(format!("{name}.key")),
        };
        write(&files.ca_file, self.ca_pem().as_bytes(), false)?;
        write(&files.cert_file, issued.cert_pem.as_bytes(), false)?;
        write(&files.key_file, issued.key_pem.as_bytes(), true)?;
        Ok(files)
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "Parsec");
    name
}

fn write(path: &Path, contents: &[u8], private: bool) -> Result<(), CertError> {
    let failed = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    std::fs::write(path, contents).map_err(failed)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}
