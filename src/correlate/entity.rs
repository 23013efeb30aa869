//! Entity resolution: every alert is mapped to the most specific entity it is
//! about, plus that entity's causal parents. All label aliases live here:
//! `instance` → node for node-exporter and kubelet targets (`node:10250`),
//! pod → ReplicaSet → Deployment through owner series or the ReplicaSet-hash
//! name pattern, pod → node through `kube_pod_info`, node → zone through
//! `kube_node_labels`, a `service` label → the workloads whose pods the
//! Service's endpoints list (`kube_endpointslice_endpoints`,
//! `kube_endpoint_address`), or the workload declared for it in `rules/`, or
//! else the workload of the same name.
//!
//! Canonical ids are `cluster/namespace/kind/name`. Workloads and the services
//! they back share one id (`app`), so a dependency on a service and alerts on
//! its Deployment meet in one entity.

use crate::domain::{Entity, EntityKind, Labels};

use super::rules::{AboutKind, AppRef, CauseKind, Rules};
use super::topology::{workload_from_pod_name, Backend, ServedVia, Topology};

/// Scrape jobs whose targets are the cluster's nodes.
const NODE_JOBS: [&str; 4] = ["node-exporter", "kubelet", "cadvisor", "node"];

/// Scrape jobs whose alerts are about Kubernetes objects, not the job itself.
const OBJECT_JOBS: [&str; 2] = ["kube-state-metrics", "kube-state-metrics-self"];

/// An entity with its canonical id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub key: String,
    pub entity: Entity,
}

/// What one alert is about and what could have caused it.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub primary: Node,
    /// Infrastructure parents: the node of a pod, the zone of a node.
    pub infra: Vec<Node>,
    /// Logical parents: the workload of a pod, the services an app depends on.
    pub logical: Vec<Node>,
    /// Causal ancestors (transitive, for ranking) besides `primary`, `infra`
    /// and `logical`, which are ancestors too: the zone of a pod's node.
    pub more_ancestors: Vec<Node>,
    /// The workload owning a pod.
    pub owner: Option<String>,
    /// A scrape job over the cluster's nodes: attaches to a failing node.
    pub node_scrape: bool,
    /// An alert about something spread over many nodes (a DaemonSet, one pod
    /// per node): `infra` lists them all, and it joins the one failing node
    /// that explains it best rather than every one.
    pub spread: bool,
    /// A symptom of its node while the node's failure alert fires, whatever
    /// the onsets (`node_reasons`).
    pub node_while_failing: bool,
    /// A pod's readiness: its rule lists `dependency` in `symptom_of`.
    pub readiness: bool,
    /// Whether the alert marks its entity failing.
    pub links: bool,
    pub weight: u32,
}

fn key(cluster: &str, ns: &str, kind: &str, name: &str) -> String {
    // Built by hand: `format!` costs several times as much, once per parent
    // of every alert.
    let mut k = String::with_capacity(cluster.len() + ns.len() + kind.len() + name.len() + 3);
    for (i, part) in [cluster, ns, kind, name].into_iter().enumerate() {
        if i > 0 {
            k.push('/');
        }
        k.push_str(part);
    }
    k
}

/// The canonical id of an entity (workloads and services share `app`).
pub fn canonical_key(e: &Entity) -> String {
    let kind = match e.kind {
        EntityKind::Deployment | EntityKind::StatefulSet | EntityKind::DaemonSet => "app",
        k => k.as_str(),
    };
    key(
        e.cluster.as_deref().unwrap_or(""),
        e.namespace.as_deref().unwrap_or(""),
        kind,
        &e.name,
    )
}

pub fn node_entity(cluster: &str, name: &str) -> Node {
    Node {
        key: key(cluster, "", "node", name),
        entity: Entity::new(EntityKind::Node, cluster, None, name),
    }
}

pub fn zone_entity(cluster: &str, zone: &str) -> Node {
    Node {
        key: key(cluster, "", "zone", zone),
        entity: Entity::new(EntityKind::Zone, cluster, None, zone),
    }
}

/// A workload or the service it backs.
pub fn app_entity(cluster: &str, ns: &str, kind: EntityKind, name: &str) -> Node {
    Node {
        key: key(cluster, ns, "app", name),
        entity: Entity::new(kind, cluster, Some(ns), name),
    }
}

fn simple(kind: EntityKind, cluster: &str, ns: Option<&str>, name: &str) -> Node {
    Node {
        key: key(cluster, ns.unwrap_or(""), kind.as_str(), name),
        entity: Entity::new(kind, cluster, ns, name),
    }
}

