//! The agent's gRPC service: contract calls, deploys and reads.

use crate::agent::{Agent, AgentError, Call, CallResult};
use crate::runner::RunError;
use parsec_broker::BrokerError;
use parsec_proto as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Largest request an agent accepts.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

#[derive(Clone)]
pub struct AgentService {
    agent: Arc<Agent>,
}

impl AgentService {
    pub fn new(agent: Arc<Agent>) -> Self {
        Self { agent }
    }

    pub fn into_server(self) -> pb::agent_server::AgentServer<Self> {
        pb::agent_server::AgentServer::new(self).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// The protobuf form of an agent error.
pub fn error_to_proto(error: &AgentError) -> pb::AgentError {
    use pb::AgentErrorCode as C;
    let code = match error {
        AgentError::InvalidArgument(_) => C::InvalidArgument,
        AgentError::ContractNotFound(_) => C::ContractNotFound,
        AgentError::Run(run) => match run {
            RunError::InvalidContract(_) => C::ContractInvalid,
            RunError::ContractFailed(_) => C::ContractFailed,
            RunError::InstructionBudgetExceeded(_) => C::InstructionBudgetExceeded,
            RunError::MemoryLimitExceeded(_) => C::MemoryLimitExceeded,
            RunError::Access(_) | RunError::Internal(_) => C::Internal,
        },
        AgentError::Broker(broker) => match broker {
            BrokerError::Timeout { .. }
            | BrokerError::Unreachable { .. }
            | BrokerError::Ticket(_) => C::Unavailable,
            _ => C::Internal,
        },
        AgentError::Timeout { .. } => C::Timeout,
        AgentError::Overloaded(_) => C::Overloaded,
    };
    pb::AgentError {
        code: code as i32,
        message: error.to_string(),
    }
}

fn key_values(writes: parsec_core::WriteSet) -> Vec<pb::KeyValue> {
    writes
        .into_iter()
        .map(|(key, value)| pb::KeyValue { key, value })
        .collect()
}

fn check_runtime(raw: i32) -> Result<(), Status> {
    pb::Runtime::try_from(raw)
        .map(|_| ())
        .map_err(|_| Status::invalid_argument(format!("unknown runtime {raw}")))
}

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteReply>, Status> {
        let request = request.into_inner();
        check_runtime(request.runtime)?;
        let call = Call {
            contract: request.contract,
            param: request.param,
            read_only: request.read_only,
        };
        let read_only = call.read_only;
        let reply = match self.agent.execute(call).await {
            Ok(CallResult {
                ticket,
                attempts,
                writes,
                ..
            }) => {
                let (writes, reads) = if read_only {
                    (Vec::new(), key_values(writes))
                } else {
                    (key_values(writes), Vec::new())
                };
                pb::ExecuteReply {
                    writes,
                    reads,
                    error: None,
                    ticket: ticket.0,
                    attempts,
                }
            }
            Err(error) => pb::ExecuteReply {
                error: Some(error_to_proto(&error)),
                ..Default::default()
            },
        };
        Ok(Response::new(reply))
    }

    async fn deploy(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::DeployReply>, Status> {
        let request = request.into_inner();
        check_runtime(request.runtime)?;
        let reply = match self.agent.deploy(request.key, request.code).await {
            Ok(result) => pb::DeployReply {
                error: None,
                ticket: result.ticket.0,
            },
            Err(error) => pb::DeployReply {
                error: Some(error_to_proto(&error)),
                ticket: 0,
            },
        };
        Ok(Response::new(reply))
    }

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadReply>, Status> {
        let keys = request.into_inner().keys;
        match self.agent.read(&keys).await {
            Ok(values) => Ok(Response::new(pb::ReadReply { values })),
            Err(AgentError::InvalidArgument(message)) => Err(Status::invalid_argument(message)),
            Err(error) => Err(Status::unavailable(error.to_string())),
        }
    }

    async fn cluster_status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::ClusterStatusReply>, Status> {
        let shards = self
            .agent
            .broker()
            .shard_status()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::ClusterStatusReply { shards }))
    }
}
