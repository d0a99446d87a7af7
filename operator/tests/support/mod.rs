//! A fake Kubernetes API server (behind kube's tower-test mock service) and a fake Raft data
//! plane sharing one in-memory world, so that the controller-flow tests drive the real reconcile
//! function and assert on the resulting objects, calls and events.
//!
//! The world simulates what the controllers of a real cluster do after each write: a
//! StatefulSet's pods appear (ordinals `0..replicas`, on its update revision, `OnDelete`:
//! existing pods keep their revision until deleted), Deployments report their replicas ready,
//! and server-side apply's ownership of a Deployment's `spec.replicas` (a field that no manager
//! owns any more is removed, so the Deployment falls back to 1 replica).
#![allow(
    clippy::unwrap_used,
    clippy::too_many_arguments,
    clippy::collapsible_if,
    dead_code
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use parsec_operator::admin::{AdminError, MemberState, RaftAdmin, Target};
use parsec_operator::build::{Environment, OptionalApis};
use parsec_operator::controller::{self, Context};
use parsec_operator::crd::ParsecCluster;
use parsec_operator::metrics::Metrics;
use serde_json::{Value, json};

pub const NS: &str = "default";
pub const CR_PREFIX: &str = "apis/parsec.dev/v1alpha1";

/// One Raft group of the fake data plane.
#[derive(Clone, Debug, Default)]
pub struct RaftModel {
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
    pub leader: Option<u64>,
    pub term: u64,
}

#[derive(Default)]
pub struct World {
    /// (api prefix, plural, namespace, name) → object.
    pub objects: BTreeMap<(String, String, String, String), Value>,
    /// Managers owning `spec.replicas` of each Deployment (by name).
    pub replica_owners: BTreeMap<String, BTreeSet<String>>,
    /// Raft groups by StatefulSet name.
    pub raft: BTreeMap<String, RaftModel>,
    /// Every mutating request and data-plane call, in order: `APPLY <manager> <plural>/<name>`,
    /// `DELETE pods/<name>`, `ADD_LEARNER <sts> <node>`, …
    pub log: Vec<String>,
    pub events: Vec<Value>,
    /// Pods kept not ready whatever Raft says (a broken member).
    pub broken_pods: BTreeSet<String>,
    /// Applies of this plural fail with 500 (an API server in trouble).
    pub fail_applies_of: Option<String>,
    /// What the HPA controller wants, reported in the HPA's status.
    pub hpa_desired: Option<i32>,
    next_uid: u64,
    /// At each pod deletion: how many other pods of its group were not ready.
    pub unready_at_delete: Vec<(String, usize)>,
    /// The API server serves cert-manager.io/v1 (discovery answers).
    pub cert_manager_installed: bool,
    /// Data-plane calls made plain and over mutual TLS.
    pub admin_calls_plain: usize,
    pub admin_calls_tls: usize,
}

fn not_found() -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "not found", "reason": "NotFound", "code": 404});
    Response::builder()
        .status(404)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn ok(value: &Value) -> Response<Body> {
    Response::builder()
        .status(200)
        .body(Body::from(serde_json::to_vec(value).unwrap()))
        .unwrap()
}

/// Splits `/api/v1/namespaces/ns/pods/name/status` into (prefix, ns, plural, name, sub).
fn parse_path(
    path: &str,
) -> (
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let prefix_len = if parts[0] == "api" { 2 } else { 3 };
    let prefix = parts[..prefix_len].join("/");
    let rest = &parts[prefix_len..];
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (
            prefix,
            Some(rest[1].to_string()),
            rest[2].to_string(),
            rest.get(3).map(|s| s.to_string()),
            rest.get(4).map(|s| s.to_string()),
        )
    } else {
        (
            prefix,
            None,
            rest[0].to_string(),
            rest.get(1).map(|s| s.to_string()),
            None,
        )
    }
}

fn query(uri: &http::Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            v.replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%2F", "/")
                .replace('+', " ")
        })
    })
}

