//! The server: jsonrpsee serving HTTP and WebSocket on one port, permissive CORS (browser
//! wallets and dapps call it from any origin), batches, request-size, connection and filter
//! limits, and per-client connection and rate limits (our own accept loop knows each
//! connection's address, which jsonrpsee's does not pass on).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use http_body_util::BodyExt;
use jsonrpsee::core::BoxError;
use jsonrpsee::server::middleware::rpc::RpcServiceBuilder;
use jsonrpsee::server::{
    BatchRequestConfig, HttpBody, Server, ServerBuilder, ServerConfig, ServerHandle, TowerService,
    serve_with_graceful_shutdown, stop_channel,
};
use jsonrpsee::{Methods, RpcModule};
use tokio::net::TcpListener;
use tower::Service;
use tower::layer::util::{Identity, Stack};
use tower_http::cors::CorsLayer;

use crate::chain::Chain;
use crate::rpc::api::{ApiSettings, EthApi, EthRpcServer};
use crate::rpc::clients::{Client, ClientRates, ConnectionSlots, RateLimit, RateLimitLayer};
use crate::rpc::filters::FilterRegistry;
use crate::rpc::ids::HexIdProvider;
use crate::rpc::logs::LogLimits;
use crate::rpc::middleware::ClarifyLayer;

const GWEI: u128 = 1_000_000_000;

/// The pause after a failed `accept` (typically: out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Limits and fee answers of the server.
#[derive(Clone, Debug)]
pub struct RpcOptions {
    /// Largest request body (a batch counts as one): geth's 5 MiB.
    pub max_request_body_size: u32,
    /// Largest response body (`eth_getLogs` answers can be big).
    pub max_response_body_size: u32,
    /// HTTP requests in progress and WebSocket sessions open at once, from all clients.
    pub max_connections: u32,
    /// TCP connections open at once (idle keep-alive ones included): beyond, new ones are
    /// closed at once.
    pub max_open_connections: usize,
    /// TCP connections one client (IP address; IPv6: its /64) may hold; `None`: no limit.
    pub max_connections_per_client: Option<usize>,
    /// Calls per second one client may make (each call of a batch counts); `None`: no limit.
    pub rate_limit: Option<RateLimit>,
    pub max_subscriptions_per_connection: u32,
    /// Most calls in one batch (geth's `BatchRequestLimit`).
    pub max_batch_len: u32,
    /// Most blocks one `eth_getLogs` (or filter poll) may span.
    pub max_logs_block_range: u64,
    /// Most logs one `eth_getLogs` may return.
    pub max_logs: usize,
    /// Installed filters expire after this long without a poll (geth: 5 minutes).
    pub filter_timeout: Duration,
    pub max_filters: usize,
    /// `eth_gasPrice`; `None` answers base fee + `priority_fee`.
    pub gas_price: Option<u128>,
    /// `eth_maxPriorityFeePerGas`.
    pub priority_fee: u128,
}

