//! Server-side selection for `GET /api/v1/incidents`: filters, search,
//! sorting and pagination, so that a client never has to fetch every
//! incident of a storm to find one.

use serde::Deserialize;

use super::ApiError;
use crate::domain::{severity_rank, Incident};

/// The query string of `GET /api/v1/incidents`. Every filter is optional;
/// given several, an incident must pass all of them.
#[derive(Debug, Default, Deserialize)]
pub struct IncidentQuery {
    /// `open`, `resolved` or `all` (the default).
    pub state: Option<String>,
    /// Only incidents with a member in this cluster.
    pub cluster: Option<String>,
    /// Only incidents with a member in this namespace.
    pub namespace: Option<String>,
    /// Only incidents with a member alert of this name.
    pub alertname: Option<String>,
    /// Only incidents whose highest severity is this one.
    pub severity: Option<String>,
    /// Free text: every word must appear (case-insensitively) in the root
    /// cause, its entity, the incident id, or a member's label value.
    pub q: Option<String>,
    /// `newest` (the default: most recently opened first) or `severity`
    /// (highest severity first, then most alerts, then newest).
    pub sort: Option<String>,
    /// Incidents to skip, after filtering and sorting.
    pub offset: Option<usize>,
    /// Most incidents to return (default 500).
    pub limit: Option<usize>,
    /// `true` to list incidents merged into another (they hold no alerts).
    pub merged: Option<bool>,
}

/// The page of incidents a query selects, and how many matched in all.
#[derive(Debug)]
pub struct Selected {
    pub total: usize,
    pub page: Vec<Incident>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Sort {
    Newest,
    Severity,
}

impl IncidentQuery {
    /// Selects from `incidents` (oldest first, as the engine keeps them).
    /// An unknown `state` or `sort` is a 400 that names the parameter.
    pub fn select<'a>(
        &self,
        incidents: impl IntoIterator<Item = &'a Incident>,
    ) -> Result<Selected, ApiError> {
        let want_open = match self.state.as_deref() {
            None | Some("") | Some("all") => None,
            Some("open") => Some(true),
            Some("resolved") => Some(false),
            Some(other) => {
                return Err(bad(
                    "state",
                    format!("{other:?} is not one of open, resolved, all"),
                ))
            }
        };
        let sort = match self.sort.as_deref() {
            None | Some("") | Some("newest") => Sort::Newest,
            Some("severity") => Sort::Severity,
            Some(other) => {
                return Err(bad(
                    "sort",
                    format!("{other:?} is not one of newest, severity"),
                ))
            }
        };
        let words: Vec<String> = self
            .q
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        let nonempty =
            |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
        let (cluster, namespace, alertname, severity) = (
            nonempty(&self.cluster),
            nonempty(&self.namespace),
            nonempty(&self.alertname),
            nonempty(&self.severity),
        );
        let member_has = |i: &Incident, key: &str, want: &str| {
            i.alerts
                .iter()
                .any(|a| a.labels.get(key).is_some_and(|v| v == want))
        };
        let mut out: Vec<(usize, &Incident)> = incidents
            .into_iter()
            .enumerate()
            .filter(|(_, i)| self.merged.unwrap_or(false) || !i.alerts.is_empty() || i.is_open())
            .filter(|(_, i)| want_open.is_none_or(|o| i.is_open() == o))
            .filter(|(_, i)| {
                cluster
                    .as_deref()
                    .is_none_or(|c| i.clusters.iter().any(|x| x == c))
            })
            .filter(|(_, i)| {
                namespace
                    .as_deref()
                    .is_none_or(|n| member_has(i, "namespace", n))
            })
            .filter(|(_, i)| {
                alertname
                    .as_deref()
                    .is_none_or(|n| member_has(i, "alertname", n))
            })
            .filter(|(_, i)| severity.as_deref().is_none_or(|s| i.severity == s))
            .filter(|(_, i)| mentions_all(i, &words))
            .collect();
        match sort {
            Sort::Newest => out.sort_by_key(|x| std::cmp::Reverse(x.0)),
            Sort::Severity => out.sort_by(|a, b| {
                severity_rank(&b.1.severity)
                    .cmp(&severity_rank(&a.1.severity))
                    .then(b.1.alerts.len().cmp(&a.1.alerts.len()))
                    .then(b.0.cmp(&a.0))
            }),
        }
        let total = out.len();
        let page = out
            .into_iter()
            .skip(self.offset.unwrap_or(0))
            .take(self.limit.unwrap_or(500))
            .map(|(_, i)| i.clone())
            .collect();
        Ok(Selected { total, page })
    }
}

/// A 400 naming the query parameter `field`.
fn bad(field: &str, why: String) -> ApiError {
    let mut e = ApiError::bad_request(format!("{field}: {why}"));
    e.field = Some(field.to_owned());
    e
}