fn matches(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap();
        object["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn hash(value: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.to_string().hash(&mut h);
    format!("{:08x}", h.finish() as u32)
}

fn kind_of_list(plural: &str) -> &'static str {
    match plural {
        "statefulsets" => "StatefulSetList",
        "pods" => "PodList",
        "deployments" => "DeploymentList",
        "services" => "ServiceList",
        "configmaps" => "ConfigMapList",
        "poddisruptionbudgets" => "PodDisruptionBudgetList",
        "horizontalpodautoscalers" => "HorizontalPodAutoscalerList",
        "networkpolicies" => "NetworkPolicyList",
        "certificates" => "CertificateList",
        _ => "List",
    }
}

impl World {
    fn key(prefix: &str, plural: &str, ns: &str, name: &str) -> (String, String, String, String) {
        (prefix.into(), plural.into(), ns.into(), name.into())
    }

    pub fn get(&self, prefix: &str, plural: &str, name: &str) -> Option<&Value> {
        self.objects.get(&Self::key(prefix, plural, NS, name))
    }

    pub fn sts(&self, name: &str) -> Option<&Value> {
        self.get("apis/apps/v1", "statefulsets", name)
    }

    pub fn deployment(&self, name: &str) -> Option<&Value> {
        self.get("apis/apps/v1", "deployments", name)
    }

    pub fn names(&self, plural: &str) -> Vec<String> {
        self.objects
            .keys()
            .filter(|(_, p, _, _)| p == plural)
            .map(|(_, _, _, n)| n.clone())
            .collect()
    }

    pub fn cluster(&self, name: &str) -> ParsecCluster {
        serde_json::from_value(self.get(CR_PREFIX, "parsecclusters", name).unwrap().clone())
            .unwrap()
    }

    /// Creates or replaces the ParsecCluster (as `kubectl apply` would: spec changes bump the
    /// generation, status is kept).
    pub fn put_cluster(&mut self, cluster: &ParsecCluster) {
        let key = Self::key(
            CR_PREFIX,
            "parsecclusters",
            NS,
            cluster.metadata.name.as_deref().unwrap(),
        );
        let mut value = serde_json::to_value(cluster).unwrap();
        let (generation, status, uid) = match self.objects.get(&key) {
            Some(old) => {
                let bump = old["spec"] != value["spec"];
                let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
                (
                    if bump { g + 1 } else { g },
                    old.get("status").cloned(),
                    old["metadata"]["uid"].clone(),
                )
            }
            None => (1, None, json!("cluster-uid")),
        };
        value["metadata"]["generation"] = json!(generation);
        value["metadata"]["namespace"] = json!(NS);
        value["metadata"]["uid"] = uid;
        match status {
            Some(s) => value["status"] = s,
            None => {
                value.as_object_mut().unwrap().remove("status");
            }
        }
        self.objects.insert(key, value);
    }

