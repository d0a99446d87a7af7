//! The standard gRPC health service (`grpc.health.v1.Health`), for Kubernetes' native gRPC
//! probes: each named service is SERVING while the process is ready, NOT_SERVING otherwise.

use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health as HealthApi, HealthServer};

use crate::health::{Health, Readiness};

/// The gRPC health service name of a Raft member that knows its leader and has caught up
/// (what the operator's readiness probes ask for).
pub const RAFT_HEALTH_SERVICE: &str = "parsec.raft";

/// The gRPC health service reporting `health` under every name in `services` ("" is the
/// whole server). A task follows `health` for as long as the server lives.
pub fn health_service(health: &Health, services: &[&str]) -> HealthServer<impl HealthApi + use<>> {
    let (reporter, server) = tonic_health::server::health_reporter();
    let services: Vec<String> = services.iter().map(|s| s.to_string()).collect();
    let mut changes = health.subscribe();
    let health = health.clone();
    tokio::spawn(async move {
        loop {
            let status = match health.check() {
                Ok(()) => ServingStatus::Serving,
                Err(_) => ServingStatus::NotServing,
            };
            for service in &services {
                reporter.set_service_status(service, status).await;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    });
    server
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    #[tokio::test]
    async fn serving_follows_readiness() {
        let health = Health::default();
        let member = health.component("raft");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let service = health_service(&health, &["", "parsec.raft"]);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        let mut watch = client
            .watch(HealthCheckRequest {
                service: "parsec.raft".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let not_serving = ServingStatus::NotServing as i32;
        let serving = ServingStatus::Serving as i32;
        assert_eq!(watch.message().await.unwrap().unwrap().status, not_serving);
        member.set_ready();
        assert_eq!(watch.message().await.unwrap().unwrap().status, serving);
        let check = client
            .check(HealthCheckRequest { service: "".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(check.status, serving);
        member.set_not_ready("lost the leader");
        assert_eq!(watch.message().await.unwrap().unwrap().status, not_serving);
        let unknown = client
            .check(HealthCheckRequest {
                service: "nope".into(),
            })
            .await;
        assert_eq!(unknown.unwrap_err().code(), tonic::Code::NotFound);
    }
}
