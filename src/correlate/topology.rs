//! Topology from kube-state-metrics series: pod → node, pod → ReplicaSet →
//! Deployment (or StatefulSet/DaemonSet), node → zone, Service → the
//! workloads whose pods its endpoints list.
//!
//! Offline (`replay --topology DIR`, tests) the series come from a folder of
//! `/api/v1/query` response bodies named `<metric>.json`; live they come from a
//! Prometheus-compatible API (Prometheus, Thanos Query, VictoriaMetrics) and are
//! refreshed periodically. Missing, stale or malformed topology never stops
//! correlation: it degrades to what the alert labels say, with a warning.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigErrors, PromDuration, Secret, SecretRef, ValidateCtx};
use crate::domain::EntityKind;

/// The metrics the topology is built from, one file (or query) each.
pub const TOPOLOGY_METRICS: [&str; 4] = [
    "kube_pod_info",
    "kube_pod_owner",
    "kube_replicaset_owner",
    "kube_node_labels",
];

/// The metrics that say which pods back each Service. They are optional: a
/// folder or a kube-state-metrics without them falls back to names.
/// `kube_endpointslice_labels` carries the Service's name only where
/// kube-state-metrics exports the `kubernetes.io/service-name` label
/// (`--metric-labels-allowlist`); otherwise the slice's generated name
/// (`<service>-<5 characters>`) gives it.
pub const SERVICE_METRICS: [&str; 3] = [
    "kube_endpointslice_endpoints",
    "kube_endpointslice_labels",
    "kube_endpoint_address",
];

/// Kubernetes' SafeEncodeString alphabet (generated name suffixes): no
/// vowels, no 0/1/3.
const SAFE_ENCODE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Node labels that carry the zone, newest first.
const ZONE_LABELS: [&str; 2] = [
    "label_topology_kubernetes_io_zone",
    "label_failure_domain_beta_kubernetes_io_zone",
];

/// Where live topology comes from (kube-state-metrics series in a
/// Prometheus-compatible query API). Without `url`, correlation uses alert
/// labels only.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TopologyConfig {
    /// Base URL of a Prometheus-compatible API, e.g. `http://thanos-query:9090`.
    /// Series must carry the `cluster` label to be told apart fleet-wide.
    pub url: Option<String>,
    /// Bearer token for the query API.
    pub bearer_token: Option<Secret>,
    /// File holding the bearer token.
    pub bearer_token_file: Option<String>,
    /// Environment variable holding the bearer token.
    pub bearer_token_env: Option<String>,
    /// How often the topology is fetched again.
    pub refresh_interval: PromDuration,
    /// Timeout for each query.
    pub timeout: PromDuration,
    /// Topology older than this is treated as stale: a warning is logged and
    /// `stormcast_correlate_topology_stale` is set, but it is still used.
    pub max_age: PromDuration,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            url: None,
            bearer_token: None,
            bearer_token_file: None,
            bearer_token_env: None,
            refresh_interval: PromDuration::mins(5),
            timeout: PromDuration::secs(10),
            max_age: PromDuration::mins(30),
        }
    }
}

impl TopologyConfig {
    pub fn validate(&self, path: &str, ctx: &ValidateCtx, errs: &mut ConfigErrors) {
        if let Some(url) = &self.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                errs.push(format!("{path}.url"), "must be an http:// or https:// URL");
            }
        }
        if self.refresh_interval.is_zero() {
            errs.push(format!("{path}.refresh_interval"), "must be greater than 0");
        }
        if self.timeout.is_zero() {
            errs.push(format!("{path}.timeout"), "must be greater than 0");
        }
        self.token(&format!("{path}.bearer_token"), ctx, errs);
    }

    fn token(&self, path: &str, ctx: &ValidateCtx, errs: &mut ConfigErrors) -> Option<Secret> {
        SecretRef {
            inline: self.bearer_token.as_ref(),
            file: self.bearer_token_file.as_deref(),
            env: self.bearer_token_env.as_deref(),
        }
        .resolve(path, &ctx.base_dir, errs)
    }
}

/// Problems reading topology. None of them is fatal to correlation.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("{metric}: {message}")]
    Malformed { metric: String, message: String },
    #[error("{metric}: {source}")]
    Io {
        metric: String,
        source: std::io::Error,
    },
    #[error("{metric}: query failed: {message}")]
    Query { metric: String, message: String },
}

#[derive(Debug, Deserialize)]
struct QueryResponse {
    status: String,
    #[serde(default)]
    data: Option<QueryData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct QueryData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Sample>,
}

