//! gRPC endpoints and servers, plain or with mutual TLS.

use tonic::transport::{Endpoint, Server};

use crate::Tls;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("address {address:?} is not host:port")]
    Address { address: String },
    #[error("invalid endpoint {address}: {source}")]
    Endpoint {
        address: String,
        source: tonic::transport::Error,
    },
    #[error("TLS configuration refused: {0}")]
    Tls(tonic::transport::Error),
}

/// The host of `host:port` (`[v6]:port` gives the bare IPv6 address), as a server certificate
/// must name it.
pub fn host_of(address: &str) -> Option<&str> {
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// An endpoint for the gRPC server at `address` (`host:port`): `https` with this process's
/// identity when `tls` is given, plain `http` otherwise. Callers add their own timeouts.
pub fn endpoint(address: &str, tls: Option<&Tls>) -> Result<Endpoint, TransportError> {
    let host = host_of(address).ok_or_else(|| TransportError::Address {
        address: address.to_owned(),
    })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{address}")).map_err(|source| {
        TransportError::Endpoint {
            address: address.to_owned(),
            source,
        }
    })?;
    match tls {
        Some(tls) => endpoint
            .tls_config(tls.client_config(host))
            .map_err(TransportError::Tls),
        None => Ok(endpoint),
    }
}

/// A server builder: with `tls`, every connection must present a client certificate signed by
/// the cluster's CA (the handshake fails otherwise, before any request is read).
pub fn server(tls: Option<&Tls>) -> Result<Server, TransportError> {
    let builder = Server::builder();
    match tls {
        Some(tls) => builder
            .tls_config(tls.server_config())
            .map_err(TransportError::Tls),
        None => Ok(builder),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("127.0.0.1:7000"), Some("127.0.0.1"));
        assert_eq!(
            host_of("shard-0-1.shard-0.ns.svc:7000"),
            Some("shard-0-1.shard-0.ns.svc")
        );
        assert_eq!(host_of("[::1]:7000"), Some("::1"));
        assert_eq!(host_of("nohost"), None);
        assert_eq!(host_of(":7000"), None);
        assert_eq!(host_of("host:port"), None);
    }

    #[test]
    fn plain_endpoints_use_http() {
        let endpoint = endpoint("127.0.0.1:7000", None).unwrap();
        assert_eq!(endpoint.uri().scheme_str(), Some("http"));
        assert!(matches!(
            super::endpoint("no-port", None),
            Err(TransportError::Address { .. })
        ));
    }
}
