//! Fleet simulator: Alertmanager webhook streams with ground truth, for the
//! correlation quality bench, its regression tests and `stormcast simulate`.
//!
//! Each simulated cluster runs kube-prometheus: kube-prometheus alert names,
//! labels and `for` durations, and an Alertmanager that dispatches with
//! `group_by: [namespace]`, a 30s `group_wait`, a 5m `group_interval`,
//! resolved notifications and occasional double delivery (an HA twin).
//! Faults: node down, zone outage, dependency down with its dependents, disk
//! full, control plane down, bad rollout and a cross-cluster dependency outage,
//! over background noise and flapping alerts. Every alert carries its
//! kube-prometheus `for` (`KubeContainerWaiting` an hour), and `startsAt` is
//! when it fired, as Prometheus sends it (`FiredAt`), that long after its
//! condition began. The truth maps every alert
//! identity (Alertmanager fingerprint of its labels, `cluster` included) to the
//! incident that caused it and that incident's root-cause entity.

pub mod eval;

use std::collections::{BTreeMap, HashMap};

use chrono::{Duration, TimeZone};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::correlate::topology::query_body;
use crate::correlate::Topology;
use crate::domain::{Fingerprint, Labels, Timestamp};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub clusters: usize,
    pub nodes_per_cluster: usize,
    pub zones_per_cluster: usize,
    /// Faults injected per cluster over the run.
    pub faults_per_cluster: usize,
    /// Length of the storm.
    pub duration: Duration,
    /// Independent background alerts per cluster per hour.
    pub noise_per_hour: f64,
    /// Chance that a notification is delivered twice.
    pub double_delivery: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            clusters: 6,
            nodes_per_cluster: 12,
            zones_per_cluster: 3,
            faults_per_cluster: 4,
            duration: Duration::hours(2),
            noise_per_hour: 4.0,
            double_delivery: 0.03,
        }
    }
}

/// One replay input line: `{"at", "payload", "source"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayLine {
    pub at: Timestamp,
    pub payload: serde_json::Value,
    pub source: String,
}

/// A true incident.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrueIncident {
    pub id: usize,
    /// node_down, zone_outage, dependency_down, disk_full, control_plane_down,
    /// bad_rollout, cross_cluster_dependency, noise.
    pub kind: String,
    /// Canonical id of the root-cause entity (cluster/namespace/kind/name).
    pub root_entity: String,
    /// The alert naming the root cause, when one fires.
    pub root_fingerprint: Option<Fingerprint>,
}

/// Ground truth for a simulated storm.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Truth {
    pub incidents: Vec<TrueIncident>,
    /// Alert fingerprint → true incident id.
    pub alerts: BTreeMap<Fingerprint, usize>,
}

/// A simulated storm: deliveries, truth, topology and dependency rules.
#[derive(Debug, Clone)]
pub struct Storm {
    pub lines: Vec<ReplayLine>,
    pub truth: Truth,
    /// kube-state-metrics query bodies by metric name.
    pub topology_bodies: BTreeMap<String, String>,
    /// The service dependencies, in the `rules/` format.
    pub services_yaml: String,
}

impl Storm {
    pub fn topology(&self) -> Topology {
        let mut t = Topology::default();
        for (m, body) in &self.topology_bodies {
            t.add_query_body(m, body.as_bytes())
                .expect("simulated topology is well-formed");
        }
        t
    }

