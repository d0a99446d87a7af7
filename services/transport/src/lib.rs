//! How Parsec's components reach each other: every gRPC endpoint and server of the data plane,
//! the CLI and the operator is made here, so that mutual TLS, when the topology asks for it,
//! applies to all of them alike.
//!
//! With [`Tls`], a server requires a client certificate signed by the cluster's CA and a client
//! presents its own and checks the server's (its name or IP address must be in the server
//! certificate). Without it, everything speaks plain HTTP/2.

mod authority;
mod endpoint;
mod incoming;
mod tls;

pub use authority::{Authority, CertError, IssuedCert};
pub use endpoint::{TransportError, endpoint, host_of, server};
pub use incoming::{Counted, limit_connections};
pub use tls::{Tls, TlsError};
