//! The reconciler: read → validate → plan → build → apply (+ orphan cleanup) → one disruptive
//! step → status, events and metrics.

pub mod apply;
pub mod observe;
pub mod plan;
pub mod status;
pub mod tls;
pub mod volumes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use thiserror::Error;

use crate::admin::{RaftAdmin, Target};
use crate::build::certificate::{self, certificate_resource};
use crate::build::{self, BuildError, Environment};
use crate::crd::{Operation, ParsecCluster, ParsecClusterStatus};
use crate::discovery;
use crate::metrics::Metrics;
use crate::naming::FIELD_MANAGER;
use crate::validate::{ValidatedCluster, validate};
use parsec_transport::Tls;
use plan::Effect;
use tls::{TlsProblem, TlsState};

#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot {action} {kind} {name}: {source}")]
    Kube {
        action: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl Error {
    /// A short label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "KubernetesApi",
            Error::Build(_) => "Build",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub admin: Arc<dyn RaftAdmin>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Optional APIs found at start, and the operator's namespace.
    pub env: Environment,
    /// Consecutive failed reconciles per cluster (`namespace/name`), for exponential backoff
    /// (kube-runtime has none per object).
    failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

/// Retry delay after `failures` consecutive failures: 5 s, 10 s, 20 s, … up to 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    (Duration::from_secs(5) * 2u32.pow(exponent)).min(Duration::from_secs(300))
}

fn key(cluster: &ParsecCluster) -> String {
    format!(
        "{}/{}",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    )
}

impl Context {
    pub fn new(
        client: Client,
        admin: Arc<dyn RaftAdmin>,
        metrics: Arc<Metrics>,
        env: Environment,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            admin,
            metrics,
            env,
            failures: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn record(&self, cluster: &ParsecCluster, failed: bool) -> u32 {
        let Ok(mut failures) = self.failures.lock() else {
            return 1;
        };
        if failed {
            let count = failures.entry(key(cluster)).or_insert(0);
            *count += 1;
            *count
        } else {
            failures.remove(&key(cluster));
            0
        }
    }
}

/// Requeue soon while something is moving, rarely otherwise (watches wake us on changes).
const BUSY_REQUEUE: Duration = Duration::from_secs(5);
const IDLE_REQUEUE: Duration = Duration::from_secs(300);
/// While the TLS Secret is not usable: the operator does not watch Secrets, so it looks again.
const TLS_WAIT_REQUEUE: Duration = Duration::from_secs(15);

async fn publish(
    ctx: &Context,
    cluster: &ParsecCluster,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(%error, reason, "cannot publish an event");
    }
}

async fn patch_status(
    ctx: &Context,
    cluster: &ParsecCluster,
    status: &ParsecClusterStatus,
) -> Result<(), Error> {
    if cluster.status.as_ref() == Some(status) {
        return Ok(());
    }
    let ns = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let patch = json!({
        "apiVersion": "parsec.dev/v1alpha1",
        "kind": "ParsecCluster",
        "status": status,
    });
    Api::<ParsecCluster>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| Error::Kube {
            action: "update the status of",
            kind: "ParsecCluster",
            name,
            source,
        })?;
    Ok(())
}

/// Publishes an event for every condition whose status changed, and updates the condition
/// gauges.
async fn publish_transitions(
    ctx: &Context,
    cluster: &ParsecCluster,
    validated: &ValidatedCluster,
    old_status: Option<&ParsecClusterStatus>,
    status: &ParsecClusterStatus,
) {
    for condition in &status.conditions {
        let before =
            old_status.and_then(|s| s.conditions.iter().find(|c| c.type_ == condition.type_));
        if before.map(|c| &c.status) != Some(&condition.status) {
            let warning = (condition.type_ == status::DEGRADED && condition.status == "True")
                || (condition.type_ == status::TLS_READY && condition.status == "False");
            let type_ = if warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            publish(
                ctx,
                cluster,
                type_,
                &format!("{}{}", condition.type_, condition.status),
                format!("{}: {}", condition.reason, condition.message),
            )
            .await;
        }
        ctx.metrics.set_condition(
            &validated.namespace,
            &validated.name,
            &condition.type_,
            condition.status == "True",
        );
    }
}