    /// The JSONL replay input.
    pub fn jsonl(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            out.push_str(&serde_json::to_string(l).expect("serialisable"));
            out.push('\n');
        }
        out
    }

    /// Number of distinct alert identities.
    pub fn alert_count(&self) -> usize {
        self.truth.alerts.len()
    }

    /// Writes `<metric>.json` topology files into `dir`.
    pub fn write_topology(&self, dir: &std::path::Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (m, body) in &self.topology_bodies {
            std::fs::write(dir.join(format!("{m}.json")), body)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct App {
    ns: &'static str,
    name: &'static str,
    kind: &'static str,
    /// Pods: name and node index.
    pods: Vec<(String, usize)>,
}

#[derive(Debug, Clone)]
struct Cluster {
    name: String,
    nodes: Vec<String>,
    zones: Vec<String>,
    node_zone: Vec<usize>,
    apps: Vec<App>,
}

/// Apps every cluster runs (namespace, name, kind, replicas).
const APPS: [(&str, &str, &str, usize); 9] = [
    ("shop", "frontend", "Deployment", 4),
    ("shop", "checkout", "Deployment", 3),
    ("shop", "payment", "Deployment", 3),
    ("shop", "catalog", "Deployment", 3),
    ("shop", "cart", "Deployment", 3),
    ("shop", "catalog-db", "StatefulSet", 3),
    ("kube-system", "coredns", "Deployment", 2),
    ("monitoring", "kube-state-metrics", "Deployment", 1),
    ("logging", "fluentd", "Deployment", 2),
];

/// The fleet-wide identity service, running in the first cluster only.
const AUTH: (&str, &str) = ("identity", "auth");

/// Service dependencies the simulated fleet declares, and the `for` of its
/// own alerting rule (the kube-prometheus ones ship with stormcast).
fn services_yaml(first_cluster: &str) -> String {
    format!(
        "alerts:\n\
         \x20 - {{alert: ServiceErrorRateHigh, for: 5m}}\n\
         services:\n\
         \x20 - name: frontend\n    namespace: shop\n    depends_on:\n      - name: checkout\n      - name: catalog\n\
         \x20 - name: checkout\n    namespace: shop\n    depends_on:\n      - name: payment\n      - name: {}\n        namespace: {}\n        cluster: {first_cluster}\n\
         \x20 - name: catalog\n    namespace: shop\n    depends_on:\n      - name: catalog-db\n",
        AUTH.1, AUTH.0
    )
}

const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn hash(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| SAFE[rng.gen_range(0..SAFE.len())] as char)
        .collect()
}

fn build_cluster(rng: &mut StdRng, name: String, cfg: &SimConfig, with_auth: bool) -> Cluster {
    let zones: Vec<String> = (0..cfg.zones_per_cluster.max(1))
        .map(|z| format!("{name}-{}", (b'a' + z as u8) as char))
        .collect();
    let nodes: Vec<String> = (0..cfg.nodes_per_cluster)
        .map(|i| format!("{name}-node{:02}", i + 1))
        .collect();
    let node_zone: Vec<usize> = (0..nodes.len()).map(|i| i % zones.len()).collect();
    let mut apps = Vec::new();
    let mut specs: Vec<(&'static str, &'static str, &'static str, usize)> = APPS.to_vec();
    if with_auth {
        specs.push((AUTH.0, AUTH.1, "Deployment", 3));
    }
    for (ns, app, kind, replicas) in specs {
        let rs = hash(rng, 10);
        let pods = (0..replicas)
            .map(|i| {
                let pod = if kind == "StatefulSet" {
                    format!("{app}-{i}")
                } else {
                    format!("{app}-{rs}-{}", hash(rng, 5))
                };
                (pod, rng.gen_range(0..nodes.len()))
            })
            .collect();
        apps.push(App {
            ns,
            name: app,
            kind,
            pods,
        });
    }
    // node-exporter on every node.
    let ds = App {
        ns: "monitoring",
        name: "node-exporter",
        kind: "DaemonSet",
        pods: (0..nodes.len())
            .map(|i| (format!("node-exporter-{}", hash(rng, 5)), i))
            .collect(),
    };
    apps.push(ds);
    Cluster {
        name,
        nodes,
        zones,
        node_zone,
        apps,
    }
}

/// One alert episode: labels, when it fires (after `for`) and resolves.
#[derive(Debug, Clone)]
struct Episode {
    labels: Labels,
    /// `startsAt`: when the rule became active (fires `for` later).
    active_at: Timestamp,
    fires_at: Timestamp,
    resolves_at: Timestamp,
    /// The true incident that produced it.
    truth: usize,
    /// A re-fire of a flapping alert (kept with its identity's first episode).
    flap: bool,
}

struct Gen {
    rng: StdRng,
    episodes: Vec<Episode>,
    truth: Truth,
    /// Identities raised so far, in generation order.
    seen: std::collections::HashSet<Fingerprint>,
    end: Timestamp,
}

fn labels(cluster: &str, pairs: &[(&str, &str)]) -> Labels {
    let mut l: Labels = pairs.iter().copied().collect();
    l.insert("cluster", cluster);
    l.insert("prometheus", "monitoring/k8s");
    l
}

impl Gen {
    fn incident(&mut self, kind: &str, root_entity: String) -> usize {
        let id = self.truth.incidents.len();
        self.truth.incidents.push(TrueIncident {
            id,
            kind: kind.to_owned(),
            root_entity,
            root_fingerprint: None,
        });
        id
    }

    /// An alert whose condition starts at `start`, fires after `for_` and
    /// ends at `end`. Returns its fingerprint unless it would not fire.
    /// Which fault owns an identity that several faults raise is settled in
    /// time order afterwards ([`Gen::settle`]).
    fn alert(
        &mut self,
        truth: usize,
        l: Labels,
        start: Timestamp,
        for_: Duration,
        end: Timestamp,
    ) -> Option<Fingerprint> {
        let fires = start + for_;
        if fires >= end || fires >= self.end {
            return None;
        }
        let fp = l.fingerprint();
        self.seen.insert(fp);
        self.episodes.push(Episode {
            labels: l,
            active_at: start,
            fires_at: fires,
            resolves_at: end,
            truth,
            flap: false,
        });
        Some(fp)
    }

    /// Settles alert identities raised by several faults, in time order: the
    /// fault whose condition began first owns the identity, and an episode
    /// that begins while it is still firing (or within 30 minutes of its end)
    /// is the same alert, already active, so it is dropped. A later episode of
    /// another fault is dropped too: an identity belongs to one incident.
    /// (Settling in generation order would give a shared alert, such as a
    /// Deployment's replicas mismatch, the start of a later fault while an
    /// earlier one had it firing already.)
    fn settle(&mut self) {
        let mut order: Vec<usize> = (0..self.episodes.len()).collect();
        order.sort_by_key(|i| {
            let e = &self.episodes[*i];
            (e.labels.fingerprint(), e.active_at, *i)
        });
        let mut keep = vec![false; self.episodes.len()];
        let mut owner: HashMap<Fingerprint, (usize, Timestamp)> = HashMap::new();
        for i in order {
            let e = &self.episodes[i];
            let fp = e.labels.fingerprint();
            match owner.get_mut(&fp) {
                None => {
                    owner.insert(fp, (e.truth, e.resolves_at));
                    keep[i] = true;
                }
                Some((t, _)) if *t != e.truth => {}
                Some((_, until)) => {
                    if e.flap || e.active_at >= *until + Duration::minutes(30) {
                        *until = (*until).max(e.resolves_at);
                        keep[i] = true;
                    }
                }
            }
        }
        let mut i = 0;
        self.episodes.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        for (fp, (t, _)) in owner {
            self.truth.alerts.insert(fp, t);
        }
        for inc in &mut self.truth.incidents {
            if let Some(fp) = inc.root_fingerprint {
                if self.truth.alerts.get(&fp) != Some(&inc.id) {
                    inc.root_fingerprint = None;
                }
            }
        }
    }

    fn jitter(&mut self, max_s: i64) -> Duration {
        Duration::seconds(self.rng.gen_range(0..=max_s))
    }

    fn node_down(
        &mut self,
        c: &Cluster,
        nodes: &[usize],
        t0: Timestamp,
        end: Timestamp,
        truth: usize,
    ) {
        let cl = c.name.as_str();
        let td = labels(
            cl,
            &[
                ("alertname", "TargetDown"),
                ("job", "node-exporter"),
                ("namespace", "monitoring"),
                ("service", "node-exporter"),
                ("severity", "warning"),
            ],
        );
        self.alert(truth, td, t0, Duration::minutes(10), end);
        for &n in nodes {
            let node = c.nodes[n].as_str();
            let j = self.jitter(60);
            let fp = self.alert(
                truth,
                labels(
                    cl,
                    &[
                        ("alertname", "KubeNodeNotReady"),
                        ("node", node),
                        ("severity", "warning"),
                        ("job", "kube-state-metrics"),
                        ("namespace", "monitoring"),
                    ],
                ),
                t0 + j,
                Duration::minutes(15),
                end,
            );
            if nodes.len() == 1 {
                self.truth.incidents[truth].root_fingerprint = fp;
            }
            for app in &c.apps {
                let mut hit = false;
                for (pod, pn) in &app.pods {
                    if *pn != n || app.kind == "DaemonSet" {
                        continue;
                    }
                    hit = true;
                    let j = self.jitter(90);
                    self.alert(
                        truth,
                        labels(
                            cl,
                            &[
                                ("alertname", "KubePodNotReady"),
                                ("namespace", app.ns),
                                ("pod", pod),
                                ("severity", "warning"),
                                ("job", "kube-state-metrics"),
                            ],
                        ),
                        t0 + Duration::seconds(40) + j,
                        Duration::minutes(15),
                        end,
                    );
                }
                if hit {
                    self.workload_mismatch(c, app, t0 + Duration::seconds(60), end, truth);
                }
            }
        }
    }

    fn workload_mismatch(
        &mut self,
        c: &Cluster,
        app: &App,
        start: Timestamp,
        end: Timestamp,
        truth: usize,
    ) -> Option<Fingerprint> {
        let (alert, label) = match app.kind {
            "StatefulSet" => ("KubeStatefulSetReplicasMismatch", "statefulset"),
            "DaemonSet" => ("KubeDaemonSetRolloutStuck", "daemonset"),
            _ => ("KubeDeploymentReplicasMismatch", "deployment"),
        };
        let j = self.jitter(60);
        self.alert(
            truth,
            labels(
                &c.name,
                &[
                    ("alertname", alert),
                    ("namespace", app.ns),
                    (label, app.name),
                    ("severity", "warning"),
                    ("job", "kube-state-metrics"),
                ],
            ),
            start + j,
            Duration::minutes(15),
            end,
        )
    }

    /// An app's pods crash and its dependents' error rates rise.
    fn app_down(
        &mut self,
        c: &Cluster,
        app: &App,
        t0: Timestamp,
        end: Timestamp,
        truth: usize,
        dependents: &[(&Cluster, &str, &str)],
    ) {
        let cl = c.name.as_str();
        for (pod, _) in &app.pods {
            let j = self.jitter(120);
            self.alert(
                truth,
                labels(
                    cl,
                    &[
                        ("alertname", "KubePodCrashLooping"),
                        ("namespace", app.ns),
                        ("pod", pod),
                        ("container", app.name),
                        ("severity", "warning"),
                        ("job", "kube-state-metrics"),
                    ],
                ),
                t0 + j,
                Duration::minutes(15),
                end,
            );
        }
        let fp = self.workload_mismatch(c, app, t0, end, truth);
        self.truth.incidents[truth].root_fingerprint = fp;
        self.alert(
            truth,
            labels(
                cl,
                &[
                    ("alertname", "TargetDown"),
                    ("job", app.name),
                    ("namespace", app.ns),
                    ("service", app.name),
                    ("severity", "warning"),
                ],
            ),
            t0,
            Duration::minutes(10),
            end,
        );
        for (dc, ns, svc) in dependents {
            let j = self.jitter(60);
            self.alert(
                truth,
                labels(
                    &dc.name,
                    &[
                        ("alertname", "ServiceErrorRateHigh"),
                        ("namespace", ns),
                        ("service", svc),
                        ("severity", "critical"),
                    ],
                ),
                t0 + j,
                Duration::minutes(5),
                end,
            );
        }
    }

    fn disk_full(&mut self, c: &Cluster, n: usize, t0: Timestamp, end: Timestamp, truth: usize) {
        let cl = c.name.as_str();
        let node = c.nodes[n].as_str();
        self.alert(
            truth,
            labels(
                cl,
                &[
                    ("alertname", "NodeFilesystemSpaceFillingUp"),
                    ("instance", node),
                    ("job", "node-exporter"),
                    ("namespace", "monitoring"),
                    ("device", "/dev/nvme0n1p1"),
                    ("fstype", "ext4"),
                    ("mountpoint", "/"),
                    ("severity", "warning"),
                ],
            ),
            t0,
            Duration::hours(1),
            end,
        );
        let fp = self.alert(
            truth,
            labels(
                cl,
                &[
                    ("alertname", "NodeFilesystemAlmostOutOfSpace"),
                    ("instance", node),
                    ("job", "node-exporter"),
                    ("namespace", "monitoring"),
                    ("device", "/dev/nvme0n1p1"),
                    ("fstype", "ext4"),
                    ("mountpoint", "/"),
                    ("severity", "critical"),
                ],
            ),
            t0,
            Duration::minutes(30),
            end,
        );
        self.truth.incidents[truth].root_fingerprint = fp;
        self.alert(
            truth,
            labels(
                cl,
                &[
                    ("alertname", "KubeNodePressure"),
                    ("node", node),
                    ("condition", "DiskPressure"),
                    ("severity", "info"),
                    ("job", "kube-state-metrics"),
                    ("namespace", "monitoring"),
                ],
            ),
            t0 + Duration::minutes(25),
            Duration::minutes(10),
            end,
        );
        // Evicted pods.
        let pods: Vec<(String, &'static str)> = c
            .apps
            .iter()
            .flat_map(|a| {
                a.pods
                    .iter()
                    .filter(|(_, pn)| *pn == n)
                    .map(move |(p, _)| (p.clone(), a.ns))
            })
            .filter(|(p, _)| !p.starts_with("node-exporter"))
            .take(3)
            .collect();
        for (pod, ns) in pods {
            let j = self.jitter(120);
            self.alert(
                truth,
                labels(
                    cl,
                    &[
                        ("alertname", "KubePodNotReady"),
                        ("namespace", ns),
                        ("pod", &pod),
                        ("severity", "warning"),
                        ("job", "kube-state-metrics"),
                    ],
                ),
                t0 + Duration::minutes(30) + j,
                Duration::minutes(15),
                end,
            );
        }
    }

    fn control_plane_down(&mut self, c: &Cluster, t0: Timestamp, end: Timestamp, truth: usize) {
        let cl = c.name.as_str();
        let fp = self.alert(
            truth,
            labels(
                cl,
                &[("alertname", "KubeAPIDown"), ("severity", "critical")],
            ),
            t0,
            Duration::minutes(15),
            end,
        );
        self.truth.incidents[truth].root_fingerprint = fp;
        for (name, for_) in [("KubeControllerManagerDown", 15), ("KubeSchedulerDown", 15)] {
            let j = self.jitter(60);
            self.alert(
                truth,
                labels(cl, &[("alertname", name), ("severity", "critical")]),
                t0 + j,
                Duration::minutes(for_),
                end,
            );
        }
        self.alert(
            truth,
            labels(
                cl,
                &[
                    ("alertname", "KubeAPIErrorBudgetBurn"),
                    ("long", "1h"),
                    ("short", "5m"),
                    ("severity", "critical"),
                ],
            ),
            t0,
            Duration::minutes(2),
            end,
        );
        let k = c.nodes.len().min(4);
        for i in 0..k {
            let inst = format!("{}:10250", c.nodes[i]);
            let j = self.jitter(120);
            self.alert(
                truth,
                labels(
                    cl,
                    &[
                        ("alertname", "KubeClientErrors"),
                        ("instance", &inst),
                        ("job", "kubelet"),
                        ("namespace", "kube-system"),
                        ("severity", "warning"),
                    ],
                ),
                t0 + j,
                Duration::minutes(15),
                end,
            );
        }
    }

    fn bad_rollout(&mut self, c: &Cluster, app: &App, t0: Timestamp, end: Timestamp, truth: usize) {
        let cl = c.name.as_str();
        let rs = hash(&mut self.rng, 10);
        let fp = self.alert(
            truth,
            labels(
                cl,
                &[
                    ("alertname", "KubeDeploymentRolloutStuck"),
                    ("namespace", app.ns),
                    ("deployment", app.name),
                    ("severity", "warning"),
                    ("job", "kube-state-metrics"),
                ],
            ),
            t0,
            Duration::minutes(15),
            end,
        );
        self.truth.incidents[truth].root_fingerprint = fp;
        for _ in 0..2 {
            let pod = format!("{}-{rs}-{}", app.name, hash(&mut self.rng, 5));
            let j = self.jitter(120);
            self.alert(
                truth,
                labels(
                    cl,
                    &[
                        ("alertname", "KubePodCrashLooping"),
                        ("namespace", app.ns),
                        ("pod", &pod),
                        ("container", app.name),
                        ("severity", "warning"),
                        ("job", "kube-state-metrics"),
                    ],
                ),
                t0 + j,
                Duration::minutes(15),
                end,
            );
        }
    }

    fn noise(&mut self, c: &Cluster, t0: Timestamp) {
        let cl = c.name.as_str();
        let pick = self.rng.gen_range(0..6);
        let app = &c.apps[self.rng.gen_range(0..c.apps.len())];
        let (pod, node) = app.pods[self.rng.gen_range(0..app.pods.len())].clone();
        let node = c.nodes[node].clone();
        let end = t0 + Duration::minutes(self.rng.gen_range(10..60));
        let (l, root): (Labels, String) = match pick {
            0 => (
                labels(
                    cl,
                    &[
                        ("alertname", "CPUThrottlingHigh"),
                        ("namespace", app.ns),
                        ("pod", &pod),
                        ("container", app.name),
                        ("severity", "info"),
                    ],
                ),
                format!("{cl}/{}/pod/{pod}", app.ns),
            ),
            1 => {
                let job = format!("backup-{}", hash(&mut self.rng, 5));
                (
                    labels(
                        cl,
                        &[
                            ("alertname", "KubeJobFailed"),
                            ("namespace", "batch"),
                            ("job_name", &job),
                            ("severity", "warning"),
                            ("job", "kube-state-metrics"),
                        ],
                    ),
                    format!("{cl}/batch/job/{job}"),
                )
            }
            2 => (
                labels(
                    cl,
                    &[
                        ("alertname", "NodeClockNotSynchronising"),
                        ("instance", &node),
                        ("job", "node-exporter"),
                        ("namespace", "monitoring"),
                        ("severity", "warning"),
                    ],
                ),
                format!("{cl}//node/{node}"),
            ),
            3 => (
                labels(
                    cl,
                    &[
                        ("alertname", "KubeHpaMaxedOut"),
                        ("namespace", app.ns),
                        ("horizontalpodautoscaler", app.name),
                        ("severity", "warning"),
                        ("job", "kube-state-metrics"),
                    ],
                ),
                app_key(cl, app.ns, app.name),
            ),
            4 => {
                let pvc = format!("data-{}", hash(&mut self.rng, 4));
                (
                    labels(
                        cl,
                        &[
                            ("alertname", "KubePersistentVolumeFillingUp"),
                            ("namespace", app.ns),
                            ("persistentvolumeclaim", &pvc),
                            ("severity", "warning"),
                            ("job", "kubelet"),
                        ],
                    ),
                    format!("{cl}/{}/persistent_volume_claim/{pvc}", app.ns),
                )
            }
            _ => (
                labels(
                    cl,
                    &[
                        ("alertname", "KubeContainerWaiting"),
                        ("namespace", app.ns),
                        ("pod", &pod),
                        ("container", app.name),
                        ("reason", "ImagePullBackOff"),
                        ("severity", "warning"),
                        ("job", "kube-state-metrics"),
                    ],
                ),
                format!("{cl}/{}/pod/{pod}", app.ns),
            ),
        };
        // kube-prometheus' `for` of each: the condition held that long before
        // the alert fired a minute after `t0`, and `startsAt` says so (an
        // image that fails to pull fires only after an hour of waiting).
        let for_ = Duration::minutes(match pick {
            0 | 1 | 3 => 15,
            2 => 10,
            _ => 60,
        });
        let truth = self.incident("noise", root);
        let repeat = self.seen.contains(&l.fingerprint());
        let start = t0 + Duration::minutes(1) - for_;
        let fp = self.alert(truth, l.clone(), start, for_, end);
        self.truth.incidents[truth].root_fingerprint = fp;
        // Some noise flaps: it resolves and fires again within the hold.
        if fp.is_some() && !repeat && self.rng.gen_bool(0.3) {
            let mut t = end;
            for _ in 0..self.rng.gen_range(1..4) {
                let next = t + Duration::minutes(self.rng.gen_range(2..4));
                let stop = next + Duration::minutes(self.rng.gen_range(3..8));
                if stop >= self.end {
                    break;
                }
                self.episodes.push(Episode {
                    labels: l.clone(),
                    active_at: next,
                    fires_at: next,
                    resolves_at: stop,
                    truth,
                    flap: true,
                });
                t = stop;
            }
        }
    }
}

fn app_key(cluster: &str, ns: &str, name: &str) -> String {
    format!("{cluster}/{ns}/app/{name}")
}

/// Simulates a storm.
/// The fixed storms correlation quality is measured on (seeds 1 to 5, light
/// to very dense), by name: the quality example prints them and the tests
/// hold floors on them.
pub fn quality_scenarios() -> Vec<(&'static str, SimConfig)> {
    let cfg = |seed, clusters, faults_per_cluster| SimConfig {
        seed,
        clusters,
        faults_per_cluster,
        ..Default::default()
    };
    vec![
        ("4 clusters, light", cfg(1, 4, 2)),
        ("6 clusters, dense", cfg(2, 6, 5)),
        ("8 clusters, dense", cfg(3, 8, 6)),
        (
            "12 clusters, dense",
            SimConfig {
                nodes_per_cluster: 20,
                ..cfg(4, 12, 6)
            },
        ),
        (
            "12 clusters, very dense",
            SimConfig {
                nodes_per_cluster: 30,
                noise_per_hour: 8.0,
                ..cfg(5, 12, 10)
            },
        ),
    ]
}

/// The quality scenario with `seed`.
pub fn quality_scenario(seed: u64) -> SimConfig {
    quality_scenarios()
        .into_iter()
        .map(|(_, c)| c)
        .find(|c| c.seed == seed)
        .unwrap_or_else(|| panic!("no quality scenario with seed {seed}"))
}

pub fn simulate(cfg: &SimConfig) -> Storm {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let regions = ["bj", "sh", "gz", "sz", "hz", "cd"];
    let clusters: Vec<Cluster> = (0..cfg.clusters)
        .map(|i| {
            let name = format!(
                "prod-{}-{}",
                regions[i % regions.len()],
                i / regions.len() + 1
            );
            build_cluster(&mut rng, name, cfg, i == 0)
        })
        .collect();
    let start = chrono::Utc
        .timestamp_opt(1_767_225_600 + cfg.seed as i64 % 86_400 * 60, 0)
        .single()
        .expect("valid time");
    let end = start + cfg.duration;
    let mut g = Gen {
        rng,
        episodes: Vec::new(),
        truth: Truth::default(),
        seen: Default::default(),
        end,
    };
    let span = cfg.duration.num_seconds().max(3600) - 45 * 60;
    let mut cross_done = false;
    for c in &clusters {
        // Nodes already failed in this cluster: each fault hits fresh ones.
        let mut used_nodes: Vec<usize> = Vec::new();
        let mut used_apps: Vec<&str> = Vec::new();
        for _ in 0..cfg.faults_per_cluster {
            let t0 = start + Duration::seconds(g.rng.gen_range(0..span.max(1)));
            let dur = Duration::minutes(g.rng.gen_range(25..50));
            let fault_end = t0 + dur;
            let kind = g.rng.gen_range(0..100);
            let free_node = |g: &mut Gen, used: &[usize]| {
                let free: Vec<usize> = (0..c.nodes.len()).filter(|n| !used.contains(n)).collect();
                (!free.is_empty()).then(|| free[g.rng.gen_range(0..free.len())])
            };
            match kind {
                0..=29 => {
                    let Some(n) = free_node(&mut g, &used_nodes) else {
                        continue;
                    };
                    used_nodes.push(n);
                    let id = g.incident("node_down", format!("{}//node/{}", c.name, c.nodes[n]));
                    g.node_down(c, &[n], t0, fault_end, id);
                }
                30..=39 => {
                    let z = g.rng.gen_range(0..c.zones.len());
                    let nodes: Vec<usize> = (0..c.nodes.len())
                        .filter(|n| c.node_zone[*n] == z && !used_nodes.contains(n))
                        .collect();
                    if nodes.len() < 2 {
                        continue;
                    }
                    used_nodes.extend(&nodes);
                    let id = g.incident("zone_outage", format!("{}//zone/{}", c.name, c.zones[z]));
                    g.node_down(c, &nodes, t0, fault_end, id);
                }
                40..=54 => {
                    let candidates = ["payment", "catalog-db", "checkout"];
                    let name = candidates[g.rng.gen_range(0..candidates.len())];
                    if used_apps.contains(&name) {
                        continue;
                    }
                    used_apps.push(name);
                    let app = c.apps.iter().find(|a| a.name == name).expect("app exists");
                    let dependents: Vec<(&Cluster, &str, &str)> = match name {
                        "payment" => vec![(c, "shop", "checkout"), (c, "shop", "frontend")],
                        "catalog-db" => vec![(c, "shop", "catalog"), (c, "shop", "frontend")],
                        _ => vec![(c, "shop", "frontend")],
                    };
                    let id = g.incident("dependency_down", app_key(&c.name, app.ns, app.name));
                    g.app_down(c, app, t0, fault_end, id, &dependents);
                }
                55..=69 => {
                    let Some(n) = free_node(&mut g, &used_nodes) else {
                        continue;
                    };
                    used_nodes.push(n);
                    let id = g.incident("disk_full", format!("{}//node/{}", c.name, c.nodes[n]));
                    g.disk_full(c, n, t0 - Duration::minutes(30), fault_end, id);
                }
                70..=77 => {
                    let id = g.incident(
                        "control_plane_down",
                        format!("{}//control_plane/control-plane", c.name),
                    );
                    g.control_plane_down(c, t0, fault_end, id);
                }
                78..=91 => {
                    let cands: Vec<&App> = c
                        .apps
                        .iter()
                        .filter(|a| a.kind == "Deployment" && !used_apps.contains(&a.name))
                        .collect();
                    if cands.is_empty() {
                        continue;
                    }
                    let app = cands[g.rng.gen_range(0..cands.len())];
                    used_apps.push(app.name);
                    let id = g.incident("bad_rollout", app_key(&c.name, app.ns, app.name));
                    g.bad_rollout(c, app, t0, fault_end, id);
                }
                _ => {
                    if cross_done || clusters.len() < 2 {
                        continue;
                    }
                    cross_done = true;
                    let home = &clusters[0];
                    let auth = home
                        .apps
                        .iter()
                        .find(|a| a.name == AUTH.1)
                        .expect("auth in first cluster");
                    let dependents: Vec<(&Cluster, &str, &str)> =
                        clusters.iter().map(|dc| (dc, "shop", "checkout")).collect();
                    let id = g.incident(
                        "cross_cluster_dependency",
                        app_key(&home.name, AUTH.0, AUTH.1),
                    );
                    g.app_down(home, auth, t0, fault_end, id, &dependents);
                }
            }
        }
        let hours = cfg.duration.num_minutes() as f64 / 60.0;
        let n_noise = (cfg.noise_per_hour * hours).round() as usize;
        for _ in 0..n_noise {
            let t0 = start + Duration::seconds(g.rng.gen_range(0..cfg.duration.num_seconds()));
            g.noise(c, t0);
        }
    }
    g.settle();
    let lines = dispatch(&mut g.rng, &clusters, &g.episodes, end, cfg.double_delivery);
    // Identities that never got delivered are not part of the truth.
    let delivered: std::collections::HashSet<Fingerprint> = g
        .episodes
        .iter()
        .filter(|e| e.fires_at < end)
        .map(|e| e.labels.fingerprint())
        .collect();
    g.truth.alerts.retain(|fp, _| delivered.contains(fp));
    Storm {
        lines,
        truth: g.truth,
        topology_bodies: topology_bodies(&clusters),
        services_yaml: services_yaml(&clusters[0].name),
    }
}

fn topology_bodies(clusters: &[Cluster]) -> BTreeMap<String, String> {
    let mut pod_info = Vec::new();
    let mut pod_owner = Vec::new();
    let mut rs_owner = Vec::new();
    let mut node_labels = Vec::new();
    for c in clusters {
        for (i, n) in c.nodes.iter().enumerate() {
            node_labels.push(vec![
                ("__name__", "kube_node_labels".to_owned()),
                ("cluster", c.name.clone()),
                ("node", n.clone()),
                (
                    "label_topology_kubernetes_io_zone",
                    c.zones[c.node_zone[i]].clone(),
                ),
            ]);
        }
        for a in &c.apps {
            let mut rs_seen = Vec::new();
            for (pod, node) in &a.pods {
                pod_info.push(vec![
                    ("__name__", "kube_pod_info".to_owned()),
                    ("cluster", c.name.clone()),
                    ("namespace", a.ns.to_owned()),
                    ("pod", pod.clone()),
                    ("node", c.nodes[*node].clone()),
                ]);
                let (kind, owner) = if a.kind == "Deployment" {
                    let rs = pod
                        .rsplit_once('-')
                        .map_or(pod.as_str(), |(p, _)| p)
                        .to_owned();
                    if !rs_seen.contains(&rs) {
                        rs_owner.push(vec![
                            ("cluster", c.name.clone()),
                            ("namespace", a.ns.to_owned()),
                            ("replicaset", rs.clone()),
                            ("owner_kind", "Deployment".to_owned()),
                            ("owner_name", a.name.to_owned()),
                        ]);
                        rs_seen.push(rs.clone());
                    }
                    ("ReplicaSet".to_owned(), rs)
                } else {
                    (a.kind.to_owned(), a.name.to_owned())
                };
                pod_owner.push(vec![
                    ("cluster", c.name.clone()),
                    ("namespace", a.ns.to_owned()),
                    ("pod", pod.clone()),
                    ("owner_kind", kind),
                    ("owner_name", owner),
                ]);
            }
        }
    }
    let mut out = BTreeMap::new();
    out.insert("kube_pod_info".to_owned(), query_body(&pod_info));
    out.insert("kube_pod_owner".to_owned(), query_body(&pod_owner));
    out.insert("kube_replicaset_owner".to_owned(), query_body(&rs_owner));
    out.insert("kube_node_labels".to_owned(), query_body(&node_labels));
    out
}

fn rfc3339(t: Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Alertmanager's dispatch per cluster: one aggregation group per namespace,
/// flushed after `group_wait` and then every `group_interval` while something
/// changed; resolved alerts are sent once, then dropped from the group.
fn dispatch(
    rng: &mut StdRng,
    clusters: &[Cluster],
    episodes: &[Episode],
    end: Timestamp,
    double: f64,
) -> Vec<ReplayLine> {
    let group_wait = Duration::seconds(30);
    let group_interval = Duration::minutes(5);
    let mut groups: BTreeMap<(String, String), Vec<&Episode>> = BTreeMap::new();
    for e in episodes {
        if e.fires_at >= end {
            continue;
        }
        let c = e.labels.get_or_empty("cluster").to_owned();
        let ns = e.labels.get_or_empty("namespace").to_owned();
        groups.entry((c, ns)).or_default().push(e);
    }
    let mut lines = Vec::new();
    let horizon = end + Duration::hours(2);
    for ((cluster, ns), eps) in groups {
        let ext = format!("http://alertmanager.{cluster}.example:9093");
        debug_assert!(clusters.iter().any(|c| c.name == cluster));
        let mut pending: Vec<&Episode> = eps.clone();
        pending.sort_by_key(|e| e.fires_at);
        // (fingerprint → last status sent) for the current group lifetime.
        let mut sent: HashMap<Fingerprint, (Timestamp, bool)> = HashMap::new();
        let mut next = match pending.first() {
            Some(e) => e.fires_at + group_wait,
            None => continue,
        };
        while next <= horizon {
            let now = next;
            // Alerts in the group: fired by now and not yet resolved-and-sent.
            let mut payload_alerts = Vec::new();
            let mut changed = false;
            let mut any_firing = false;
            let mut active: Vec<&Episode> = pending
                .iter()
                .copied()
                .filter(|e| e.fires_at <= now)
                .collect();
            // The latest episode per identity wins.
            active.sort_by_key(|e| (e.labels.fingerprint(), e.fires_at));
            let mut latest: BTreeMap<Fingerprint, &Episode> = BTreeMap::new();
            for e in active {
                latest.insert(e.labels.fingerprint(), e);
            }
            for (fp, e) in &latest {
                let firing = e.resolves_at > now;
                let prev = sent.get(fp);
                let was_sent_resolved = prev.is_some_and(|(at, f)| !*f && *at == e.active_at);
                if !firing && was_sent_resolved {
                    continue;
                }
                if prev != Some(&(e.active_at, firing)) {
                    changed = true;
                }
                any_firing |= firing;
                payload_alerts.push((*fp, *e, firing));
            }
            if changed && !payload_alerts.is_empty() {
                let alerts: Vec<serde_json::Value> = payload_alerts
                    .iter()
                    .map(|(fp, e, firing)| {
                        serde_json::json!({
                            "status": if *firing { "firing" } else { "resolved" },
                            "labels": e.labels,
                            "annotations": {"summary": format!("{} on {}", e.labels.alertname(), cluster)},
                            "startsAt": rfc3339(e.fires_at),
                            "endsAt": if *firing { "0001-01-01T00:00:00Z".to_owned() } else { rfc3339(e.resolves_at) },
                            "generatorURL": format!("http://prometheus.{cluster}.example:9090/graph"),
                            "fingerprint": fp.to_string(),
                        })
                    })
                    .collect();
                let common = common_labels(payload_alerts.iter().map(|(_, e, _)| &e.labels));
                let payload = serde_json::json!({
                    "version": "4",
                    "groupKey": format!("{{}}:{{namespace=\"{ns}\"}}"),
                    "truncatedAlerts": 0,
                    "status": if any_firing { "firing" } else { "resolved" },
                    "receiver": "stormcast",
                    "groupLabels": {"namespace": ns},
                    "commonLabels": common,
                    "commonAnnotations": {},
                    "externalURL": ext,
                    "alerts": alerts,
                });
                let source = format!("am-{cluster}");
                if rng.gen_bool(double) {
                    lines.push(ReplayLine {
                        at: now + Duration::milliseconds(rng.gen_range(200..3000)),
                        payload: payload.clone(),
                        source: source.clone(),
                    });
                }
                lines.push(ReplayLine {
                    at: now,
                    payload,
                    source,
                });
                for (fp, e, firing) in &payload_alerts {
                    sent.insert(*fp, (e.active_at, *firing));
                }
            }
            // Next flush: the next interval, or a fresh group after a quiet spell.
            let upcoming = pending
                .iter()
                .filter(|e| e.fires_at > now)
                .map(|e| e.fires_at)
                .min();
            if !any_firing && payload_alerts.iter().all(|(_, _, f)| !f) {
                pending.retain(|e| e.fires_at > now);
                sent.retain(|_, (_, f)| *f);
                match upcoming {
                    Some(t) if t > now + group_interval => next = t + group_wait,
                    Some(_) => next = now + group_interval,
                    None => break,
                }
            } else {
                next = now + group_interval;
            }
        }
    }
    lines.sort_by_key(|l| l.at);
    lines
}

fn common_labels<'a>(mut it: impl Iterator<Item = &'a Labels>) -> BTreeMap<String, String> {
    let Some(first) = it.next() else {
        return BTreeMap::new();
    };
    let mut common: BTreeMap<String, String> = first
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for l in it {
        common.retain(|k, v| l.get(k) == Some(v.as_str()));
    }
    common
}

/// Result of running a storm through stormcast's replay.
#[derive(Debug)]
pub struct Run {
    pub result: crate::app::ReplayResult,
    /// Wall time of the replay (parse, engine, correlation).
    pub elapsed: std::time::Duration,
}

impl Storm {
    /// The rules the storm's fleet runs with: shipped defaults plus its
    /// declared dependencies.
    pub fn rules(&self) -> crate::correlate::Rules {
        let mut r = crate::correlate::Rules::default();
        r.add(
            crate::correlate::rules::parse_rules(&self.services_yaml)
                .expect("simulated rules parse"),
        );
        r
    }

    /// Replays the storm through the engine on a virtual clock.
    pub fn run(&self, with_topology: bool) -> anyhow::Result<Run> {
        self.run_with(self.rules(), with_topology)
    }

    /// Like [`run`](Self::run) with other rules (a learned section added).
    pub fn run_with(
        &self,
        rules: crate::correlate::Rules,
        with_topology: bool,
    ) -> anyhow::Result<Run> {
        let loaded = crate::app::Loaded {
            config: crate::config::Config::default(),
            ctx: crate::config::ValidateCtx {
                base_dir: std::path::PathBuf::from("."),
            },
            correlate: crate::correlate::CorrelateSettings::from_rules(rules),
            topology: std::sync::Arc::new(if with_topology {
                self.topology()
            } else {
                Topology::default()
            }),
            notify: Default::default(),
            models: Vec::new(),
        };
        let opts = crate::app::ReplayOptions {
            input: std::path::PathBuf::from("-"),
            drain: Duration::hours(1),
            progress: false,
        };
        let text = self.jsonl();
        let started = std::time::Instant::now();
        let (result, rejections) = crate::app::replay_text(&loaded, &text, &opts)?;
        let elapsed = started.elapsed();
        anyhow::ensure!(
            rejections.is_empty(),
            "simulated lines rejected: {:?}",
            rejections.first()
        );
        Ok(Run { result, elapsed })
    }

    /// Every alert identity delivered, with labels and first start, for the
    /// baseline.
    pub fn alerts(&self) -> Vec<(Fingerprint, Labels, Timestamp)> {
        let mut seen: BTreeMap<Fingerprint, (Labels, Timestamp)> = BTreeMap::new();
        for l in &self.lines {
            let Some(alerts) = l.payload.get("alerts").and_then(|a| a.as_array()) else {
                continue;
            };
            for a in alerts {
                let Ok(labels) = serde_json::from_value::<Labels>(a["labels"].clone()) else {
                    continue;
                };
                let starts = a["startsAt"]
                    .as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .unwrap_or(l.at);
                seen.entry(labels.fingerprint()).or_insert((labels, starts));
            }
        }
        seen.into_iter().map(|(fp, (l, t))| (fp, l, t)).collect()
    }
}
