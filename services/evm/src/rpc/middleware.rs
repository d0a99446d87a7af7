//! JSON-RPC middleware: invalid-params errors say what is wrong in their message, as geth's do
//! (jsonrpsee puts the reason in `data` under a bare "Invalid params", which client libraries
//! do not show); subscriptions over HTTP are refused with geth's "notifications not supported",
//! not jsonrpsee's "Internal error"; and the calls of a batch run concurrently (jsonrpsee runs them one after
//! another, so a burst of transactions batched by a client would wait on each other).

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use jsonrpsee::core::server::{BatchResponseBuilder, MethodResponse};
use jsonrpsee::server::middleware::rpc::{Batch, BatchEntry, Notification, Request, RpcServiceT};
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::Value;

use crate::rpc::error::{INTERNAL_ERROR, INVALID_PARAMS};

/// JSON-RPC's "method not found", which geth also uses for subscriptions over HTTP.
const METHOD_NOT_FOUND: i32 = -32601;

/// jsonrpsee's message for every invalid-params error.
const JSONRPSEE_INVALID_PARAMS: &str = "Invalid params";

#[derive(Clone, Debug)]
pub struct Clarify<S> {
    inner: S,
    max_response_body_size: usize,
    /// The methods the server serves: any other name is recorded as `unknown` in metrics, so
    /// that clients cannot grow the metric families without bound.
    known_methods: Arc<HashSet<String>>,
}

/// Wraps each service in [`Clarify`]; a named layer, so that the server's type can be named.
#[derive(Clone, Debug)]
pub struct ClarifyLayer {
    max_response_body_size: usize,
    known_methods: Arc<HashSet<String>>,
}

impl ClarifyLayer {
    pub fn new(max_response_body_size: u32, known_methods: Arc<HashSet<String>>) -> Self {
        Self {
            max_response_body_size: max_response_body_size as usize,
            known_methods,
        }
    }
}

impl<S> tower::Layer<S> for ClarifyLayer {
    type Service = Clarify<S>;

    fn layer(&self, inner: S) -> Clarify<S> {
        Clarify {
            inner,
            max_response_body_size: self.max_response_body_size,
            known_methods: Arc::clone(&self.known_methods),
        }
    }
}

impl<S> RpcServiceT for Clarify<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Send
        + Sync
        + Clone
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(&self, request: Request<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let inner = self.inner.clone();
        let known = self.known_methods.contains(request.method_name());
        async move {
            let id = request.id().into_owned();
            let method = request.method_name().to_owned();
            let started = std::time::Instant::now();
            let response = inner.call(request).await;
            let response = match clarified(&method, &response) {
                Some(error) => MethodResponse::error(id, error),
                None => response,
            };
            parsec_telemetry::RpcMetrics::global().record(
                if known { &method } else { "unknown" },
                started.elapsed(),
                response.as_error_code(),
            );
            response
        }
    }

    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let service = self.clone();
        async move {
            let mut got_notification = false;
            let mut pending = Vec::new();
            for entry in batch {
                match entry {
                    Ok(BatchEntry::Call(request)) => {
                        pending.push(futures::future::Either::Left(service.call(request)))
                    }
                    Ok(BatchEntry::Notification(notification)) => {
                        got_notification = true;
                        service.inner.notification(notification).await;
                    }
                    Err(error) => {
                        let (error, id) = error.into_parts();
                        pending.push(futures::future::Either::Right(std::future::ready(
                            MethodResponse::error(id, error),
                        )));
                    }
                }
            }
            let mut responses =
                BatchResponseBuilder::new_with_limit(service.max_response_body_size);
            for response in futures::future::join_all(pending).await {
                if let Err(too_big) = responses.append(response) {
                    return too_big;
                }
            }
            // As jsonrpsee: notifications only get no answer; an empty batch is invalid.
            if responses.is_empty() && got_notification {
                MethodResponse::notification()
            } else {
                MethodResponse::from_batch(responses.finish())
            }
        }
    }

    fn notification<'a>(
        &self,
        notification: Notification<'a>,
    ) -> impl Future<Output = MethodResponse> + Send + 'a {
        self.inner.notification(notification)
    }
}

/// The error `response` should have been: the reason as the message of jsonrpsee's bare
/// invalid-params error; geth's answer to a subscription over HTTP, where jsonrpsee answers
/// "Internal error" (found by the `json_rpc` fuzz target: nothing failed, the transport simply
/// cannot carry notifications).
fn clarified(method: &str, response: &MethodResponse) -> Option<ErrorObjectOwned> {
    if response.as_error_code() == Some(INTERNAL_ERROR)
        && matches!(method, "eth_subscribe" | "eth_unsubscribe")
    {
        return Some(ErrorObjectOwned::owned(
            METHOD_NOT_FOUND,
            "notifications not supported",
            None::<()>,
        ));
    }
    if response.as_error_code() != Some(INVALID_PARAMS) {
        return None;
    }
    let json: Value = serde_json::from_str(response.to_json().get()).ok()?;
    let error = json.get("error")?;
    if error.get("message")?.as_str()? != JSONRPSEE_INVALID_PARAMS {
        return None;
    }
    let reason = error.get("data")?.as_str()?;
    Some(ErrorObjectOwned::owned(
        INVALID_PARAMS,
        format!("invalid argument: {reason}"),
        None::<()>,
    ))
}