/// Whether every lower-case word appears in the incident's id, root cause,
/// its entity or a member's label value (lower-cased once per incident).
fn mentions_all(i: &Incident, words: &[String]) -> bool {
    if words.is_empty() {
        return true;
    }
    let rc = &i.root_cause;
    let mut hay = format!("{}\n{}\n{}", i.id, rc.explanation, rc.entity.name);
    for a in &i.alerts {
        for (_, v) in a.labels.iter() {
            hay.push('\n');
            hay.push_str(v);
        }
    }
    let hay = hay.to_lowercase();
    words.iter().all(|w| hay.contains(w.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AlertStatus, Entity, EntityKind, IncidentAlert, Labels, RootCause};

    fn query(s: &str) -> IncidentQuery {
        let uri: axum::http::Uri = format!("/api/v1/incidents?{s}").parse().unwrap();
        axum::extract::Query::<IncidentQuery>::try_from_uri(&uri)
            .unwrap()
            .0
    }

    fn incident(id: &str, severity: &str, open: bool, members: &[&[(&str, &str)]]) -> Incident {
        let at = chrono::DateTime::parse_from_rfc3339("2026-03-02T08:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let alerts: Vec<IncidentAlert> = members
            .iter()
            .enumerate()
            .map(|(k, l)| IncidentAlert {
                fingerprint: crate::domain::Fingerprint(k as u64 + 1),
                labels: l.iter().copied().collect(),
                status: if open {
                    AlertStatus::Firing
                } else {
                    AlertStatus::Resolved
                },
                starts_at: at,
                ends_at: None,
            })
            .collect();
        let cluster = alerts
            .first()
            .and_then(|a| a.labels.get("cluster"))
            .unwrap_or("c1")
            .to_owned();
        Incident {
            id: id.into(),
            opened_at: at,
            updated_at: at,
            resolved_at: (!open).then_some(at),
            root_cause: RootCause {
                fingerprint: None,
                labels: Labels::default(),
                entity: Entity {
                    kind: EntityKind::Node,
                    name: format!("{id}-node"),
                    cluster: Some(cluster.clone()),
                    namespace: None,
                },
                explanation: format!("{id} explains it"),
                score: 1.0,
            },
            candidates: Vec::new(),
            alerts,
            clusters: vec![cluster],
            severity: severity.into(),
            predictive: false,
            storm: false,
        }
    }

    fn ids(s: &Selected) -> Vec<&str> {
        s.page.iter().map(|i| i.id.as_str()).collect()
    }

    fn fleet() -> Vec<Incident> {
        let a = [
            ("alertname", "KubePodCrashLooping"),
            ("cluster", "prod-a"),
            ("namespace", "shop"),
        ];
        let b = [
            ("alertname", "KubeNodeNotReady"),
            ("cluster", "prod-b"),
            ("node", "node-07"),
        ];
        let c = [
            ("alertname", "KubeJobFailed"),
            ("cluster", "prod-a"),
            ("namespace", "batch"),
        ];
        vec![
            incident("inc-1", "warning", true, &[&a, &a]),
            incident("inc-2", "critical", true, &[&b]),
            incident("inc-3", "warning", true, &[&c, &c, &c]),
            incident("inc-4", "critical", false, &[&b]),
            // Merged into another: no members left.
            incident("inc-5", "warning", false, &[]),
        ]
    }

    #[test]
    fn filters_search_and_pages_on_the_server() {
        let all = fleet();
        let q = query;
        assert_eq!(
            ids(&q("").select(&all).unwrap()),
            ["inc-4", "inc-3", "inc-2", "inc-1"]
        );
        assert_eq!(
            ids(&q("state=open&cluster=prod-a").select(&all).unwrap()),
            ["inc-3", "inc-1"]
        );
        assert_eq!(ids(&q("namespace=batch").select(&all).unwrap()), ["inc-3"]);
        assert_eq!(
            ids(&q("alertname=KubeNodeNotReady&state=open")
                .select(&all)
                .unwrap()),
            ["inc-2"]
        );
        // Words match label values and the root cause, case-insensitively.
        assert_eq!(
            ids(&q("q=NODE-07").select(&all).unwrap()),
            ["inc-4", "inc-2"]
        );
        assert_eq!(ids(&q("q=prod-a+crash").select(&all).unwrap()), ["inc-1"]);
        // Severity first, then size, then newest.
        assert_eq!(
            ids(&q("sort=severity").select(&all).unwrap()),
            ["inc-4", "inc-2", "inc-3", "inc-1"]
        );
        let page = q("sort=severity&offset=1&limit=2").select(&all).unwrap();
        assert_eq!((page.total, ids(&page)), (4, vec!["inc-2", "inc-3"]));
        assert_eq!(
            ids(&q("merged=true&state=resolved").select(&all).unwrap()),
            ["inc-5", "inc-4"]
        );
    }

    #[test]
    fn a_bad_parameter_is_named() {
        let all = fleet();
        for (query_string, field) in [("state=closed", "state:"), ("sort=size", "sort:")] {
            let q = query(query_string);
            let err = q.select(&all).unwrap_err();
            assert!(err.message.starts_with(field), "{}", err.message);
        }
    }
}