#[derive(Debug, Deserialize)]
struct Sample {
    metric: HashMap<String, String>,
}

type NsKey = (String, String, String);

/// The owner of a pod or ReplicaSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub kind: EntityKind,
    pub name: String,
}

/// How stormcast knows which workload serves a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedVia {
    /// Declared in `rules/` (`services[].workload`).
    Declared,
    /// The Service's EndpointSlices list the workload's pods
    /// (`kube_endpointslice_endpoints`).
    EndpointSlices,
    /// The Service's Endpoints list the workload's pods' IPs
    /// (`kube_endpoint_address` joined with `kube_pod_info{pod_ip}`).
    Endpoints,
    /// No endpoint series: the workload of the Service's own name.
    SameName,
}

impl ServedVia {
    /// How the link was made, for explanations.
    pub fn describe(self) -> &'static str {
        match self {
            ServedVia::Declared => "declared in rules",
            ServedVia::EndpointSlices => "its EndpointSlices list the pods",
            ServedVia::Endpoints => "its Endpoints list the pods",
            ServedVia::SameName => "same name, no endpoint series",
        }
    }
}

/// A workload serving a Service, from the Service's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub kind: EntityKind,
    pub name: String,
    /// How many of the Service's endpoint pods it owns.
    pub pods: usize,
    pub via: ServedVia,
}

/// Service ↔ workload links, computed once from the endpoint series.
#[derive(Debug, Clone, Default)]
struct Backends {
    /// The workloads serving each Service, most pods first.
    by_service: HashMap<NsKey, Vec<Backend>>,
    /// The Services each workload serves, by name.
    by_workload: HashMap<NsKey, Vec<String>>,
}

/// What kube-state-metrics says about the fleet's layout. Keys are
/// `(cluster, namespace, name)`; series without a `cluster` label are stored
/// under the empty cluster and match any cluster.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    pod_node: HashMap<NsKey, String>,
    pod_owner: HashMap<NsKey, Owner>,
    rs_owner: HashMap<NsKey, Owner>,
    node_zone: HashMap<(String, String), String>,
    node_pods: HashMap<(String, String), usize>,
    zone_nodes: HashMap<(String, String), usize>,
    /// The nodes a DaemonSet has pods on (`kube_pod_owner` joined with
    /// `kube_pod_info`).
    daemonset_nodes: HashMap<NsKey, Vec<String>>,
    /// The pods holding each IP (`kube_pod_info{pod_ip}`), keyed
    /// `(cluster, ip)`. Host-network pods share their node's IP and are
    /// left out.
    pod_ips: HashMap<(String, String), Vec<(String, String)>>,
    /// The addresses of each Service's Endpoints (`kube_endpoint_address`).
    endpoint_ips: HashMap<NsKey, Vec<String>>,
    /// The pods each EndpointSlice lists, as `(namespace, pod)`.
    slice_pods: HashMap<NsKey, Vec<(String, String)>>,
    /// The Service each EndpointSlice belongs to, where its labels say.
    slice_service: HashMap<NsKey, String>,
    /// Service ↔ workload links, computed on first use after the series
    /// change.
    backends: OnceLock<Backends>,
    /// Unix seconds of the fetch, when known.
    pub fetched_at: Option<i64>,
}

fn owner_kind(kind: &str) -> Option<EntityKind> {
    Some(match kind {
        "ReplicaSet" => EntityKind::ReplicaSet,
        "Deployment" => EntityKind::Deployment,
        "StatefulSet" => EntityKind::StatefulSet,
        "DaemonSet" => EntityKind::DaemonSet,
        "Job" | "CronJob" => EntityKind::Job,
        _ => return None,
    })
}

impl Topology {
    pub fn is_empty(&self) -> bool {
        self.pod_node.is_empty() && self.pod_owner.is_empty() && self.node_zone.is_empty()
    }

    /// Number of pods, owners and nodes known, for logs.
    pub fn size(&self) -> (usize, usize, usize) {
        (
            self.pod_node.len(),
            self.pod_owner.len(),
            self.node_zone.len(),
        )
    }

    fn key(cluster: &str, ns: &str, name: &str) -> NsKey {
        (cluster.to_owned(), ns.to_owned(), name.to_owned())
    }

