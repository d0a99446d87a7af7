//! gRPC clients of a set of agents.

use bytes::Bytes;
use parsec_proto as pb;
use parsec_proto::agent_client::AgentClient;
use parsec_transport::Tls;
use std::time::Duration;
use tonic::transport::Channel;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad agent address {address}: {message}")]
    Address { address: String, message: String },
    #[error("agent {address} unreachable: {message}")]
    Unreachable { address: String, message: String },
    #[error("{0}")]
    Rpc(#[from] tonic::Status),
    #[error("{what} failed: {message}")]
    Agent { what: String, message: String },
}

/// Clients of every agent of a cluster, round-robin by index.
#[derive(Clone)]
pub struct AgentPool {
    clients: Vec<(String, AgentClient<Channel>)>,
}

impl AgentPool {
    /// Connects to every `host:port` (over mutual TLS with `tls`), failing fast if one does
    /// not answer.
    pub async fn connect(addresses: &[String], tls: Option<&Tls>) -> Result<Self, ClientError> {
        let mut clients = Vec::with_capacity(addresses.len());
        for address in addresses {
            let endpoint = parsec_transport::endpoint(address, tls)
                .map_err(|e| ClientError::Address {
                    address: address.clone(),
                    message: e.to_string(),
                })?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true);
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| ClientError::Unreachable {
                    address: address.clone(),
                    message: parsec_core::error_chain(&e),
                })?;
            clients.push((
                address.clone(),
                AgentClient::new(channel).max_decoding_message_size(16 << 20),
            ));
        }
        if clients.is_empty() {
            return Err(ClientError::Address {
                address: String::new(),
                message: "no agent given".into(),
            });
        }
        Ok(Self { clients })
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The client of agent `index % len`.
    pub fn agent(&self, index: usize) -> AgentClient<Channel> {
        self.clients[index % self.clients.len()].1.clone()
    }

    pub async fn deploy(&self, key: &str, code: &str) -> Result<(), ClientError> {
        let reply = self
            .agent(0)
            .deploy(pb::DeployRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                code: Bytes::copy_from_slice(code.as_bytes()),
                runtime: pb::Runtime::Lua as i32,
            })
            .await?
            .into_inner();
        match reply.error {
            None => Ok(()),
            Some(error) => Err(ClientError::Agent {
                what: format!("deploy of {key}"),
                message: error.message,
            }),
        }
    }

    /// Calls a contract and returns the reply, failing on a contract or agent error.
    pub async fn execute(
        &self,
        agent: usize,
        contract: &str,
        param: Bytes,
        read_only: bool,
    ) -> Result<pb::ExecuteReply, ClientError> {
        let reply = self
            .agent(agent)
            .execute(pb::ExecuteRequest {
                contract: Bytes::copy_from_slice(contract.as_bytes()),
                param,
                read_only,
                runtime: pb::Runtime::Lua as i32,
            })
            .await?
            .into_inner();
        match &reply.error {
            None => Ok(reply),
            Some(error) => Err(ClientError::Agent {
                what: format!("call of {contract}"),
                message: error.message.clone(),
            }),
        }
    }

    /// Total RPCs served by every shard so far.
    pub async fn shard_rpcs(&self) -> Result<u64, ClientError> {
        let status = self
            .agent(0)
            .cluster_status(pb::StatusRequest {})
            .await?
            .into_inner();
        Ok(status.shards.iter().map(|s| s.rpcs).sum())
    }
}