/// The workloads serving a Service, and how that is known.
#[derive(Debug, Clone, Copy)]
pub enum Backing<'a> {
    /// Declared in `rules/`, or (no endpoint series) the Service's own name.
    Named(&'a str, ServedVia),
    /// From the Service's endpoints in the topology, most pods first.
    Served(&'a [Backend]),
}

impl<'a> Backing<'a> {
    /// The workload serving most of the Service's pods.
    pub fn first(&self) -> &'a str {
        match self {
            Backing::Named(w, _) => w,
            Backing::Served(b) => b.first().map_or("", |b| b.name.as_str()),
        }
    }

    /// Every workload serving the Service: its kind, name and how the link
    /// was made.
    pub fn iter(&self) -> impl Iterator<Item = (EntityKind, &'a str, ServedVia)> {
        let (one, many) = match *self {
            Backing::Named(w, via) => (Some((EntityKind::Deployment, w, via)), &[][..]),
            Backing::Served(b) => (None, b),
        };
        one.into_iter()
            .chain(many.iter().map(|b| (b.kind, b.name.as_str(), b.via)))
    }
}

/// The workloads serving Service `svc`: the workload declared for it in
/// `rules/` (`services[].workload`), else those whose pods its endpoints
/// list, else the workload of the same name (a Service and its Deployment
/// or StatefulSet usually share it).
pub fn backing<'a>(
    rules: &'a Rules,
    topo: &'a Topology,
    cluster: &str,
    ns: &str,
    svc: &'a str,
) -> Backing<'a> {
    if let Some(w) = rules.declared_workload(cluster, ns, svc) {
        return Backing::Named(w, ServedVia::Declared);
    }
    match topo.service_backends(cluster, ns, svc) {
        [] => Backing::Named(svc, ServedVia::SameName),
        served => Backing::Served(served),
    }
}

/// The node an `instance` label names, if it names one: node-exporter and
/// kubelet targets, `node:10250`, or a node the topology knows.
fn instance_node<'a>(
    labels: &'a Labels,
    cluster: &str,
    topo: &Topology,
    about_node: bool,
) -> Option<&'a str> {
    let inst = labels.get("instance")?;
    let job = labels.get_or_empty("job");
    let host = match inst.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => inst,
    };
    let is_node = about_node
        || NODE_JOBS.contains(&job)
        || inst.ends_with(":10250")
        || topo.is_node(cluster, host);
    (is_node && !host.is_empty()).then_some(host)
}

