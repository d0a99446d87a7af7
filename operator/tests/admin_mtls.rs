//! The operator's admin client over mutual TLS, against a real tonic server of
//! `parsec.raft.v1.RaftAdmin` behind `parsec_transport::server` (what every Raft member serves
//! when the topology has `tls`): with the cluster's certificate, read from a Secret the way the
//! controller reads it, the operator is served; without it, or with another CA's, it is refused.
//! And a server certificate with exactly the names the operator puts in cert-manager's
//! Certificate satisfies the server-name check for every address the topology holds.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use parsec_operator::admin::{AdminError, GrpcRaftAdmin, RaftAdmin, Target};
use parsec_operator::build::certificate::dns_names;
use parsec_operator::build::{spec_sizes, topology};
use parsec_operator::controller::tls::material;
use parsec_operator::render::parse_cluster;
use parsec_operator::validate::validate;
use parsec_raft::pb;
use parsec_raft::pb::raft_admin_client::RaftAdminClient;
use parsec_raft::pb::raft_admin_server::{RaftAdmin as RaftAdminApi, RaftAdminServer};
use parsec_transport::{Authority, Tls};
use tonic::{Request, Response, Status};

/// A member that says it is node 7, leader of term 3, and accepts every membership change.
struct StubMember;

fn membership() -> Result<Response<pb::MembershipReply>, Status> {
    Ok(Response::new(pb::MembershipReply {
        log_index: 1,
        voters: vec![0, 7],
        learners: vec![],
    }))
}

#[tonic::async_trait]
impl RaftAdminApi for StubMember {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        Ok(Response::new(pb::StatusReply {
            node_id: 7,
            role: "leader".into(),
            leader_id: Some(7),
            term: 3,
            voters: vec![0, 7],
            ..pb::StatusReply::default()
        }))
    }

    async fn add_learner(
        &self,
        _: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        membership()
    }

    async fn change_membership(
        &self,
        _: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        membership()
    }

    async fn promote_learner(
        &self,
        _: Request<pb::NodeRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        membership()
    }

    async fn remove_member(
        &self,
        _: Request<pb::NodeRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        membership()
    }
}

/// Serves the stub on 127.0.0.1 with mutual TLS; returns its address.
async fn serve(tls: &Tls) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = parsec_transport::server(Some(tls))
        .unwrap()
        .add_service(RaftAdminServer::new(StubMember));
    tokio::spawn(router.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));
    address
}

