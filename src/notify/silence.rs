//! Silences, in Alertmanager's shape: matchers, a time window, an author and
//! a comment. An incident is silenced while any active silence matches it
//! (matched as the routing tree matches it).

use serde::{Deserialize, Serialize};

use super::matcher::{MatchOp, Matcher, MatcherError};
use super::route::incident_label_sets;
use crate::domain::{Incident, Timestamp};

/// One matcher as Alertmanager's API writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SilenceMatcher {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub is_regex: bool,
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl SilenceMatcher {
    pub fn compile(&self) -> Result<Matcher, MatcherError> {
        let op = match (self.is_regex, self.is_equal) {
            (false, true) => MatchOp::Equal,
            (false, false) => MatchOp::NotEqual,
            (true, true) => MatchOp::Regex,
            (true, false) => MatchOp::NotRegex,
        };
        Matcher::new(&self.name, op, &self.value)
    }

    pub fn from_matcher(m: &Matcher) -> Self {
        SilenceMatcher {
            name: m.name.clone(),
            value: m.value.clone(),
            is_regex: matches!(m.op, MatchOp::Regex | MatchOp::NotRegex),
            is_equal: matches!(m.op, MatchOp::Equal | MatchOp::Regex),
        }
    }
}

/// A silence as stored and served by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    #[serde(default)]
    pub id: String,
    pub matchers: Vec<SilenceMatcher>,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub created_by: String,
    pub comment: String,
}

/// Where a silence is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

/// Why a silence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SilenceError {
    #[error("a silence needs at least one matcher")]
    NoMatchers,
    #[error("{0}")]
    Matcher(#[from] MatcherError),
    #[error("endsAt must be after startsAt")]
    BadWindow,
    #[error("createdBy and comment are required")]
    MissingAuthor,
    #[error("every matcher matches the empty string, so the silence would match everything")]
    MatchesEverything,
}

impl Silence {
    pub fn state(&self, now: Timestamp) -> SilenceState {
        if now < self.starts_at {
            SilenceState::Pending
        } else if now < self.ends_at {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }

    /// Checks the silence; returns its compiled matchers.
    pub fn validate(&self) -> Result<Vec<Matcher>, SilenceError> {
        if self.matchers.is_empty() {
            return Err(SilenceError::NoMatchers);
        }
        if self.ends_at <= self.starts_at {
            return Err(SilenceError::BadWindow);
        }
        if self.created_by.trim().is_empty() || self.comment.trim().is_empty() {
            return Err(SilenceError::MissingAuthor);
        }
        let ms = self
            .matchers
            .iter()
            .map(SilenceMatcher::compile)
            .collect::<Result<Vec<_>, _>>()?;
        if ms.iter().all(|m| m.matches_value("")) {
            return Err(SilenceError::MatchesEverything);
        }
        Ok(ms)
    }

    /// Whether the silence mutes `inc` at `now`.
    pub fn mutes(&self, inc: &Incident, now: Timestamp) -> bool {
        if self.state(now) != SilenceState::Active {
            return false;
        }
        let Ok(ms) = self.validate() else {
            return false;
        };
        incident_label_sets(inc)
            .iter()
            .any(|l| super::matcher::all_match(&ms, l))
    }
}