/// Takes one disruptive step. Errors of the data plane are not reconcile errors: they are
/// recorded in the operation and the step is retried.
async fn execute(
    ctx: &Context,
    namespace: &str,
    tls: Option<&Tls>,
    effect: &Effect,
) -> Result<(), String> {
    let leader = |addr| Target { addr, tls };
    match effect {
        Effect::AddLearner {
            leader: addr,
            node_id,
            addr: node_addr,
        } => ctx
            .admin
            .add_learner(leader(addr), *node_id, node_addr)
            .await
            .map_err(|e| e.to_string()),
        Effect::PromoteLearner {
            leader: addr,
            node_id,
        } => ctx
            .admin
            .promote_learner(leader(addr), *node_id)
            .await
            .map_err(|e| e.to_string()),
        Effect::RemoveMember {
            leader: addr,
            node_id,
        } => ctx
            .admin
            .remove_member(leader(addr), *node_id)
            .await
            .map_err(|e| e.to_string()),
        Effect::DeletePod { pod } => Api::<Pod>::namespaced(ctx.client.clone(), namespace)
            .delete(pod, &DeleteParams::default())
            .await
            .map(|_| ())
            .or_else(|e| match e {
                kube::Error::Api(s) if s.code == 404 => Ok(()),
                e => Err(format!("cannot delete pod {pod}: {e}")),
            }),
    }
}

fn effect_label(effect: &Effect) -> &'static str {
    match effect {
        Effect::AddLearner { .. } => "AddLearner",
        Effect::PromoteLearner { .. } => "PromoteLearner",
        Effect::RemoveMember { .. } => "RemoveMember",
        Effect::DeletePod { .. } => "DeletePod",
    }
}

fn describe(op: &Operation) -> String {
    format!(
        "{} {} of {} (node {})",
        op.kind.as_str(),
        op.pod,
        op.group,
        op.node_id
    )
}

/// One reconcile of one cluster.
pub async fn reconcile(cluster: Arc<ParsecCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&cluster, &ctx).await;
    ctx.metrics.observe_reconcile(
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    if result.is_ok() {
        ctx.record(&cluster, false);
    }
    result
}

/// The spec cannot be reconciled: Degraded=True SpecRejected with `reason` (and an event), nothing
/// applied. Nothing to retry until the spec changes.
async fn reject(
    ctx: &Context,
    cluster: &ParsecCluster,
    reason: String,
    now: Timestamp,
) -> Result<Action, Error> {
    tracing::warn!(%reason, "spec rejected");
    let old_status = cluster.status.as_ref();
    let status = status::rejected(old_status, cluster.metadata.generation, &reason, now);
    if old_status != Some(&status) {
        publish(ctx, cluster, EventType::Warning, "SpecRejected", reason).await;
    }
    patch_status(ctx, cluster, &status).await?;
    Ok(Action::await_change())
}