fn tls_of(authority: &Authority, names: &[String]) -> Tls {
    let issued = authority.issue(names).unwrap();
    Tls::from_pem(
        authority.ca_pem().as_bytes(),
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
    .unwrap()
}

/// The Secret cert-manager would write for the cluster: `ca.crt`, `tls.crt`, `tls.key`.
fn cluster_secret(authority: &Authority, names: &[String]) -> Secret {
    let issued = authority.issue(names).unwrap();
    let data: BTreeMap<String, ByteString> = [
        ("ca.crt", authority.ca_pem()),
        ("tls.crt", issued.cert_pem),
        ("tls.key", issued.key_pem),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
    .collect();
    Secret {
        data: Some(data),
        ..Secret::default()
    }
}

#[tokio::test]
async fn the_operator_reaches_the_admin_api_with_the_certificate_of_the_cluster_secret() {
    let ca = Authority::new("cluster CA").unwrap();
    let member = tls_of(&ca, &["127.0.0.1".into()]);
    let address = serve(&member).await.to_string();

    // The operator's identity comes from the Secret, read as the controller reads it.
    let secret = cluster_secret(&ca, &["*.demo-shard-0.ns.svc".into()]);
    let cluster_tls = material("demo-tls", &secret).unwrap().tls;
    let admin = GrpcRaftAdmin::default();
    let member = Target {
        addr: &address,
        tls: Some(&cluster_tls),
    };
    let state = admin.status(member).await.unwrap();
    assert_eq!(
        (state.node_id, state.role.as_str(), state.term),
        (7, "leader", 3)
    );
    admin
        .add_learner(member, 8, "demo-shard-0-8.demo-shard-0.ns.svc:7100")
        .await
        .unwrap();
    admin.promote_learner(member, 8).await.unwrap();
    admin.remove_member(member, 8).await.unwrap();
}

#[tokio::test]
async fn without_the_cluster_certificate_the_admin_api_refuses_the_operator() {
    let ca = Authority::new("cluster CA").unwrap();
    let member = tls_of(&ca, &["127.0.0.1".into()]);
    let address = serve(&member).await.to_string();
    let admin = GrpcRaftAdmin::default();

    // Plain gRPC to a member that demands mTLS.
    let plain = admin
        .status(Target {
            addr: &address,
            tls: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(plain, AdminError::Unreachable { .. }), "{plain}");

    // A certificate of another CA: the member refuses the operator (and the operator cannot
    // verify the member).
    let stranger = Authority::new("another CA").unwrap();
    let foreign = tls_of(&stranger, &["operator".into()]);
    assert!(
        admin
            .status(Target {
                addr: &address,
                tls: Some(&foreign)
            })
            .await
            .is_err()
    );

    // Trusting the cluster's CA but presenting a certificate of another CA.
    let issued = stranger.issue(&["operator".into()]).unwrap();
    let impostor = Tls::from_pem(
        ca.ca_pem().as_bytes(),
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
    .unwrap();
    let refused = admin
        .status(Target {
            addr: &address,
            tls: Some(&impostor),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(refused, AdminError::Unreachable { .. }),
        "{refused}"
    );
    // The reason reaches the operator's logs and the operation's message.
    assert!(refused.to_string().contains("UnknownCA"), "{refused}");
}

/// Calls `Status` of the server at `loopback`, dialling `address` (a pod DNS name, which does
/// not resolve here) so that the TLS server-name check runs against `address`'s host.
async fn status_as(address: &str, loopback: SocketAddr, tls: &Tls) -> Result<u64, String> {
    let connector = tower::service_fn(move |_: http::Uri| async move {
        tokio::net::TcpStream::connect(loopback)
            .await
            .map(hyper_util::rt::TokioIo::new)
    });
    let channel = parsec_transport::endpoint(address, Some(tls))
        .unwrap()
        .connect_with_connector(connector)
        .await
        .map_err(|e| parsec_core::error_chain(&e))?;
    RaftAdminClient::new(channel)
        .status(pb::StatusRequest {})
        .await
        .map(|r| r.into_inner().node_id)
        .map_err(|s| s.to_string())
}

#[tokio::test]
async fn the_certificate_names_pass_the_server_name_check_for_every_topology_address() {
    let manifest = "apiVersion: parsec.dev/v1alpha1\nkind: ParsecCluster\n\
        metadata: {name: demo, namespace: ns}\n\
        spec: {image: {repository: parsec, tag: '1'}, shards: {count: 2, replicas: 3}, \
        tls: {certManager: {issuerRef: {name: ca}}}}\n";
    let cluster = validate(&parse_cluster(manifest, "ns").unwrap()).unwrap();
    let ca = Authority::new("cluster CA").unwrap();
    // One certificate for every member, with exactly the Certificate's names.
    let member = tls_of(&ca, &dns_names(&cluster));
    let loopback = serve(&member).await;
    let operator = tls_of(&ca, &["parsec-operator".into()]);

    let config = topology::cluster_config(&cluster, &spec_sizes(&cluster)).unwrap();
    let addresses: Vec<String> = config
        .shards
        .iter()
        .flat_map(|s| s.replicas.iter())
        .chain(config.ticket_machine.replicas.iter())
        .map(|r| r.address.clone())
        .collect();
    assert_eq!(addresses.len(), 9);
    for address in &addresses {
        assert_eq!(
            status_as(address, loopback, &operator).await,
            Ok(7),
            "{address}"
        );
    }
    // The same pod name in another namespace is not covered: the check does run.
    let elsewhere = "demo-shard-0-0.demo-shard-0.other.svc:7100";
    assert!(status_as(elsewhere, loopback, &operator).await.is_err());
}