/// Resolves an alert's labels to entities.
pub fn resolve<'a>(
    labels: &'a Labels,
    cluster: &str,
    rules: &'a Rules,
    topo: &'a Topology,
) -> Resolved {
    let name = labels.alertname();
    let rule = rules.alert(name);
    let about = rule.map_or(AboutKind::Labels, |r| r.about);
    let mut links = rule.is_none_or(|r| r.links);
    let weight = rules.weight(name);
    let ns = labels.get("namespace").filter(|n| !n.is_empty());
    let get = |k: &str| labels.get(k).filter(|v| !v.is_empty());
    let node_label =
        get("node").or_else(|| instance_node(labels, cluster, topo, about == AboutKind::Node));
    let workload_label = || {
        [
            ("deployment", EntityKind::Deployment),
            ("statefulset", EntityKind::StatefulSet),
            ("daemonset", EntityKind::DaemonSet),
            ("service", EntityKind::Service),
        ]
        .into_iter()
        .find_map(|(l, k)| get(l).map(|v| (k, v)))
    };

    // The workload an alert labelled with a workload or Service means.
    let served_by = |k: EntityKind, ns: &str, w: &'a str| -> &'a str {
        match k {
            EntityKind::Service => backing(rules, topo, cluster, ns, w).first(),
            _ => rules.backing_workload(cluster, ns, w),
        }
    };

    let mut out = Resolved {
        primary: simple(EntityKind::Cluster, cluster, None, cluster),
        infra: Vec::new(),
        logical: Vec::new(),
        more_ancestors: Vec::new(),
        owner: None,
        node_scrape: false,
        spread: false,
        node_while_failing: false,
        readiness: false,
        links,
        weight,
    };
    let job = get("job");
    let is_scrape = name == "TargetDown" || about == AboutKind::NodeScrape;
    let mut app: Option<Node> = None;
    let mut service: Option<(&str, &str)> = None;
    // What the Service backed by a pod's workload depends on, when the
    // pod's alert is a symptom of its dependencies.
    let mut pod_deps: Vec<AppRef> = Vec::new();
    if about == AboutKind::ControlPlane {
        out.primary = simple(EntityKind::ControlPlane, cluster, None, "control-plane");
    } else if about == AboutKind::Cluster {
        links = false;
    } else if is_scrape
        && (about == AboutKind::NodeScrape || job.is_some_and(|j| NODE_JOBS.contains(&j)))
    {
        let j = job.unwrap_or(name);
        out.primary = simple(EntityKind::ScrapeJob, cluster, ns, j);
        out.node_scrape = true;
    } else if is_scrape && job.is_some() {
        let j = job.unwrap_or_default();
        out.primary = simple(EntityKind::ScrapeJob, cluster, ns, j);
        let svc = get("service").unwrap_or(j);
        let ns = ns.unwrap_or("");
        app = Some(app_entity(
            cluster,
            ns,
            EntityKind::Service,
            backing(rules, topo, cluster, ns, svc).first(),
        ));
        out.logical.extend(app.clone());
    } else if about == AboutKind::Node && node_label.is_some() {
        out.primary = node_entity(cluster, node_label.unwrap_or_default());
    } else if about == AboutKind::Workload && workload_label().is_some() {
        let (k, w) = workload_label().unwrap_or((EntityKind::Service, ""));
        let ns = ns.unwrap_or("");
        out.primary = app_entity(cluster, ns, k, served_by(k, ns, w));
        app = Some(out.primary.clone());
        // A DaemonSet runs a pod on every node it selects: a node that fails
        // leaves its pod there unavailable, and the DaemonSet's rollout or
        // scheduling alert is that node's symptom.
        if k == EntityKind::DaemonSet {
            out.infra.extend(
                topo.daemonset_nodes(cluster, ns, w)
                    .iter()
                    .map(|n| node_entity(cluster, n)),
            );
            out.spread = !out.infra.is_empty();
        }
    } else if let (Some(pvc), Some(ns)) = (get("persistentvolumeclaim"), ns) {
        out.primary = simple(EntityKind::PersistentVolumeClaim, cluster, Some(ns), pvc);
    } else if let (Some(pod), Some(ns)) = (get("pod"), ns) {
        out.primary = simple(EntityKind::Pod, cluster, Some(ns), pod);
        if let Some(node) = topo.pod_node(cluster, ns, pod).or(get("node")) {
            out.infra.push(node_entity(cluster, node));
        }
        let owner = topo
            .pod_workload(cluster, ns, pod)
            .or_else(|| workload_from_pod_name(pod));
        if let Some(o) = owner {
            let a = app_entity(cluster, ns, o.kind, &o.name);
            out.owner = Some(a.key.clone());
            out.logical.push(a);
            if rule.is_some_and(|r| r.symptom_of(CauseKind::Dependency)) {
                out.readiness = true;
                pod_deps = rules.workload_depends_on(cluster, ns, &o.name);
                // Services of other names whose endpoints list the
                // workload's pods.
                for svc in topo.workload_services(cluster, ns, &o.name) {
                    if *svc == o.name || rules.declared_workload(cluster, ns, svc).is_some() {
                        continue;
                    }
                    for d in rules.depends_on_transitive(cluster, ns, svc) {
                        let own = d.0 == cluster && d.1 == ns && d.2 == o.name;
                        if !own && !pod_deps.contains(&d) {
                            pod_deps.push(d);
                        }
                    }
                }
            }
        }
    } else if let Some(node) = node_label {
        out.primary = node_entity(cluster, node);
    } else if let (Some((EntityKind::Service, svc)), Some(ns)) = (workload_label(), ns) {
        // A service's own alerts (error rates, latency): caused by its
        // workload or by what it depends on.
        out.primary = simple(EntityKind::Service, cluster, Some(ns), svc);
        service = Some((ns, svc));
    } else if let (Some((k, w)), Some(ns)) = (workload_label(), ns) {
        out.primary = app_entity(cluster, ns, k, served_by(k, ns, w));
    } else if let (Some(j), Some(ns)) = (get("job_name"), ns) {
        out.primary = simple(EntityKind::Job, cluster, Some(ns), j);
    } else if let (Some(h), Some(ns)) = (get("horizontalpodautoscaler"), ns) {
        out.primary = app_entity(cluster, ns, EntityKind::Deployment, h);
        app = Some(out.primary.clone());
    } else if let Some(j) = job.filter(|j| !OBJECT_JOBS.contains(j)) {
        out.primary = simple(EntityKind::ScrapeJob, cluster, ns, j);
        if let Some(ns) = ns {
            app = Some(app_entity(
                cluster,
                ns,
                EntityKind::Service,
                backing(rules, topo, cluster, ns, j).first(),
            ));
            out.logical.extend(app.clone());
        }
    } else if let Some(ns) = ns {
        // A namespace is a hub: it never links alerts.
        out.primary = simple(EntityKind::Namespace, cluster, Some(ns), ns);
        links = false;
    } else {
        links = false;
    }
    out.links = links;

    // Zone of a node (primary or the pod's node).
    if out.primary.entity.kind == EntityKind::Node {
        if let Some(z) = topo.node_zone(cluster, &out.primary.entity.name) {
            out.infra.push(zone_entity(cluster, z));
        }
    }
    // A service alert: its backing workload first, then what it depends on
    // (workloads before services, nearest first). Linking picks the first
    // failing one, so one alert never bridges two unrelated failures.
    if let Some((ns, svc)) = service {
        for (kind, w, _) in backing(rules, topo, cluster, ns, svc).iter() {
            out.logical.push(app_entity(cluster, ns, kind, w));
        }
        push_dependencies(
            &mut out.logical,
            &rules.depends_on_transitive(cluster, ns, svc),
            rules,
            topo,
        );
    }
    let _ = app;
    // Causes the rules rule out (`symptom_of`): not a parent at all.
    if let Some(r) = rule {
        out.node_while_failing = !out.infra.is_empty()
            && labels
                .get("reason")
                .is_some_and(|why| r.node_reasons.iter().any(|n| n == why));
        if !r.symptom_of(CauseKind::Node) && !out.node_while_failing {
            out.infra.clear();
            out.spread = false;
        }
        if !r.symptom_of(CauseKind::Workload) {
            out.logical.clear();
            out.owner = None;
        }
    }
    // A pod's alert raised by a readiness probe that checks a dependency:
    // after its workload, what the Service that workload backs depends on,
    // as for the service's own alerts. A dependency that is down takes its
    // callers' pods out of their Services' endpoints.
    push_dependencies(&mut out.logical, &pod_deps, rules, topo);
    // The pod's node's zone.
    if out.primary.entity.kind == EntityKind::Pod
        && (out.node_while_failing || rule.is_none_or(|r| r.symptom_of(CauseKind::Node)))
    {
        if let Some(n) = out.infra.first() {
            if let Some(z) = topo.node_zone(cluster, &n.entity.name) {
                out.more_ancestors.push(zone_entity(cluster, z));
            }
        }
    }
    out
}

