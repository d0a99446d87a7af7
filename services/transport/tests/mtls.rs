//! Mutual TLS end to end: a real tonic server (the standard gRPC health service) behind
//! [`parsec_transport::server`], reached through [`parsec_transport::endpoint`] by clients with
//! and without a valid certificate.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::net::SocketAddr;

use parsec_core::TlsFiles;
use parsec_transport::{Authority, Tls, TlsError, endpoint, server};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn tls(authority: &Authority, names: &[&str]) -> Tls {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let issued = authority.issue(&names).unwrap();
    Tls::from_pem(
        authority.ca_pem().as_bytes(),
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
    .unwrap()
}

/// Serves gRPC health on 127.0.0.1 (mTLS when `tls` is given); returns its address.
async fn health_server(tls: Option<&Tls>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (_, service) = tonic_health::server::health_reporter();
    let router = server(tls).unwrap().add_service(service);
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    address
}

async fn check(address: &str, tls: Option<&Tls>) -> Result<(), String> {
    let channel = endpoint(address, tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|status| format!("call: {status:?}"))
}

#[tokio::test]
async fn a_peer_with_a_certificate_of_the_cluster_ca_is_served() {
    let ca = Authority::new("test CA").unwrap();
    let server_tls = tls(&ca, &["localhost", "127.0.0.1"]);
    let address = health_server(Some(&server_tls)).await.to_string();
    let client_tls = tls(&ca, &["client.local"]);
    check(&address, Some(&client_tls)).await.unwrap();
}

#[tokio::test]
async fn peers_without_a_valid_certificate_are_refused() {
    let ca = Authority::new("cluster CA").unwrap();
    let server_tls = tls(&ca, &["127.0.0.1"]);
    let address = health_server(Some(&server_tls)).await.to_string();

    // Plain HTTP/2 to a TLS port.
    assert!(check(&address, None).await.is_err(), "plain text accepted");

    // A certificate of another CA: the server refuses the client (and the client refuses the
    // server, whose certificate it cannot verify).
    let stranger = Authority::new("another CA").unwrap();
    let stranger_tls = tls(&stranger, &["127.0.0.1"]);
    assert!(
        check(&address, Some(&stranger_tls)).await.is_err(),
        "a foreign certificate was accepted"
    );

    // Trusting the cluster CA but presenting a certificate of another: refused by the server.
    let issued = stranger.issue(&["127.0.0.1".into()]).unwrap();
    let impostor = Tls::from_pem(
        ca.ca_pem().as_bytes(),
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
    .unwrap();
    let refused = check(&address, Some(&impostor)).await.unwrap_err();
    assert!(!refused.is_empty());
}

#[tokio::test]
async fn a_server_whose_certificate_does_not_name_its_address_is_refused() {
    let ca = Authority::new("cluster CA").unwrap();
    let server_tls = tls(&ca, &["shard-0.example"]);
    let address = health_server(Some(&server_tls)).await.to_string();
    let client_tls = tls(&ca, &["client.local"]);
    assert!(check(&address, Some(&client_tls)).await.is_err());
}

#[tokio::test]
async fn a_plain_server_refuses_tls_clients_and_serves_plain_ones() {
    let address = health_server(None).await.to_string();
    check(&address, None).await.unwrap();
    let ca = Authority::new("cluster CA").unwrap();
    assert!(check(&address, Some(&tls(&ca, &["c"]))).await.is_err());
}

#[test]
fn files_are_written_and_loaded_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("cluster CA").unwrap();
    let files = ca
        .write_issued(dir.path(), "shard-0-1", &["127.0.0.1".into()])
        .unwrap();
    Tls::load(&files).unwrap();

    let missing = TlsFiles {
        key_file: dir.path().join("nope.key"),
        ..files.clone()
    };
    let error = Tls::load(&missing).unwrap_err();
    assert!(matches!(error, TlsError::Read { .. }), "{error}");
    assert!(error.to_string().contains("nope.key"), "{error}");

    let swapped = TlsFiles {
        cert_file: files.key_file.clone(),
        ..files.clone()
    };
    let error = Tls::load(&swapped).unwrap_err();
    assert!(error.to_string().contains("no PEM certificate"), "{error}");

    std::fs::write(
        dir.path().join("garbage.crt"),
        b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let garbage = TlsFiles {
        ca_file: dir.path().join("garbage.crt"),
        ..files
    };
    assert!(Tls::load(&garbage).is_err());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("shard-0-1.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_and_a_freed_slot_is_reused() {
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (_, service) = tonic_health::server::health_reporter();
    let incoming = parsec_transport::limit_connections(TcpListenerStream::new(listener), 2);
    tokio::spawn(
        server(None)
            .unwrap()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    let first = endpoint(&address, None).unwrap().connect().await.unwrap();
    let second = endpoint(&address, None).unwrap().connect().await.unwrap();
    for channel in [&first, &second] {
        HealthClient::new(channel.clone())
            .check(HealthCheckRequest::default())
            .await
            .unwrap();
    }
    // A third connection is accepted and closed before a byte is read.
    let mut third = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut byte = [0u8; 1];
    let read = third.read(&mut byte).await;
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "a third connection was kept: {read:?}"
    );
    // Once a client goes, a new one is served (polled: the server notices the close
    // asynchronously).
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while check(&address, None).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the freed slot was never reused"
        );
    }
    drop(second);
}
