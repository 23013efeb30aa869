//! Label sets and cluster identity.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Fingerprint;

/// A sorted label set. Sorted storage makes fingerprinting and equality cheap and
/// keeps serialised output stable.
///
/// The pairs live in one shared, immutable slice: an alert's labels are copied
/// into its incident, its root cause and every notification snapshot, and with
/// a fleet's worth of active alerts those copies would dominate memory. A
/// clone is a reference count; the rare change copies the slice. Label names
/// are few and repeat on every alert, so they are shared too ([`name`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Arc<[(Arc<str>, Box<str>)]>);

/// Most distinct label names shared; names past it (a sender inventing
/// names) each get their own copy, so the table cannot grow without bound.
const MAX_SHARED_NAMES: usize = 4096;

/// The shared copy of a label name.
fn name(n: &str) -> Arc<str> {
    use std::collections::HashSet;
    use std::sync::{OnceLock, RwLock};
    static NAMES: OnceLock<RwLock<HashSet<Arc<str>, foldhash::fast::RandomState>>> =
        OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    if let Some(shared) = names.read().unwrap_or_else(|e| e.into_inner()).get(n) {
        return shared.clone();
    }
    let mut names = names.write().unwrap_or_else(|e| e.into_inner());
    if let Some(shared) = names.get(n) {
        return shared.clone();
    }
    let shared: Arc<str> = Arc::from(n);
    if names.len() < MAX_SHARED_NAMES {
        names.insert(shared.clone());
    }
    shared
}

impl Default for Labels {
    fn default() -> Self {
        Labels(Arc::new([]))
    }
}

impl Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(d).map(Labels::from_sorted_map)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelsError {
    #[error("invalid label name {0:?}: must match [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidName(String),
}

/// Prometheus' classic label-name rule (`model.LabelName.IsValid` in legacy mode).
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Labels {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a label set after checking every name.
    pub fn try_from_map(map: BTreeMap<String, String>) -> Result<Self, LabelsError> {
        if let Some(bad) = map.keys().find(|k| !is_valid_label_name(k)) {
            return Err(LabelsError::InvalidName(bad.clone()));
        }
        Ok(Self::from_sorted_map(map))
    }

    /// A label set from a map whose names are already checked: a map is
    /// sorted and unique, so the pairs are taken over as they are.
    pub fn from_sorted_map(map: BTreeMap<String, String>) -> Self {
        Labels(
            map.into_iter()
                .map(|(k, v)| (name(&k), v.into_boxed_str()))
                .collect(),
        )
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(name))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        // Alerts carry a handful of labels: a scan that compares lengths
        // first beats a binary search of string comparisons.
        if self.0.len() <= 16 {
            return self
                .0
                .iter()
                .find(|(k, _)| k.len() == name.len() && **k == *name)
                .map(|(_, v)| &**v);
        }
        self.position(name).ok().map(|i| &*self.0[i].1)
    }

    /// A missing label reads as the empty string, as in Alertmanager matchers.
    pub fn get_or_empty(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }

    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into().into_boxed_str());
        let mut pairs = self.0.to_vec();
        match self.position(&name) {
            Ok(i) => pairs[i].1 = value,
            Err(i) => pairs.insert(i, (self::name(&name), value)),
        }
        self.0 = pairs.into();
    }

    pub fn remove(&mut self, name: &str) -> Option<String> {
        let i = self.position(name).ok()?;
        let mut pairs = self.0.to_vec();
        let (_, v) = pairs.remove(i);
        self.0 = pairs.into();
        Some(v.into_string())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Alertmanager's fingerprint of this label set.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_sorted(self.iter())
    }

    /// The alert name, or the empty string.
    pub fn alertname(&self) -> &str {
        self.get_or_empty("alertname")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Prometheus' text form: `{a="1", b="2"}`.
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}={v:?}")?;
        }
        f.write_str("}")
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Labels {
    /// Later pairs win over earlier ones with the same name, as in a map.
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        Self::from_sorted_map(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// The name of a Kubernetes cluster, as carried by the `cluster` label.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClusterId(Arc<str>);

impl ClusterId {
    pub fn new(name: impl AsRef<str>) -> Self {
        ClusterId(Arc::from(name.as_ref()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, sharing this id's allocation.
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({})", &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_name_rules() {
        for ok in [
            "a",
            "_",
            "alertname",
            "label_topology_kubernetes_io_zone",
            "A1",
        ] {
            assert!(is_valid_label_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a.b", "é", "a b"] {
            assert!(!is_valid_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn display_is_prometheus_text() {
        let l: Labels = [("b", "2"), ("a", "x\"y")].into_iter().collect();
        assert_eq!(l.to_string(), r#"{a="x\"y", b="2"}"#);
    }
}