/// Appends dependencies as logical parents: their workloads before their
/// services, each nearest first, so that linking picks the nearest failing
/// workload and one alert never bridges two unrelated failures. A
/// dependency named by a Service whose endpoints the topology knows stands
/// for the workloads serving it.
fn push_dependencies(logical: &mut Vec<Node>, deps: &[AppRef], rules: &Rules, topo: &Topology) {
    for (c, n, w) in deps {
        match backing(rules, topo, c, n, w) {
            Backing::Served(served) => {
                for b in served {
                    logical.push(app_entity(c, n, b.kind, &b.name));
                }
            }
            Backing::Named(..) => logical.push(app_entity(c, n, EntityKind::Deployment, w)),
        }
    }
    for (c, n, w) in deps {
        logical.push(simple(EntityKind::Service, c, Some(n), w));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().copied().collect()
    }

    #[test]
    fn instance_aliases_resolve_to_the_node() {
        let r = Rules::default();
        let t = Topology::default();
        let a = resolve(
            &labels(&[
                ("alertname", "NodeFilesystemAlmostOutOfSpace"),
                ("instance", "n3"),
                ("job", "node-exporter"),
            ]),
            "c1",
            &r,
            &t,
        );
        assert_eq!(a.primary.key, "c1//node/n3");
        let b = resolve(
            &labels(&[
                ("alertname", "KubeletClientErrors"),
                ("instance", "n3:10250"),
                ("job", "kubelet"),
            ]),
            "c1",
            &r,
            &t,
        );
        assert_eq!(b.primary.key, "c1//node/n3");
        let c = resolve(
            &labels(&[("alertname", "KubeNodeNotReady"), ("node", "n3")]),
            "c1",
            &r,
            &t,
        );
        assert_eq!(c.primary.key, "c1//node/n3");
    }

    #[test]
    fn pod_without_topology_uses_the_replicaset_hash() {
        let r = Rules::default();
        let a = resolve(
            &labels(&[
                ("alertname", "KubePodNotReady"),
                ("namespace", "shop"),
                ("pod", "web-5d8f7c9b4-xbcdf"),
            ]),
            "c1",
            &r,
            &Topology::default(),
        );
        assert_eq!(a.primary.entity.kind, EntityKind::Pod);
        assert_eq!(a.owner.as_deref(), Some("c1/shop/app/web"));
        assert!(a.infra.is_empty());
    }

    #[test]
    fn no_topology_labels_is_a_cluster_alert_that_never_links() {
        let a = resolve(
            &labels(&[("alertname", "Custom")]),
            "c1",
            &Rules::default(),
            &Topology::default(),
        );
        assert_eq!(a.primary.entity.kind, EntityKind::Cluster);
        assert!(!a.links);
    }
}