    /// Creates or replaces a TLS Secret (what cert-manager or the user writes).
    pub fn put_secret(&mut self, name: &str, ca: &str, cert: &str, key: &str) {
        use k8s_openapi::ByteString;
        let data = [("ca.crt", ca), ("tls.crt", cert), ("tls.key", key)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect();
        let secret = k8s_openapi::api::core::v1::Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(NS.into()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(data),
            ..Default::default()
        };
        // Serialised as the API server sends it: data base64-encoded.
        self.objects.insert(
            Self::key("api/v1", "secrets", NS, name),
            serde_json::to_value(&secret).unwrap(),
        );
    }

    pub fn edit_cluster(&mut self, name: &str, edit: impl FnOnce(&mut ParsecCluster)) {
        let mut cluster = self.cluster(name);
        edit(&mut cluster);
        self.put_cluster(&cluster);
    }

    fn pod_ready(&self, pod: &Value) -> bool {
        let name = pod["metadata"]["name"].as_str().unwrap();
        if self.broken_pods.contains(name) {
            return false;
        }
        let Some(component) = pod["metadata"]["labels"]["app.kubernetes.io/component"].as_str()
        else {
            return true;
        };
        if component == "agent" {
            return true;
        }
        let (sts, ordinal) = name.rsplit_once('-').unwrap();
        let ordinal: u64 = ordinal.parse().unwrap();
        self.raft.get(sts).is_some_and(|g| {
            g.leader.is_some() && (g.voters.contains(&ordinal) || g.learners.contains(&ordinal))
        })
    }

    /// Refreshes pod readiness from the Raft model and broken pods.
    fn refresh_pods(&mut self) {
        let keys: Vec<_> = self
            .objects
            .keys()
            .filter(|k| k.1 == "pods")
            .cloned()
            .collect();
        for key in keys {
            let pod = self.objects[&key].clone();
            let ready = self.pod_ready(&pod);
            let pod = self.objects.get_mut(&key).unwrap();
            pod["status"] = json!({
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "containerStatuses": [{"name": "parsec", "ready": ready, "restartCount": 0,
                    "image": "x", "imageID": "x", "state": {"running": {}}}],
            });
        }
    }

    /// What the StatefulSet, Deployment and HPA controllers would do now.
    pub fn settle(&mut self) {
        let stateful_sets: Vec<Value> = self
            .objects
            .iter()
            .filter(|(k, _)| k.1 == "statefulsets")
            .map(|(_, v)| v.clone())
            .collect();
        for sts in stateful_sets {
            let name = sts["metadata"]["name"].as_str().unwrap().to_string();
            let replicas = sts["spec"]["replicas"].as_u64().unwrap_or(1);
            let revision = format!("{name}-{}", hash(&sts["spec"]["template"]));
            let key = Self::key("apis/apps/v1", "statefulsets", NS, &name);
            self.objects.get_mut(&key).unwrap()["status"] = json!({"replicas": replicas, "updateRevision": revision, "currentRevision": revision});
            let mut created = Vec::new();
            for ordinal in 0..replicas {
                let pod_name = format!("{name}-{ordinal}");
                let pod_key = Self::key("api/v1", "pods", NS, &pod_name);
                if self.objects.contains_key(&pod_key) {
                    continue;
                }
                let mut labels = sts["spec"]["template"]["metadata"]["labels"].clone();
                labels["controller-revision-hash"] = json!(revision);
                labels["apps.kubernetes.io/pod-index"] = json!(ordinal.to_string());
                let claim = format!("data-{pod_name}");
                let claim_key = Self::key("api/v1", "persistentvolumeclaims", NS, &claim);
                #[allow(clippy::map_entry)]
                if !self.objects.contains_key(&claim_key) {
                    let size = sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"].clone();
                    self.objects.insert(
                        claim_key,
                        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                            "metadata": {"name": claim, "namespace": NS},
                            "spec": {"resources": {"requests": {"storage": size}}}}),
                    );
                }
                self.objects.insert(
                    pod_key,
                    json!({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": pod_name, "namespace": NS, "labels": labels},
                        "spec": sts["spec"]["template"]["spec"]}),
                );
                created.push(ordinal);
            }
            // Scale-in removes the highest ordinals.
            let doomed: Vec<_> = self
                .objects
                .keys()
                .filter(|k| {
                    k.1 == "pods"
                        && k.3.rsplit_once('-').is_some_and(|(s, o)| {
                            s == name && o.parse::<u64>().is_ok_and(|o| o >= replicas)
                        })
                })
                .cloned()
                .collect();
            for key in doomed {
                self.objects.remove(&key);
            }
            // A brand-new group bootstraps with every member it starts with; node 0 leads.
            if !self.raft.contains_key(&name) && !created.is_empty() {
                self.raft.insert(
                    name.clone(),
                    RaftModel {
                        voters: created.iter().copied().collect(),
                        learners: BTreeSet::new(),
                        leader: Some(0),
                        term: 1,
                    },
                );
            }
        }
        // A group without a leader elects one of its voters whose pod runs (a restarted
        // single-member group elects itself).
        let running: BTreeSet<String> = self
            .objects
            .keys()
            .filter(|k| k.1 == "pods")
            .map(|k| k.3.clone())
            .collect();
        for (sts, group) in self.raft.iter_mut().filter(|(_, g)| g.leader.is_none()) {
            if let Some(&voter) = group
                .voters
                .iter()
                .find(|v| running.contains(&format!("{sts}-{v}")))
            {
                group.leader = Some(voter);
                group.term += 1;
            }
        }
        let deployments: Vec<_> = self
            .objects
            .keys()
            .filter(|k| k.1 == "deployments")
            .cloned()
            .collect();
        for key in deployments {
            let d = self.objects.get_mut(&key).unwrap();
            let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
            d["status"] = json!({"replicas": replicas, "readyReplicas": replicas});
        }
        let hpas: Vec<_> = self
            .objects
            .keys()
            .filter(|k| k.1 == "horizontalpodautoscalers")
            .cloned()
            .collect();
        for key in hpas {
            let desired = self.hpa_desired.unwrap_or(1);
            self.objects.get_mut(&key).unwrap()["status"] =
                json!({"desiredReplicas": desired, "currentReplicas": desired});
        }
        self.refresh_pods();
    }

    /// The HPA controller writes the Deployment's replicas through the scale subresource: an
    /// Update, which takes ownership of the field.
    pub fn hpa_scales(&mut self, deployment: &str, replicas: i32) {
        self.hpa_desired = Some(replicas);
        let key = Self::key("apis/apps/v1", "deployments", NS, deployment);
        self.objects.get_mut(&key).unwrap()["spec"]["replicas"] = json!(replicas);
        self.replica_owners.insert(
            deployment.into(),
            BTreeSet::from(["kube-controller-manager".to_string()]),
        );
        self.write_managed_fields(deployment);
        self.settle();
    }

    fn write_managed_fields(&mut self, deployment: &str) {
        let owners = self
            .replica_owners
            .get(deployment)
            .cloned()
            .unwrap_or_default();
        let key = Self::key("apis/apps/v1", "deployments", NS, deployment);
        if let Some(d) = self.objects.get_mut(&key) {
            let entries: Vec<Value> = owners
                .iter()
                .map(|m| {
                    let operation = if m == "kube-controller-manager" {
                        "Update"
                    } else {
                        "Apply"
                    };
                    json!({"manager": m, "operation": operation, "apiVersion": "apps/v1",
                        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}})
                })
                .collect();
            d["metadata"]["managedFields"] = json!(entries);
        }
    }

    fn apply(
        &mut self,
        prefix: &str,
        plural: &str,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        manager: &str,
        body: Value,
    ) -> Value {
        let key = Self::key(prefix, plural, ns, name);
        if sub == Some("status") {
            self.log.push(format!("STATUS {plural}/{name}"));
            let object = self.objects.get_mut(&key).unwrap();
            object["status"] = body["status"].clone();
            return object.clone();
        }
        if plural == "persistentvolumeclaims" {
            self.log.push(format!("EXPAND {name}"));
            let claim = self.objects.get_mut(&key).unwrap();
            claim["spec"]["resources"]["requests"]["storage"] =
                body["spec"]["resources"]["requests"]["storage"].clone();
            return claim.clone();
        }
        self.log.push(format!("APPLY {manager} {plural}/{name}"));
        let old = self.objects.get(&key).cloned();
        if plural == "statefulsets" {
            if let Some(old) = &old {
                // The API server forbids changing a StatefulSet's volume claim templates.
                assert_eq!(
                    old["spec"]["volumeClaimTemplates"], body["spec"]["volumeClaimTemplates"],
                    "StatefulSet.spec.volumeClaimTemplates is immutable (the API server answers 422)"
                );
            }
        }
        let mut object = match &old {
            // A partial apply by another manager (the hand-over) only sets what it names.
            Some(old) if manager != "parsec-operator" => {
                let mut merged = old.clone();
                if let Some(r) = body["spec"].get("replicas") {
                    merged["spec"]["replicas"] = r.clone();
                }
                merged
            }
            _ => body.clone(),
        };
        if plural == "deployments" {
            let owners = self.replica_owners.entry(name.into()).or_default();
            if body["spec"].get("replicas").is_some() {
                owners.insert(manager.into());
            } else {
                owners.remove(manager);
                if owners.is_empty() {
                    // Nobody owns the field any more: it is removed (defaulting to 1).
                    object["spec"].as_object_mut().unwrap().remove("replicas");
                } else if let Some(r) = old.as_ref().and_then(|o| o["spec"].get("replicas")) {
                    object["spec"]["replicas"] = r.clone();
                }
            }
        }
        self.next_uid += 1;
        object["metadata"]["uid"] = old
            .as_ref()
            .map(|o| o["metadata"]["uid"].clone())
            .unwrap_or(json!(format!("uid-{}", self.next_uid)));
        object["metadata"]["resourceVersion"] = json!(self.next_uid.to_string());
        if let Some(status) = old.as_ref().and_then(|o| o.get("status")) {
            object["status"] = status.clone();
        }
        self.objects.insert(key, object);
        if plural == "deployments" {
            self.write_managed_fields(name);
        }
        self.settle();
        self.objects[&Self::key(prefix, plural, ns, name)].clone()
    }

    fn delete(&mut self, prefix: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
        if plural == "pods" {
            let (sts, _) = name.rsplit_once('-').unwrap();
            let unready = self
                .objects
                .iter()
                .filter(|(k, v)| {
                    k.1 == "pods"
                        && k.3 != name
                        && k.3.rsplit_once('-').unwrap().0 == sts
                        && v["status"]["conditions"][0]["status"] != "True"
                })
                .count();
            self.unready_at_delete.push((name.to_string(), unready));
        }
        self.log.push(format!("DELETE {plural}/{name}"));
        let removed = self.objects.remove(&Self::key(prefix, plural, ns, name));
        if plural == "pods" && removed.is_some() {
            // A crashed leader: the others elect after a timeout.
            let (sts, ordinal) = name.rsplit_once('-').unwrap();
            let ordinal: u64 = ordinal.parse().unwrap();
            if let Some(g) = self.raft.get_mut(sts) {
                if g.leader == Some(ordinal) {
                    g.leader = g.voters.iter().copied().find(|v| *v != ordinal);
                    g.term += 1;
                }
            }
        }
        self.settle();
        removed
    }

    fn handle(&mut self, method: &http::Method, uri: &http::Uri, body: &[u8]) -> Response<Body> {
        self.refresh_pods();
        // Discovery of an API group version: `/apis/<group>/<version>`.
        if uri.path().trim_matches('/').split('/').count() == 3 {
            return match uri.path() {
                "/apis/cert-manager.io/v1" if self.cert_manager_installed => ok(&json!({
                    "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "cert-manager.io/v1",
                    "resources": [{"name": "certificates", "singularName": "certificate",
                        "namespaced": true, "kind": "Certificate", "verbs": ["get", "list", "watch", "create", "patch", "delete"]}]})),
                _ => not_found(),
            };
        }
        let (prefix, ns, plural, name, sub) = parse_path(uri.path());
        let ns = ns.unwrap_or_else(|| NS.to_string());
        if plural == "events" {
            let value: Value = serde_json::from_slice(body).unwrap_or(json!({}));
            self.events.push(value.clone());
            return ok(&value);
        }
        match (method.as_str(), name) {
            ("GET", None) => {
                let selector = query(uri, "labelSelector").unwrap_or_default();
                let items: Vec<Value> = self
                    .objects
                    .iter()
                    .filter(|(k, v)| {
                        k.0 == prefix && k.1 == plural && k.2 == ns && matches(v, &selector)
                    })
                    .map(|(_, v)| v.clone())
                    .collect();
                ok(&json!({"apiVersion": "v1", "kind": kind_of_list(&plural),
                    "metadata": {"resourceVersion": "1"}, "items": items}))
            }
            ("GET", Some(name)) => match self.objects.get(&Self::key(&prefix, &plural, &ns, &name))
            {
                Some(v) => ok(v),
                None => not_found(),
            },
            ("PATCH", Some(_)) if self.fail_applies_of.as_deref() == Some(plural.as_str()) => {
                let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500});
                Response::builder()
                    .status(500)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap()
            }
            ("PATCH", Some(name)) => {
                let manager = query(uri, "fieldManager").unwrap_or_default();
                let body: Value = serde_json::from_slice(body).unwrap();
                let object =
                    self.apply(&prefix, &plural, &ns, &name, sub.as_deref(), &manager, body);
                ok(&object)
            }
            ("DELETE", Some(name)) => match self.delete(&prefix, &plural, &ns, &name) {
                Some(v) => ok(&v),
                None => not_found(),
            },
            (m, n) => panic!("unexpected request {m} {} ({n:?})", uri),
        }
    }

    fn member_state(&self, sts: &str, ordinal: u64) -> Result<MemberState, AdminError> {
        let addr = format!("{sts}-{ordinal}");
        if !self
            .objects
            .contains_key(&Self::key("api/v1", "pods", NS, &addr))
        {
            return Err(AdminError::Unreachable {
                addr,
                message: "no pod".into(),
            });
        }
        let g = self.raft.get(sts).cloned().unwrap_or_default();
        let member = g.voters.contains(&ordinal) || g.learners.contains(&ordinal);
        if !member {
            return Ok(MemberState {
                node_id: ordinal,
                role: "learner".into(),
                ..MemberState::default()
            });
        }
        let role = if g.leader == Some(ordinal) {
            "leader"
        } else if g.voters.contains(&ordinal) {
            "follower"
        } else {
            "learner"
        };
        Ok(MemberState {
            node_id: ordinal,
            role: role.into(),
            leader_id: g.leader,
            term: g.term,
            voters: g.voters.iter().copied().collect(),
            learners: g.learners.iter().copied().collect(),
            applied_index: Some(10),
        })
    }
}