#[tracing::instrument(skip_all, fields(cluster = %cluster.name_any(), namespace = cluster.namespace().unwrap_or_default()))]
async fn reconcile_inner(cluster: &ParsecCluster, ctx: &Context) -> Result<Action, Error> {
    if cluster.meta().deletion_timestamp.is_some() {
        // Every child carries an owner reference: the garbage collector removes them, and the
        // StatefulSets' PVC retention policy decides about the volumes.
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let old_status = cluster.status.as_ref();
    let validated = match validate(cluster) {
        Ok(v) => v,
        Err(errors) => return reject(ctx, cluster, errors.to_string(), now).await,
    };

    // cert-manager installed after the operator started is found when a cluster asks for it.
    let wants_cert_manager = validated
        .spec
        .tls
        .as_ref()
        .is_some_and(|t| t.cert_manager.is_some());
    let mut env = ctx.env.clone();
    env.apis.certificate =
        env.apis.certificate || (wants_cert_manager && discovery::certificates(&ctx.client).await);
    let tls = tls::read(&ctx.client, &validated, env.apis.certificate).await?;
    let access = match &tls {
        TlsState::Waiting(_) => observe::AdminAccess::None,
        ready_or_off => observe::AdminAccess::Call(ctx.admin.as_ref(), ready_or_off.identity()),
    };
    let observed = observe::observe(&ctx.client, access, &validated).await?;
    if let Some(reason) = tls::switch_refused(&validated, &observed) {
        return reject(ctx, cluster, reason, now).await;
    }
    let paused = validated.spec.cluster_operation.reconciliation_paused;
    let mut plan = plan::plan(&validated, old_status, &observed, &now.to_string());

    if paused {
        let status = status::compute(status::StatusInput {
            cluster: &validated,
            observed: &observed,
            members: &plan.members_before,
            operation: old_status.and_then(|s| s.operation.as_ref()),
            old: old_status,
            paused: true,
            tls: &tls,
            now,
        });
        if !old_status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == status::PAUSED && c.status == "True")
        }) {
            publish(
                ctx,
                cluster,
                EventType::Warning,
                "ReconciliationPaused",
                "clusterOperation.reconciliationPaused is set: the operator applies nothing".into(),
            )
            .await;
        }
        patch_status(ctx, cluster, &status).await?;
        return Ok(Action::requeue(IDLE_REQUEUE));
    }
    if let TlsState::Waiting(problem) = &tls {
        return wait_for_tls(ctx, cluster, &validated, &observed, &plan, &tls, problem).await;
    }

    let live_volumes: build::LiveVolumeSizes = observed
        .groups
        .iter()
        .filter_map(|(g, o)| Some((*g, o.volume_size.clone()?)))
        .collect();
    let desired = build::build(&validated, &plan.sizes, &live_volumes, &env, tls.hash())?;
    apply::apply(
        &ctx.client,
        &validated,
        &desired,
        observed.deployment.as_ref(),
    )
    .await?;
    for deleted in apply::delete_orphans(&ctx.client, &validated, &desired, env.apis).await? {
        tracing::info!(object = %deleted, "deleted an object the cluster no longer needs");
        publish(
            ctx,
            cluster,
            EventType::Normal,
            "Deleted",
            format!("deleted {deleted}"),
        )
        .await;
    }

    for grown in volumes::grow(&ctx.client, &validated, &observed).await? {
        publish(ctx, cluster, EventType::Normal, "VolumeExpanding", grown).await;
    }

    // The one disruptive step of this reconcile.
    if let Some(effect) = plan.effect.clone() {
        let label = effect_label(&effect);
        match execute(ctx, &validated.namespace, tls.identity(), &effect).await {
            Ok(()) => {
                ctx.metrics.observe_step(label, true);
                tracing::info!(step = label, ?effect, "operation step done");
            }
            Err(message) => {
                ctx.metrics.observe_step(label, false);
                tracing::warn!(step = label, %message, "operation step failed; retrying");
                let mut retry = plan.retry.clone();
                if let Some(op) = retry.as_mut() {
                    op.message = Some(message.clone());
                }
                plan.operation = retry;
                plan.completed = None;
                plan.members = plan.members_before.clone();
                if let Some(op) = &plan.operation {
                    publish(
                        ctx,
                        cluster,
                        EventType::Warning,
                        "OperationStepFailed",
                        format!("{}: {label} failed: {message}", describe(op)),
                    )
                    .await;
                }
            }
        }
    }
    let previous_op = old_status.and_then(|s| s.operation.as_ref());
    if let Some(op) = &plan.operation {
        if previous_op.map(|p| (p.kind, &p.group, p.node_id))
            != Some((op.kind, &op.group, op.node_id))
        {
            publish(
                ctx,
                cluster,
                EventType::Normal,
                "OperationStarted",
                describe(op),
            )
            .await;
        } else if previous_op.map(|p| p.step) != Some(op.step) {
            publish(
                ctx,
                cluster,
                EventType::Normal,
                "OperationStep",
                format!("{}: now {}", describe(op), op.step.as_str()),
            )
            .await;
        }
    }
    if let Some(done) = &plan.completed {
        publish(
            ctx,
            cluster,
            EventType::Normal,
            "OperationCompleted",
            describe(done),
        )
        .await;
    }

    let status = status::compute(status::StatusInput {
        cluster: &validated,
        observed: &observed,
        members: &plan.members,
        operation: plan.operation.as_ref(),
        old: old_status,
        paused: false,
        tls: &tls,
        now,
    });
    publish_transitions(ctx, cluster, &validated, old_status, &status).await;
    patch_status(ctx, cluster, &status).await?;

    let busy = status.operation.is_some()
        || status.conditions.iter().any(|c| {
            (c.type_ == status::PROGRESSING && c.status == "True")
                || (c.type_ == status::AVAILABLE && c.status == "False")
        });
    Ok(Action::requeue(if busy {
        BUSY_REQUEUE
    } else {
        IDLE_REQUEUE
    }))
}

