//! Per-client limits of the JSON-RPC server: how many connections one client may hold, and how
//! many calls per second it may make (each call of a batch counts). A client is its IP address,
//! an IPv6 client its /64 (one host usually owns a whole /64, and could otherwise rotate through
//! it to dodge the limit).
//!
//! Behind a load balancer that does not preserve client addresses, every client shares the
//! balancer's address: leave these limits off there and limit at the balancer.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota};
use jsonrpsee::core::server::MethodResponse;
use jsonrpsee::server::middleware::rpc::{Batch, Notification, Request, RpcServiceT};
use parking_lot::Mutex;

use crate::rpc::error::limit_exceeded;

/// A client of the server, as the accept loop saw it; put in every request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Client(IpAddr);

impl Client {
    /// The client at `address`: IPv4 as is, IPv6 by its /64 (IPv4-mapped IPv6 as IPv4).
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !u128::from(u64::MAX);
                    Self(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Calls per second one client may make, with a burst allowance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    /// Calls a client may make at once after being idle (at least `per_second`).
    pub burst: NonZeroU32,
}

/// The token buckets of every client seen recently.
pub struct ClientRates {
    limit: RateLimit,
    buckets: DefaultKeyedRateLimiter<Client>,
}

impl ClientRates {
    pub fn new(limit: RateLimit) -> Arc<Self> {
        let quota =
            Quota::per_second(limit.per_second).allow_burst(limit.burst.max(limit.per_second));
        Arc::new(Self {
            limit,
            buckets: DefaultKeyedRateLimiter::keyed(quota),
        })
    }

    /// Takes one call from `client`'s bucket; false when it is empty.
    pub fn admit(&self, client: Client) -> bool {
        self.buckets.check_key(&client).is_ok()
    }

    /// Forgets clients whose buckets are full again (they are as if never seen), every
    /// `period` while the returned task runs: the map holds only recently active clients.
    pub fn spawn_pruning(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let rates = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(rates) = rates.upgrade() else { return };
                rates.buckets.retain_recent();
                rates.buckets.shrink_to_fit();
            }
        })
    }

    /// Clients with a bucket right now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// RPC middleware refusing the calls of a client over its rate with `-32005`.
#[derive(Clone)]
pub struct RateLimited<S> {
    inner: S,
    rates: Option<Arc<ClientRates>>,
}

/// Wraps each service in [`RateLimited`]; a named layer, so that the server's type can be named.
#[derive(Clone, Default)]
pub struct RateLimitLayer {
    rates: Option<Arc<ClientRates>>,
}

impl RateLimitLayer {
    pub fn new(rates: Option<Arc<ClientRates>>) -> Self {
        Self { rates }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> RateLimited<S> {
        RateLimited {
            inner,
            rates: self.rates.clone(),
        }
    }
}

impl<S> RateLimited<S> {
    /// The client that sent `extensions`' request, when it is over its rate.
    fn over_rate(&self, extensions: &http::Extensions) -> Option<(Client, RateLimit)> {
        let rates = self.rates.as_ref()?;
        let client = *extensions.get::<Client>()?;
        (!rates.admit(client)).then_some((client, rates.limit))
    }
}

fn rate_error(client: Client, limit: RateLimit) -> jsonrpsee::types::ErrorObjectOwned {
    limit_exceeded(format!(
        "rate limit exceeded: at most {} calls per second (bursts of {}) from {client}",
        limit.per_second, limit.burst
    ))
}

impl<S> RpcServiceT for RateLimited<S>
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
        let refused = self.over_rate(request.extensions());
        let inner = self.inner.clone();
        async move {
            match refused {
                Some((client, limit)) => {
                    parsec_telemetry::RpcMetrics::global().rate_limited.inc();
                    MethodResponse::error(request.id().into_owned(), rate_error(client, limit))
                }
                None => inner.call(request).await,
            }
        }
    }

    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        // The batch middleware above this one calls `call` for each entry.
        self.inner.batch(batch)
    }

    fn notification<'a>(
        &self,
        notification: Notification<'a>,
    ) -> impl Future<Output = MethodResponse> + Send + 'a {
        let refused = self.over_rate(notification.extensions()).is_some();
        let inner = self.inner.clone();
        async move {
            if refused {
                MethodResponse::notification()
            } else {
                inner.notification(notification).await
            }
        }
    }
}