    fn lookup<'a, V>(
        map: &'a HashMap<NsKey, V>,
        cluster: &str,
        ns: &str,
        name: &str,
    ) -> Option<&'a V> {
        // Looking up builds owned keys: skip it for a map never filled.
        if map.is_empty() {
            return None;
        }
        map.get(&Self::key(cluster, ns, name))
            .or_else(|| map.get(&Self::key("", ns, name)))
    }

    pub fn pod_node(&self, cluster: &str, ns: &str, pod: &str) -> Option<&str> {
        Self::lookup(&self.pod_node, cluster, ns, pod).map(String::as_str)
    }

    /// The workload owning a pod, following a ReplicaSet to its Deployment.
    pub fn pod_workload(&self, cluster: &str, ns: &str, pod: &str) -> Option<Owner> {
        let owner = Self::lookup(&self.pod_owner, cluster, ns, pod)?;
        if owner.kind == EntityKind::ReplicaSet {
            if let Some(dep) = Self::lookup(&self.rs_owner, cluster, ns, &owner.name) {
                return Some(dep.clone());
            }
        }
        Some(owner.clone())
    }

    pub fn node_zone(&self, cluster: &str, node: &str) -> Option<&str> {
        if self.node_zone.is_empty() {
            return None;
        }
        self.node_zone
            .get(&(cluster.to_owned(), node.to_owned()))
            .or_else(|| self.node_zone.get(&(String::new(), node.to_owned())))
            .map(String::as_str)
    }

    /// Whether the name is a node the topology knows.
    pub fn is_node(&self, cluster: &str, node: &str) -> bool {
        !self.node_pods.is_empty()
            && self
                .node_pods
                .contains_key(&(cluster.to_owned(), node.to_owned()))
            || self.node_zone(cluster, node).is_some()
    }

    pub fn pods_on_node(&self, cluster: &str, node: &str) -> usize {
        if self.node_pods.is_empty() {
            return 0;
        }
        self.node_pods
            .get(&(cluster.to_owned(), node.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// The nodes DaemonSet `name` runs a pod on.
    pub fn daemonset_nodes(&self, cluster: &str, ns: &str, name: &str) -> &[String] {
        Self::lookup(&self.daemonset_nodes, cluster, ns, name).map_or(&[], Vec::as_slice)
    }

    /// Records the node of a DaemonSet's pod once both its owner and its
    /// node are known (the two series arrive in either order).
    fn place_daemonset_pod(&mut self, cluster: &str, ns: &str, pod: &str) {
        let k = Self::key(cluster, ns, pod);
        let (Some(owner), Some(node)) = (self.pod_owner.get(&k), self.pod_node.get(&k)) else {
            return;
        };
        if owner.kind != EntityKind::DaemonSet {
            return;
        }
        let nodes = self
            .daemonset_nodes
            .entry(Self::key(cluster, ns, &owner.name))
            .or_default();
        if !nodes.contains(node) {
            nodes.push(node.clone());
        }
    }

    /// The workloads whose pods Service `svc`'s endpoints list, most pods
    /// first; empty when no endpoint series name the Service.
    pub fn service_backends(&self, cluster: &str, ns: &str, svc: &str) -> &[Backend] {
        Self::lookup(&self.backends().by_service, cluster, ns, svc).map_or(&[], Vec::as_slice)
    }

    /// The Services whose endpoints list pods of `workload`.
    pub fn workload_services(&self, cluster: &str, ns: &str, workload: &str) -> &[String] {
        Self::lookup(&self.backends().by_workload, cluster, ns, workload).map_or(&[], Vec::as_slice)
    }

    fn backends(&self) -> &Backends {
        self.backends.get_or_init(|| self.link_services())
    }

    /// Joins endpoints to pods and pods to their workloads. EndpointSlices
    /// name their pods; Endpoints give IPs, matched to `kube_pod_info`'s
    /// `pod_ip` in the same cluster and namespace. Where both exist for a
    /// Service, its slices are used.
    fn link_services(&self) -> Backends {
        let mut pods_of: HashMap<NsKey, (Vec<(String, String)>, ServedVia)> = HashMap::new();
        for ((c, ns, slice), pods) in &self.slice_pods {
            let k = (c.clone(), ns.clone(), slice.clone());
            let svc = match self.slice_service.get(&k) {
                Some(s) => s.clone(),
                None => match service_of_slice(slice) {
                    Some(s) => s.to_owned(),
                    None => continue,
                },
            };
            pods_of
                .entry((c.clone(), ns.clone(), svc))
                .or_insert_with(|| (Vec::new(), ServedVia::EndpointSlices))
                .0
                .extend(pods.iter().cloned());
        }
        for ((c, ns, svc), ips) in &self.endpoint_ips {
            let k = (c.clone(), ns.clone(), svc.clone());
            if pods_of.contains_key(&k) {
                continue;
            }
            let mut pods = Vec::new();
            for ip in ips {
                let holders = self
                    .pod_ips
                    .get(&(c.clone(), ip.clone()))
                    .or_else(|| self.pod_ips.get(&(String::new(), ip.clone())));
                for (pns, pod) in holders.into_iter().flatten() {
                    if pns == ns {
                        pods.push((pns.clone(), pod.clone()));
                    }
                }
            }
            if !pods.is_empty() {
                pods_of.insert(k, (pods, ServedVia::Endpoints));
            }
        }
        let mut out = Backends::default();
        for ((c, ns, svc), (mut pods, via)) in pods_of {
            pods.sort_unstable();
            pods.dedup();
            let mut counts: HashMap<(EntityKind, String), usize> = HashMap::new();
            for (pns, pod) in &pods {
                let Some(o) = self
                    .pod_workload(&c, pns, pod)
                    .or_else(|| workload_from_pod_name(pod))
                else {
                    continue;
                };
                *counts.entry((o.kind, o.name)).or_default() += 1;
            }
            let mut list: Vec<Backend> = counts
                .into_iter()
                .map(|((kind, name), pods)| Backend {
                    kind,
                    name,
                    pods,
                    via,
                })
                .collect();
            list.sort_by(|a, b| b.pods.cmp(&a.pods).then_with(|| a.name.cmp(&b.name)));
            for b in &list {
                let names = out
                    .by_workload
                    .entry((c.clone(), ns.clone(), b.name.clone()))
                    .or_default();
                names.push(svc.clone());
                names.sort_unstable();
            }
            if !list.is_empty() {
                out.by_service.insert((c, ns, svc), list);
            }
        }
        out
    }

    pub fn nodes_in_zone(&self, cluster: &str, zone: &str) -> usize {
        self.zone_nodes
            .get(&(cluster.to_owned(), zone.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Adds the series of one `/api/v1/query` response body.
    pub fn add_query_body(&mut self, metric: &str, body: &[u8]) -> Result<usize, TopologyError> {
        let bad = |message: String| TopologyError::Malformed {
            metric: metric.to_owned(),
            message,
        };
        let resp: QueryResponse =
            serde_json::from_slice(body).map_err(|e| bad(format!("not a query response: {e}")))?;
        if resp.status != "success" {
            return Err(TopologyError::Query {
                metric: metric.to_owned(),
                message: resp.error.unwrap_or(resp.status),
            });
        }
        let data = resp.data.ok_or_else(|| bad("no data".into()))?;
        if data.result_type != "vector" {
            return Err(bad(format!(
                "resultType {} (want vector)",
                data.result_type
            )));
        }
        let n = data.result.len();
        for s in data.result {
            self.add_series(metric, &s.metric);
        }
        Ok(n)
    }

    /// Adds one series; series missing the labels they need are skipped.
    pub fn add_series(&mut self, metric: &str, m: &HashMap<String, String>) {
        let get = |k: &str| m.get(k).map(String::as_str).unwrap_or("");
        let cluster = get("cluster");
        self.backends = OnceLock::new();
        match metric {
            "kube_pod_info" => {
                let (ns, pod, node) = (get("namespace"), get("pod"), get("node"));
                let ip = get("pod_ip");
                if !ns.is_empty()
                    && !pod.is_empty()
                    && !ip.is_empty()
                    && get("host_network") != "true"
                {
                    let holders = self
                        .pod_ips
                        .entry((cluster.to_owned(), ip.to_owned()))
                        .or_default();
                    let p = (ns.to_owned(), pod.to_owned());
                    if !holders.contains(&p) {
                        holders.push(p);
                    }
                }
                if ns.is_empty() || pod.is_empty() || node.is_empty() {
                    return;
                }
                let prev = self
                    .pod_node
                    .insert(Self::key(cluster, ns, pod), node.to_owned());
                if prev.is_none() {
                    *self
                        .node_pods
                        .entry((cluster.to_owned(), node.to_owned()))
                        .or_default() += 1;
                }
                self.place_daemonset_pod(cluster, ns, pod);
            }
            "kube_pod_owner" | "kube_replicaset_owner" => {
                let obj = if metric == "kube_pod_owner" {
                    "pod"
                } else {
                    "replicaset"
                };
                let (ns, name) = (get("namespace"), get(obj));
                let Some(kind) = owner_kind(get("owner_kind")) else {
                    return;
                };
                let owner_name = get("owner_name");
                if ns.is_empty() || name.is_empty() || owner_name.is_empty() {
                    return;
                }
                let owner = Owner {
                    kind,
                    name: owner_name.to_owned(),
                };
                let map = if obj == "pod" {
                    &mut self.pod_owner
                } else {
                    &mut self.rs_owner
                };
                map.insert(Self::key(cluster, ns, name), owner);
                if obj == "pod" {
                    self.place_daemonset_pod(cluster, ns, name);
                }
            }
            "kube_node_labels" => {
                let node = get("node");
                let Some(zone) = ZONE_LABELS.iter().map(|l| get(l)).find(|z| !z.is_empty()) else {
                    return;
                };
                if node.is_empty() {
                    return;
                }
                let prev = self
                    .node_zone
                    .insert((cluster.to_owned(), node.to_owned()), zone.to_owned());
                if prev.is_none() {
                    *self
                        .zone_nodes
                        .entry((cluster.to_owned(), zone.to_owned()))
                        .or_default() += 1;
                }
            }
            "kube_endpoint_address" => {
                let (ns, svc, ip) = (get("namespace"), get("endpoint"), get("ip"));
                if ns.is_empty() || svc.is_empty() || ip.is_empty() {
                    return;
                }
                let ips = self
                    .endpoint_ips
                    .entry(Self::key(cluster, ns, svc))
                    .or_default();
                if !ips.iter().any(|i| i == ip) {
                    ips.push(ip.to_owned());
                }
            }
            "kube_endpointslice_endpoints" => {
                let (ns, slice) = (get("namespace"), get("endpointslice"));
                let (kind, pod) = (get("targetref_kind"), get("targetref_name"));
                if ns.is_empty() || slice.is_empty() || kind != "Pod" || pod.is_empty() {
                    return;
                }
                let pod_ns = Some(get("targetref_namespace"))
                    .filter(|n| !n.is_empty())
                    .unwrap_or(ns);
                let p = (pod_ns.to_owned(), pod.to_owned());
                let pods = self
                    .slice_pods
                    .entry(Self::key(cluster, ns, slice))
                    .or_default();
                if !pods.contains(&p) {
                    pods.push(p);
                }
            }
            "kube_endpointslice_labels" => {
                let (ns, slice) = (get("namespace"), get("endpointslice"));
                let svc = get("label_kubernetes_io_service_name");
                if ns.is_empty() || slice.is_empty() || svc.is_empty() {
                    return;
                }
                self.slice_service
                    .insert(Self::key(cluster, ns, slice), svc.to_owned());
            }
            _ => {}
        }
    }

    /// Reads `<metric>.json` files from `dir`. Every file that is missing or
    /// malformed is reported in the second value; what could be read is kept.
    pub fn load_dir(dir: &Path) -> (Topology, Vec<TopologyError>) {
        let mut topo = Topology::default();
        let mut errors = Vec::new();
        for metric in TOPOLOGY_METRICS.into_iter().chain(SERVICE_METRICS) {
            let path = dir.join(format!("{metric}.json"));
            match std::fs::read(&path) {
                Ok(body) => {
                    if let Err(e) = topo.add_query_body(metric, &body) {
                        errors.push(e);
                    }
                }
                // Endpoint series are optional: without them, Services are
                // tied to the workload of their own name.
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && SERVICE_METRICS.contains(&metric) => {}
                Err(source) => errors.push(TopologyError::Io {
                    metric: path.display().to_string(),
                    source,
                }),
            }
        }
        (topo, errors)
    }

    /// Fetches every topology metric from a Prometheus-compatible API.
    pub async fn fetch(
        client: &reqwest::Client,
        cfg: &TopologyConfig,
        ctx: &ValidateCtx,
    ) -> (Topology, Vec<TopologyError>) {
        let mut topo = Topology::default();
        let mut errors = Vec::new();
        let Some(base) = cfg.url.as_deref() else {
            return (topo, errors);
        };
        let token = cfg.token("topology.bearer_token", ctx, &mut ConfigErrors::default());
        let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
        for metric in TOPOLOGY_METRICS.into_iter().chain(SERVICE_METRICS) {
            let mut req = client
                .get(&url)
                .query(&[("query", metric)])
                .timeout(cfg.timeout.as_std());
            if let Some(t) = &token {
                req = req.bearer_auth(t.expose());
            }
            let res = match req.send().await {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            };
            match res {
                Ok(body) => {
                    if let Err(e) = topo.add_query_body(metric, &body) {
                        errors.push(e);
                    }
                }
                Err(e) => errors.push(TopologyError::Query {
                    metric: metric.to_owned(),
                    message: e.without_url().to_string(),
                }),
            }
        }
        (topo, errors)
    }
}

/// The workload a pod name implies when no owner series is known:
/// `<deployment>-<replicaset hash>-<pod hash>` is a Deployment's pod,
/// `<statefulset>-<ordinal>` a StatefulSet's, `<daemonset>-<hash>` a DaemonSet's.
pub fn workload_from_pod_name(pod: &str) -> Option<Owner> {
    let parts: Vec<&str> = pod.rsplitn(3, '-').collect();
    let is_hash = |s: &str, min: usize, max: usize| {
        (min..=max).contains(&s.len())
            && s.bytes().all(|b| SAFE_ENCODE.contains(&b))
            && !s.bytes().all(|b| b.is_ascii_digit())
    };
    match parts.as_slice() {
        [pod_hash, rs_hash, base] if is_hash(pod_hash, 5, 5) && is_hash(rs_hash, 6, 10) => {
            Some(Owner {
                kind: EntityKind::Deployment,
                name: (*base).to_owned(),
            })
        }
        [last, ..] if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) => {
            let base = &pod[..pod.len() - last.len() - 1];
            (!base.is_empty()).then(|| Owner {
                kind: EntityKind::StatefulSet,
                name: base.to_owned(),
            })
        }
        [last, ..] if is_hash(last, 5, 5) => {
            let base = &pod[..pod.len() - last.len() - 1];
            (!base.is_empty()).then(|| Owner {
                kind: EntityKind::DaemonSet,
                name: base.to_owned(),
            })
        }
        _ => None,
    }
}

/// The Service an EndpointSlice belongs to, by the name the EndpointSlice
/// controller generates for it: the Service's name, `-`, and five
/// characters of Kubernetes' SafeEncodeString alphabet.
pub fn service_of_slice(slice: &str) -> Option<&str> {
    let (svc, suffix) = slice.rsplit_once('-')?;
    (!svc.is_empty() && suffix.len() == 5 && suffix.bytes().all(|b| SAFE_ENCODE.contains(&b)))
        .then_some(svc)
}

/// Renders series as an `/api/v1/query` response body (the simulator writes
/// topology folders with it).
pub fn query_body(series: &[Vec<(&str, String)>]) -> String {
    let result: Vec<serde_json::Value> = series
        .iter()
        .map(|labels| {
            let metric: serde_json::Map<String, serde_json::Value> = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v.clone())))
                .collect();
            serde_json::json!({"metric": metric, "value": [0, "1"]})
        })
        .collect();
    serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_name_patterns() {
        let d = workload_from_pod_name("checkout-7d9c8b6f5d-x2k9p").unwrap();
        assert_eq!(
            (d.kind, d.name.as_str()),
            (EntityKind::Deployment, "checkout")
        );
        let s = workload_from_pod_name("redis-cart-2").unwrap();
        assert_eq!(
            (s.kind, s.name.as_str()),
            (EntityKind::StatefulSet, "redis-cart")
        );
        let ds = workload_from_pod_name("node-exporter-8xk2q").unwrap();
        assert_eq!(
            (ds.kind, ds.name.as_str()),
            (EntityKind::DaemonSet, "node-exporter")
        );
        assert!(workload_from_pod_name("standalone").is_none());
    }

    #[test]
    fn daemonset_pods_place_the_daemonset_on_their_nodes_in_either_order() {
        use crate::correlate::tests::series;
        let mut t = Topology::default();
        let owner = |pod: &str, kind: &str, name: &str| {
            series(&[
                ("cluster", "c1"),
                ("namespace", "monitoring"),
                ("pod", pod),
                ("owner_kind", kind),
                ("owner_name", name),
            ])
        };
        let info = |pod: &str, node: &str| {
            series(&[
                ("cluster", "c1"),
                ("namespace", "monitoring"),
                ("pod", pod),
                ("node", node),
            ])
        };
        t.add_series(
            "kube_pod_owner",
            &owner("ne-a", "DaemonSet", "node-exporter"),
        );
        t.add_series("kube_pod_info", &info("ne-a", "n1"));
        t.add_series("kube_pod_info", &info("ne-b", "n2"));
        t.add_series(
            "kube_pod_owner",
            &owner("ne-b", "DaemonSet", "node-exporter"),
        );
        t.add_series("kube_pod_info", &info("web-1", "n3"));
        t.add_series("kube_pod_owner", &owner("web-1", "StatefulSet", "web"));
        assert_eq!(
            t.daemonset_nodes("c1", "monitoring", "node-exporter"),
            ["n1".to_owned(), "n2".to_owned()]
        );
        assert!(t.daemonset_nodes("c1", "monitoring", "web").is_empty());
        assert!(t
            .daemonset_nodes("c2", "monitoring", "node-exporter")
            .is_empty());
    }

    #[test]
    fn services_are_served_by_the_workloads_their_endpoints_list() {
        let s = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let mut t = Topology::default();
        // Endpoints first, pods after: the join does not depend on order.
        for ip in ["10.1.0.5", "10.1.0.6", "10.1.0.7", "192.168.0.9"] {
            t.add_series(
                "kube_endpoint_address",
                &s(&[
                    ("cluster", "c1"),
                    ("namespace", "shop"),
                    ("endpoint", "cart-api"),
                    ("ip", ip),
                ]),
            );
        }
        for (pod, ip, owner) in [
            ("cart-6b7c8d9f5b-k8z2p", "10.1.0.5", "cart"),
            ("cart-6b7c8d9f5b-q7w4r", "10.1.0.6", "cart"),
            ("cart-canary-5d6f7b8c9d-x2k9p", "10.1.0.7", "cart-canary"),
        ] {
            t.add_series(
                "kube_pod_info",
                &s(&[
                    ("cluster", "c1"),
                    ("namespace", "shop"),
                    ("pod", pod),
                    ("node", "n1"),
                    ("pod_ip", ip),
                ]),
            );
            t.add_series(
                "kube_pod_owner",
                &s(&[
                    ("cluster", "c1"),
                    ("namespace", "shop"),
                    ("pod", pod),
                    ("owner_kind", "Deployment"),
                    ("owner_name", owner),
                ]),
            );
        }
        // A host-network pod holds its node's IP: it backs nothing by IP.
        t.add_series(
            "kube_pod_info",
            &s(&[
                ("cluster", "c1"),
                ("namespace", "shop"),
                ("pod", "agent-x7k2p"),
                ("node", "n1"),
                ("pod_ip", "192.168.0.9"),
                ("host_network", "true"),
            ]),
        );
        let b = t.service_backends("c1", "shop", "cart-api");
        let names: Vec<(&str, usize, ServedVia)> =
            b.iter().map(|b| (b.name.as_str(), b.pods, b.via)).collect();
        assert_eq!(
            names,
            [
                ("cart", 2, ServedVia::Endpoints),
                ("cart-canary", 1, ServedVia::Endpoints)
            ]
        );
        assert_eq!(t.workload_services("c1", "shop", "cart"), ["cart-api"]);
        assert!(t.service_backends("c2", "shop", "cart-api").is_empty());

        // EndpointSlices name their pods; the Service comes from the
        // slice's label, or else from its generated name.
        t.add_series(
            "kube_endpointslice_endpoints",
            &s(&[
                ("cluster", "c1"),
                ("namespace", "shop"),
                ("endpointslice", "cart-api-h7x2q"),
                ("targetref_kind", "Pod"),
                ("targetref_name", "cart-6b7c8d9f5b-k8z2p"),
            ]),
        );
        t.add_series(
            "kube_endpointslice_endpoints",
            &s(&[
                ("cluster", "c1"),
                ("namespace", "shop"),
                ("endpointslice", "storefront-1"),
                ("targetref_kind", "Pod"),
                ("targetref_name", "cart-canary-5d6f7b8c9d-x2k9p"),
            ]),
        );
        t.add_series(
            "kube_endpointslice_labels",
            &s(&[
                ("cluster", "c1"),
                ("namespace", "shop"),
                ("endpointslice", "storefront-1"),
                ("label_kubernetes_io_service_name", "storefront"),
            ]),
        );
        let slices = |svc: &str| -> Vec<(String, ServedVia)> {
            t.service_backends("c1", "shop", svc)
                .iter()
                .map(|b| (b.name.clone(), b.via))
                .collect()
        };
        assert_eq!(
            slices("cart-api"),
            [("cart".to_owned(), ServedVia::EndpointSlices)]
        );
        assert_eq!(
            slices("storefront"),
            [("cart-canary".to_owned(), ServedVia::EndpointSlices)]
        );
        assert_eq!(service_of_slice("cart-api-h7x2q"), Some("cart-api"));
        assert_eq!(service_of_slice("cart-api-12345"), None);
        assert_eq!(service_of_slice("storefront-1"), None);
    }

    #[test]
    fn query_bodies_build_the_owner_chain() {
        let mut t = Topology::default();
        let pod_info = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"kube_pod_info","cluster":"c1","namespace":"shop","pod":"web-abc123-xyz12","node":"n1"},"value":[1,"1"]}]}}"#;
        let owner = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"cluster":"c1","namespace":"shop","pod":"web-abc123-xyz12","owner_kind":"ReplicaSet","owner_name":"web-abc123"},"value":[1,"1"]}]}}"#;
        let rs = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"cluster":"c1","namespace":"shop","replicaset":"web-abc123","owner_kind":"Deployment","owner_name":"frontend"},"value":[1,"1"]}]}}"#;
        let nodes = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"cluster":"c1","node":"n1","label_topology_kubernetes_io_zone":"z-a"},"value":[1,"1"]}]}}"#;
        t.add_query_body("kube_pod_info", pod_info.as_bytes())
            .unwrap();
        t.add_query_body("kube_pod_owner", owner.as_bytes())
            .unwrap();
        t.add_query_body("kube_replicaset_owner", rs.as_bytes())
            .unwrap();
        t.add_query_body("kube_node_labels", nodes.as_bytes())
            .unwrap();
        assert_eq!(t.pod_node("c1", "shop", "web-abc123-xyz12"), Some("n1"));
        let w = t.pod_workload("c1", "shop", "web-abc123-xyz12").unwrap();
        assert_eq!(
            (w.kind, w.name.as_str()),
            (EntityKind::Deployment, "frontend")
        );
        assert_eq!(t.node_zone("c1", "n1"), Some("z-a"));
        assert_eq!(t.pods_on_node("c1", "n1"), 1);
        assert_eq!(t.nodes_in_zone("c1", "z-a"), 1);
    }

    #[test]
    fn malformed_and_missing_files_degrade() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kube_pod_info.json"), "{not json").unwrap();
        std::fs::write(
            dir.path().join("kube_node_labels.json"),
            r#"{"status":"error","error":"bad query"}"#,
        )
        .unwrap();
        let (t, errs) = Topology::load_dir(dir.path());
        assert!(t.is_empty());
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs.iter().any(|e| e.to_string().contains("bad query")));
    }
}