/// `demo-shard-0-1.demo-shard-0.default.svc:7100` → (`demo-shard-0`, 1).
fn parse_addr(addr: &str) -> (String, u64) {
    let pod = addr.split('.').next().unwrap();
    let (sts, ordinal) = pod.rsplit_once('-').unwrap();
    (sts.to_string(), ordinal.parse().unwrap())
}

/// The fake data plane: answers from the world's Raft model.
pub struct FakeAdmin(pub Arc<Mutex<World>>);

impl FakeAdmin {
    fn check_leader(world: &World, leader: &str) -> Result<(String, u64), AdminError> {
        let (sts, ordinal) = parse_addr(leader);
        let g = world.raft.get(&sts).cloned().unwrap_or_default();
        if g.leader != Some(ordinal) {
            return Err(AdminError::NotLeader {
                addr: leader.into(),
                leader: format!("{:?}", g.leader),
            });
        }
        Ok((sts, ordinal))
    }
}

fn count_call(world: &mut World, target: Target<'_>) {
    if target.tls.is_some() {
        world.admin_calls_tls += 1;
    } else {
        world.admin_calls_plain += 1;
    }
}

#[async_trait]
impl RaftAdmin for FakeAdmin {
    async fn status(&self, member: Target<'_>) -> Result<MemberState, AdminError> {
        let mut world = self.0.lock().unwrap();
        count_call(&mut world, member);
        let (sts, ordinal) = parse_addr(member.addr);
        world.member_state(&sts, ordinal)
    }

