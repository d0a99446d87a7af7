//! Readiness: is this process ready to serve?
//!
//! A process is made of components that become ready independently (each Raft member of
//! `parsec dev`, an agent). Each holds a [`Component`] and flips it; the process is ready when
//! every registered component is. Liveness (`/healthz`) is simply "the process answers".

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use tokio::sync::watch;

/// Anything the endpoints can ask whether the process is ready.
pub trait Readiness: Send + Sync + 'static {
    /// `Ok` when ready, else why not (shown by `/readyz`).
    fn check(&self) -> Result<(), String>;
}

/// The readiness of a process: a set of named components.
#[derive(Clone)]
pub struct Health {
    // name → why it is not ready (None: ready).
    state: Arc<watch::Sender<BTreeMap<String, Option<String>>>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: Arc::new(watch::Sender::new(BTreeMap::new())),
        }
    }
}

static GLOBAL: LazyLock<Health> = LazyLock::new(Health::default);

impl Health {
    /// The process's readiness, which `--metrics-listen` and gRPC health report.
    pub fn global() -> &'static Health {
        &GLOBAL
    }

    /// Registers a component, not ready until it says so.
    pub fn component(&self, name: impl Into<String>) -> Component {
        let name = name.into();
        self.state.send_modify(|state| {
            state.insert(name.clone(), Some("starting".into()));
        });
        Component {
            health: self.clone(),
            name,
        }
    }

    /// Notified on every change (for the gRPC health reporter).
    pub fn subscribe(&self) -> watch::Receiver<BTreeMap<String, Option<String>>> {
        self.state.subscribe()
    }

    fn evaluate(state: &BTreeMap<String, Option<String>>) -> Result<(), String> {
        let waiting: Vec<String> = state
            .iter()
            .filter_map(|(name, why)| why.as_ref().map(|why| format!("{name}: {why}")))
            .collect();
        if state.is_empty() {
            return Err("no component registered yet".into());
        }
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(waiting.join("; "))
        }
    }
}

impl Readiness for Health {
    fn check(&self) -> Result<(), String> {
        Health::evaluate(&self.state.borrow())
    }
}

/// One component's handle on its readiness. Dropping it removes the component.
pub struct Component {
    health: Health,
    name: String,
}

impl Component {
    pub fn set_ready(&self) {
        self.set(None);
    }

    pub fn set_not_ready(&self, why: impl Into<String>) {
        self.set(Some(why.into()));
    }

    fn set(&self, why: Option<String>) {
        self.health.state.send_if_modified(|state| {
            let entry = state.entry(self.name.clone()).or_default();
            let changed = *entry != why;
            *entry = why;
            changed
        });
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.health.state.send_modify(|state| {
            state.remove(&self.name);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_component_is() {
        let health = Health::default();
        assert!(health.check().is_err(), "nothing registered is not ready");
        let a = health.component("raft:shard-0");
        let b = health.component("agent");
        a.set_ready();
        let why = health.check().expect_err("agent still starting");
        assert!(why.contains("agent: starting"), "{why}");
        b.set_ready();
        assert_eq!(health.check(), Ok(()));
        a.set_not_ready("no leader");
        assert_eq!(health.check(), Err("raft:shard-0: no leader".into()));
        drop(a);
        assert_eq!(health.check(), Ok(()));
    }
}