#[cfg(test)]
mod fetch_tests {
    use super::*;

    #[tokio::test]
    async fn fetches_every_metric_from_a_query_api_with_the_bearer_token() {
        use axum::extract::Query;
        use axum::http::HeaderMap;
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::get(
                |Query(q): Query<HashMap<String, String>>, headers: HeaderMap| async move {
                    if headers.get("authorization").and_then(|v| v.to_str().ok())
                        != Some("Bearer s3cret")
                    {
                        return (axum::http::StatusCode::UNAUTHORIZED, String::new());
                    }
                    let body = match q.get("query").map(String::as_str) {
                        Some("kube_pod_info") => query_body(&[vec![
                            ("cluster", "c1".to_owned()),
                            ("namespace", "shop".to_owned()),
                            ("pod", "web-1".to_owned()),
                            ("node", "n1".to_owned()),
                        ]]),
                        Some("kube_node_labels") => query_body(&[vec![
                            ("cluster", "c1".to_owned()),
                            ("node", "n1".to_owned()),
                            ("label_topology_kubernetes_io_zone", "a".to_owned()),
                        ]]),
                        // A broken metric degrades, it does not fail the fetch.
                        Some("kube_pod_owner") => "{oops".to_owned(),
                        _ => query_body(&[]),
                    };
                    (axum::http::StatusCode::OK, body)
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let cfg = TopologyConfig {
            url: Some(format!("http://{addr}")),
            bearer_token: Some(Secret::new("s3cret")),
            ..Default::default()
        };
        let ctx = ValidateCtx {
            base_dir: std::path::PathBuf::from("."),
        };
        let (topo, errors) = Topology::fetch(&reqwest::Client::new(), &cfg, &ctx).await;
        assert_eq!(topo.pod_node("c1", "shop", "web-1"), Some("n1"));
        assert_eq!(topo.node_zone("c1", "n1"), Some("a"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].to_string().contains("kube_pod_owner"));
        assert!(!errors[0].to_string().contains("s3cret"));
    }
}