    async fn add_learner(
        &self,
        leader: Target<'_>,
        node_id: u64,
        node_addr: &str,
    ) -> Result<(), AdminError> {
        let mut world = self.0.lock().unwrap();
        count_call(&mut world, leader);
        let (sts, _) = Self::check_leader(&world, leader.addr)?;
        let (_, ordinal) = parse_addr(node_addr);
        assert_eq!(ordinal, node_id, "node id = ordinal");
        if !world.objects.contains_key(&World::key(
            "api/v1",
            "pods",
            NS,
            &format!("{sts}-{node_id}"),
        )) {
            return Err(AdminError::Unreachable {
                addr: node_addr.into(),
                message: "no pod".into(),
            });
        }
        world.log.push(format!("ADD_LEARNER {sts} {node_id}"));
        let g = world.raft.get_mut(&sts).unwrap();
        if !g.voters.contains(&node_id) {
            g.learners.insert(node_id);
        }
        world.refresh_pods();
        Ok(())
    }

    async fn promote_learner(&self, leader: Target<'_>, node_id: u64) -> Result<(), AdminError> {
        let mut world = self.0.lock().unwrap();
        count_call(&mut world, leader);
        let (sts, _) = Self::check_leader(&world, leader.addr)?;
        world.log.push(format!("PROMOTE {sts} {node_id}"));
        let g = world.raft.get_mut(&sts).unwrap();
        g.learners.remove(&node_id);
        g.voters.insert(node_id);
        world.refresh_pods();
        Ok(())
    }