/// The TCP connections open at once: bounded in all (so idle keep-alive connections cannot
/// exhaust the process's file descriptors) and, optionally, per client.
pub struct ConnectionSlots {
    total: usize,
    per_client: Option<usize>,
    held: Mutex<HeldSlots>,
}

#[derive(Default)]
struct HeldSlots {
    total: usize,
    by_client: HashMap<Client, usize>,
}

/// Why a connection was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Total(usize),
    Client(usize),
}

/// One connection of a client; its slot is freed when dropped.
pub struct Slot {
    slots: Arc<ConnectionSlots>,
    client: Client,
}

impl ConnectionSlots {
    pub fn new(total: usize, per_client: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            total,
            per_client,
            held: Mutex::default(),
        })
    }

    /// A slot for a new connection of `client`, unless the server or the client is full.
    pub fn take(self: &Arc<Self>, client: Client) -> Result<Slot, Refused> {
        let mut held = self.held.lock();
        if held.total >= self.total {
            return Err(Refused::Total(self.total));
        }
        let count = held.by_client.get(&client).copied().unwrap_or(0);
        if let Some(limit) = self.per_client
            && count >= limit
        {
            return Err(Refused::Client(limit));
        }
        held.by_client.insert(client, count + 1);
        held.total += 1;
        Ok(Slot {
            slots: Arc::clone(self),
            client,
        })
    }

    /// Clients holding a connection now.
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.held.lock().by_client.len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock();
        held.total -= 1;
        if let Some(count) = held.by_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                held.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
    }

    #[test]
    fn ipv6_clients_are_their_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1"
            .parse()
            .unwrap_or(IpAddr::V4([0; 4].into()));
        let b: IpAddr = "2001:db8:1:2:ffff::9"
            .parse()
            .unwrap_or(IpAddr::V4([0; 4].into()));
        let c: IpAddr = "2001:db8:1:3::1"
            .parse()
            .unwrap_or(IpAddr::V4([0; 4].into()));
        assert_eq!(Client::of(a), Client::of(b));
        assert_ne!(Client::of(a), Client::of(c));
        assert_eq!(Client::of(a).to_string(), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:10.0.0.1"
            .parse()
            .unwrap_or(IpAddr::V4([0; 4].into()));
        assert_eq!(Client::of(mapped).to_string(), "10.0.0.1");
    }

    #[test]
    fn a_client_gets_its_burst_then_is_refused_while_others_are_not() {
        let rates = ClientRates::new(RateLimit {
            per_second: nz(1),
            burst: nz(3),
        });
        let (one, two) = (
            Client::of([10, 0, 0, 1].into()),
            Client::of([10, 0, 0, 2].into()),
        );
        assert!((0..3).all(|_| rates.admit(one)));
        assert!(
            !rates.admit(one),
            "the fourth call within a second is refused"
        );
        assert!(rates.admit(two), "another client has its own bucket");
        assert_eq!(rates.tracked(), 2);
    }

    #[test]
    fn connection_slots_are_bounded_per_client_and_in_all_and_freed_on_drop() {
        let slots = ConnectionSlots::new(3, Some(2));
        let (one, two) = (
            Client::of([10, 0, 0, 1].into()),
            Client::of([10, 0, 0, 2].into()),
        );
        let a = slots.take(one);
        let b = slots.take(one);
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(slots.take(one).err(), Some(Refused::Client(2)));
        let other = slots.take(two);
        assert!(other.is_ok(), "another client has its own slots");
        assert_eq!(slots.take(two).err(), Some(Refused::Total(3)));
        drop(a);
        let c = slots.take(one);
        assert!(c.is_ok(), "a dropped connection frees its slot");
        drop((b, c, other));
        assert_eq!(slots.clients(), 0, "no client holds a slot");
        let unlimited = ConnectionSlots::new(2, None);
        let both = (unlimited.take(one), unlimited.take(one));
        assert!(both.0.is_ok() && both.1.is_ok());
    }
}