/// TLS is asked for but its certificate is not usable yet: apply the Certificate (so that
/// cert-manager can issue it), touch no workload, start no operation (a restarted pod could not
/// mount the Secret, and the admin API is unreachable without the certificate), and say why.
async fn wait_for_tls(
    ctx: &Context,
    cluster: &ParsecCluster,
    validated: &ValidatedCluster,
    observed: &observe::Observed,
    plan: &plan::Plan,
    tls: &TlsState,
    problem: &TlsProblem,
) -> Result<Action, Error> {
    if *problem != TlsProblem::CertManagerMissing
        && let Some(certificate) = certificate::certificate(validated)
    {
        apply::apply_dynamic(
            &ctx.client,
            &validated.namespace,
            &certificate_resource(),
            &certificate,
        )
        .await?;
    }
    tracing::info!(%problem, "waiting for the TLS certificate");
    let old_status = cluster.status.as_ref();
    let status = status::compute(status::StatusInput {
        cluster: validated,
        observed,
        members: &plan.members_before,
        operation: old_status.and_then(|s| s.operation.as_ref()),
        old: old_status,
        paused: false,
        tls,
        now: Timestamp::now(),
    });
    publish_transitions(ctx, cluster, validated, old_status, &status).await;
    patch_status(ctx, cluster, &status).await?;
    Ok(Action::requeue(TLS_WAIT_REQUEUE))
}

/// Failed reconciles are retried after a pause; the failure is published as an event.
pub fn error_policy(cluster: Arc<ParsecCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.record(&cluster, true);
    let delay = backoff(failures);
    tracing::warn!(cluster = %cluster.name_any(), %error, failures, retry_in = ?delay, "reconcile failed");
    let note = error.to_string();
    let reason = error.category();
    let ctx2 = ctx.clone();
    tokio::spawn(async move {
        publish(&ctx2, &cluster, EventType::Warning, reason, note).await;
    });
    Action::requeue(delay)
}

/// Runs the controller until SIGTERM/SIGINT.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let clusters = Api::<ParsecCluster>::all(client.clone());
    let config = watcher::Config::default().labels(&format!(
        "{}={}",
        crate::naming::LABEL_MANAGED_BY,
        FIELD_MANAGER
    ));
    let mut controller = Controller::new(clusters, watcher::Config::default())
        .owns(Api::<StatefulSet>::all(client.clone()), config.clone())
        .owns(Api::<Deployment>::all(client.clone()), config.clone())
        .owns(Api::<Service>::all(client.clone()), config.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), config.clone())
        .owns(
            Api::<PodDisruptionBudget>::all(client.clone()),
            config.clone(),
        )
        .owns(
            Api::<HorizontalPodAutoscaler>::all(client.clone()),
            config.clone(),
        )
        .owns(Api::<NetworkPolicy>::all(client.clone()), config.clone());
    // A renewed certificate changes its Certificate's status: reconcile at once to roll the pods.
    if ctx.env.apis.certificate {
        let resource = certificate_resource();
        controller = controller.owns_with(
            Api::<DynamicObject>::all_with(client.clone(), &resource),
            resource,
            config,
        );
    }
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(cluster = %object.name, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile error"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(0), Duration::from_secs(5));
    }
}