    async fn remove_member(&self, leader: Target<'_>, node_id: u64) -> Result<(), AdminError> {
        let mut world = self.0.lock().unwrap();
        count_call(&mut world, leader);
        let (sts, leader_ordinal) = Self::check_leader(&world, leader.addr)?;
        world.log.push(format!("REMOVE {sts} {node_id}"));
        let g = world.raft.get_mut(&sts).unwrap();
        g.voters.remove(&node_id);
        g.learners.remove(&node_id);
        if node_id == leader_ordinal {
            g.leader = g.voters.iter().next().copied();
            g.term += 1;
        }
        world.refresh_pods();
        Ok(())
    }
}

/// A world, a client talking to it, and the controller context.
pub struct Harness {
    pub world: Arc<Mutex<World>>,
    pub ctx: Arc<Context>,
    server: tokio::task::JoinHandle<()>,
}

/// Where the flows' operator runs.
pub const OPERATOR_NS: &str = "parsec-system";

impl Harness {
    pub fn new(apis: OptionalApis) -> Self {
        let world = Arc::new(Mutex::new(World::default()));
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server_world = world.clone();
        let server = tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap();
                let response =
                    server_world
                        .lock()
                        .unwrap()
                        .handle(&parts.method, &parts.uri, &bytes);
                send.send_response(response);
            }
        });
        let client = Client::new(service, NS);
        let ctx = Arc::new(Context::new(
            client,
            Arc::new(FakeAdmin(world.clone())),
            Arc::new(Metrics::new().unwrap()),
            Environment {
                apis,
                operator_namespace: Some(OPERATOR_NS.into()),
            },
        ));
        Harness { world, ctx, server }
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }

    /// One reconcile that must fail; returns the retry delay the error policy picks.
    pub async fn failing_reconcile(&self, name: &str) -> kube::runtime::controller::Action {
        let cluster = Arc::new(self.world().cluster(name));
        let error = controller::reconcile(cluster.clone(), self.ctx.clone())
            .await
            .unwrap_err();
        controller::error_policy(cluster, &error, self.ctx.clone())
    }

    /// One reconcile of cluster `name` as stored in the world.
    pub async fn reconcile(&self, name: &str) -> kube::runtime::controller::Action {
        let cluster = self.world().cluster(name);
        controller::reconcile(Arc::new(cluster), self.ctx.clone())
            .await
            .unwrap()
    }

    /// Reconciles until no operation is in flight and nothing is progressing; returns how many
    /// reconciles it took. Panics after `limit`.
    /// A status describes what a reconcile observed before it applied anything, so "quiet"
    /// must hold for two reconciles in a row.
    pub async fn converge(&self, name: &str, limit: usize) -> usize {
        let mut quiet = 0;
        for i in 1..=limit {
            self.reconcile(name).await;
            if self.quiet(name) {
                quiet += 1;
                if quiet == 2 {
                    return i;
                }
            } else {
                quiet = 0;
            }
        }
        let cluster = self.world().cluster(name);
        panic!(
            "no convergence after {limit} reconciles: {:#?}",
            cluster.status
        );
    }

    /// No operation in flight, nothing progressing, no member on an old revision.
    pub fn quiet(&self, name: &str) -> bool {
        let status = self.world().cluster(name).status.unwrap();
        let progressing = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Progressing" && c.status == "True");
        let outdated: i32 = status
            .shards
            .iter()
            .chain(status.ticket_machine.iter())
            .map(|g| g.outdated_pods)
            .sum();
        status.operation.is_none() && !progressing && outdated == 0
    }

    pub fn condition(&self, name: &str, type_: &str) -> (String, String, Option<i64>) {
        let cluster = self.world().cluster(name);
        let c = cluster
            .status
            .unwrap()
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .unwrap();
        (c.status, c.reason, c.observed_generation)
    }

    /// Log lines starting with one of `prefixes`, from position `from`.
    pub fn log(&self, from: usize, prefixes: &[&str]) -> Vec<String> {
        self.world().log[from..]
            .iter()
            .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
            .cloned()
            .collect()
    }

    pub fn event_reasons(&self) -> Vec<String> {
        self.world()
            .events
            .iter()
            .filter_map(|e| e["reason"].as_str().map(String::from))
            .collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A ParsecCluster from a spec fragment (image added).
pub fn cluster(name: &str, spec: &str) -> ParsecCluster {
    let yaml = format!("image: {{repository: parsec, tag: '1'}}\n{spec}\n");
    let mut c = ParsecCluster::new(name, serde_yaml::from_str(&yaml).unwrap());
    c.metadata.namespace = Some(NS.into());
    c
}