impl Default for RpcOptions {
    fn default() -> Self {
        Self {
            max_request_body_size: 5 * 1024 * 1024,
            max_response_body_size: 100 * 1024 * 1024,
            max_connections: 1_000,
            max_open_connections: 4_096,
            // Off by default: behind a load balancer every client has the balancer's address.
            max_connections_per_client: None,
            rate_limit: None,
            max_subscriptions_per_connection: 1_024,
            max_batch_len: 1_000,
            max_logs_block_range: 10_000,
            max_logs: 10_000,
            filter_timeout: Duration::from_secs(5 * 60),
            max_filters: 10_000,
            gas_price: None,
            priority_fee: GWEI,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("method registration failed: {0}")]
    Register(#[from] jsonrpsee::core::RegisterMethodError),
}

/// A running server.
#[derive(Debug, Clone)]
pub struct RpcHandle {
    local_addr: SocketAddr,
    handle: ServerHandle,
}

impl RpcHandle {
    /// The address bound (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.local_addr)
    }

    /// Stops accepting and closes connections; resolves once the server has stopped.
    pub async fn stop(self) {
        // Already stopping is fine: either way we wait for the end.
        let _ = self.handle.stop();
        self.handle.stopped().await;
    }

    /// Resolves when the server stops (after [`RpcHandle::stop`] from any clone).
    pub async fn stopped(self) {
        self.handle.stopped().await;
    }
}

/// The HTTP layers in front of the JSON-RPC methods: permissive CORS.
type HttpLayers = Stack<CorsLayer, Identity>;
/// The JSON-RPC layers around each call and batch: [`ClarifyLayer`] outside, so that it runs a
/// batch's calls through the rate limit one by one (each call counts), then [`RateLimitLayer`].
type RpcLayers = Stack<RateLimitLayer, Stack<ClarifyLayer, Identity>>;

/// The methods over `chain`, with their filter registry and settings.
fn methods(chain: Arc<dyn Chain>, options: &RpcOptions) -> Result<RpcModule<()>, RpcError> {
    let filters = Arc::new(FilterRegistry::new(
        options.filter_timeout,
        options.max_filters,
    ));
    let settings = ApiSettings {
        gas_price: options.gas_price,
        priority_fee: options.priority_fee,
        logs: LogLimits {
            max_blocks: options.max_logs_block_range.max(1),
            max_logs: options.max_logs,
        },
    };
    let mut module = RpcModule::new(());
    module.merge(EthApi::new(chain, filters, settings).into_rpc())?;
    Ok(module)
}

/// The server's configuration and middleware for `module`, before it meets a socket.
fn builder(
    options: &RpcOptions,
    module: &RpcModule<()>,
    rates: Option<Arc<ClientRates>>,
) -> ServerBuilder<HttpLayers, RpcLayers> {
    let config = ServerConfig::builder()
        .max_request_body_size(options.max_request_body_size)
        .max_response_body_size(options.max_response_body_size)
        .max_connections(options.max_connections)
        .max_subscriptions_per_connection(options.max_subscriptions_per_connection)
        .set_batch_request_config(BatchRequestConfig::Limit(options.max_batch_len))
        .set_id_provider(HexIdProvider)
        .build();
    let known_methods: Arc<HashSet<String>> =
        Arc::new(module.method_names().map(str::to_owned).collect());
    Server::builder()
        .set_config(config)
        .set_http_middleware(tower::ServiceBuilder::new().layer(CorsLayer::permissive()))
        .set_rpc_middleware(
            RpcServiceBuilder::new()
                .layer(ClarifyLayer::new(
                    options.max_response_body_size,
                    known_methods,
                ))
                .layer(RateLimitLayer::new(rates)),
        )
}

/// Serves Ethereum JSON-RPC for `chain` on `listen` (HTTP and WebSocket on the same port).
pub async fn serve(
    chain: Arc<dyn Chain>,
    listen: SocketAddr,
    options: RpcOptions,
) -> Result<RpcHandle, RpcError> {
    let bind = |source| RpcError::Bind {
        addr: listen,
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind)?;
    let local_addr = listener.local_addr().map_err(bind)?;
    let module = methods(chain, &options)?;
    let rates = options.rate_limit.map(ClientRates::new);
    if let Some(rates) = &rates {
        rates.spawn_pruning(Duration::from_secs(60));
    }
    let services = builder(&options, &module, rates).to_service_builder();
    let (stop, handle) = stop_channel();
    let slots = ConnectionSlots::new(
        options.max_open_connections,
        options.max_connections_per_client,
    );
    let methods: Methods = module.into();
    // Our own accept loop: jsonrpsee's does not tell the middleware who the client is.
    tokio::spawn(async move {
        loop {
            let (socket, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, or a connection reset before it was
                        // accepted: the listener itself is fine. Out of descriptors, accept
                        // fails at once until one is freed: give the others time to finish.
                        tracing::warn!(%error, "JSON-RPC accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
                () = stop.clone().shutdown() => return,
            };
            let client = Client::of(remote.ip());
            let slot = match slots.take(client) {
                Ok(slot) => slot,
                Err(refused) => {
                    parsec_telemetry::RpcMetrics::global()
                        .refused_connections
                        .inc();
                    tracing::debug!(%client, ?refused, "JSON-RPC connection refused");
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            let service = services.clone().build(methods.clone(), stop.clone());
            // The slot lives as long as the connection's service: until the connection ends.
            let slot = Arc::new(slot);
            let tagged =
                tower::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                    let _held = &slot;
                    request.extensions_mut().insert(client);
                    let mut service = service.clone();
                    // Boxed: the compiler cannot prove an unboxed one `Send` for every lifetime.
                    async move { service.call(request).await }.boxed()
                });
            tokio::spawn(serve_with_graceful_shutdown(
                socket,
                tagged,
                stop.clone().shutdown(),
            ));
        }
    });
    tracing::info!(%local_addr, "JSON-RPC listening (HTTP and WebSocket)");
    Ok(RpcHandle { local_addr, handle })
}

/// The server's whole HTTP request path without a socket: the same configuration, limits,
/// middleware (CORS, clear invalid-params messages, concurrent batches; no client address, so no per-client limit) and methods as
/// [`serve`]. For the fuzz targets, which must reach every layer an HTTP client reaches.
pub struct InProcessRpc {
    service: TowerService<RpcLayers, HttpLayers>,
    /// Keeps the service's stop signal open for as long as it serves.
    _server: ServerHandle,
}

impl InProcessRpc {
    pub fn new(chain: Arc<dyn Chain>, options: RpcOptions) -> Result<Self, RpcError> {
        let (stop, server) = stop_channel();
        let module = methods(chain, &options)?;
        let rates = options.rate_limit.map(ClientRates::new);
        let service = builder(&options, &module, rates)
            .to_service_builder()
            .build(Methods::from(module), stop);
        Ok(Self {
            service,
            _server: server,
        })
    }

    /// POSTs `body` as `application/json`, as an HTTP client would; returns the status and
    /// the body of the answer.
    pub async fn post(&self, body: Vec<u8>) -> Result<(http::StatusCode, String), BoxError> {
        let request = http::Request::post("/")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(HttpBody::from(body))?;
        let response = self.service.clone().call(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }
}
