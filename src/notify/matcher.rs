//! Label matchers in Alertmanager's syntax: `name="value"`, `!=`, `=~`, `!~`.
//!
//! Regexes are anchored (`^(?:re)$`) as in Alertmanager, and a missing label
//! reads as the empty string. Routes and silences share these.

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::domain::Labels;

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOp {
    #[serde(rename = "=")]
    Equal,
    #[serde(rename = "!=")]
    NotEqual,
    #[serde(rename = "=~")]
    Regex,
    #[serde(rename = "!~")]
    NotRegex,
}

impl MatchOp {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One compiled matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name && self.op == o.op && self.value == o.value
    }
}

/// Why a matcher string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid matcher {input:?}: {reason}")]
pub struct MatcherError {
    pub input: String,
    pub reason: String,
}

impl Matcher {
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, MatcherError> {
        let re = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$")).map_err(|e| MatcherError {
                    input: format!("{name}{}{value:?}", op.as_str()),
                    reason: format!("bad regex: {e}"),
                })?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            re,
        })
    }

    pub fn matches_value(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::Regex => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRegex => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get_or_empty(&self.name))
    }

    /// Parses one matcher: `name="value"`, `name=~"re.*"`, `name!=value`.
    pub fn parse(input: &str) -> Result<Self, MatcherError> {
        let err = |reason: &str| MatcherError {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let s = input.trim();
        let name_end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let name = &s[..name_end];
        if name.is_empty() {
            return Err(err("expected a label name before the operator"));
        }
        if !crate::domain::is_valid_label_name(name) {
            return Err(err("label name must match [a-zA-Z_][a-zA-Z0-9_]*"));
        }
        let rest = s[name_end..].trim_start();
        let (op, rest) = if let Some(r) = rest.strip_prefix("=~") {
            (MatchOp::Regex, r)
        } else if let Some(r) = rest.strip_prefix("!~") {
            (MatchOp::NotRegex, r)
        } else if let Some(r) = rest.strip_prefix("!=") {
            (MatchOp::NotEqual, r)
        } else if let Some(r) = rest.strip_prefix('=') {
            (MatchOp::Equal, r)
        } else {
            return Err(err(
                "expected an operator (=, !=, =~ or !~) after the label name",
            ));
        };
        let rest = rest.trim();
        let value = if let Some(q) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.chars();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        Some(c) => out.push(c),
                        None => return Err(err("unterminated escape in quoted value")),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => out.push(c),
                }
            }
            if !closed {
                return Err(err("missing closing quote"));
            }
            if !chars.as_str().trim().is_empty() {
                return Err(err("unexpected text after the closing quote"));
            }
            out
        } else {
            if rest.contains('"') {
                return Err(err("stray quote in unquoted value"));
            }
            rest.to_owned()
        };
        let mut m = Matcher::new(name, op, &value).map_err(|e| err(&e.reason))?;
        m.name = name.to_owned();
        Ok(m)
    }

    /// Parses one string that may hold several matchers: `{a="b", c=~"d"}` or
    /// a single `a="b"`.
    pub fn parse_list(input: &str) -> Result<Vec<Self>, MatcherError> {
        let s = input.trim();
        let inner = match s.strip_prefix('{') {
            Some(r) => r.strip_suffix('}').ok_or_else(|| MatcherError {
                input: input.to_owned(),
                reason: "missing closing brace".into(),
            })?,
            None => return Ok(vec![Matcher::parse(s)?]),
        };
        split_outside_quotes(inner)
            .into_iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| Matcher::parse(&p))
            .collect()
    }
}

fn split_outside_quotes(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut in_q = false;
    let mut esc = false;
    for c in s.chars() {
        if esc {
            esc = false;
        } else if c == '\\' && in_q {
            esc = true;
        } else if c == '"' {
            in_q = !in_q;
        } else if c == ',' && !in_q {
            out.push(String::new());
            continue;
        }
        out.last_mut().expect("non-empty").push(c);
    }
    out
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

/// All must match (an empty set matches everything).
pub fn all_match(ms: &[Matcher], labels: &Labels) -> bool {
    ms.iter().all(|m| m.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        let mut l = Labels::new();
        for (k, v) in pairs {
            l.insert(*k, *v);
        }
        l
    }

    #[test]
    fn operators_and_anchoring() {
        let l = labels(&[("severity", "critical"), ("cluster", "prod-eu-1")]);
        assert!(Matcher::parse(r#"severity="critical""#)
            .unwrap()
            .matches(&l));
        assert!(!Matcher::parse(r#"severity!="critical""#)
            .unwrap()
            .matches(&l));
        assert!(Matcher::parse(r#"cluster=~"prod-.*""#).unwrap().matches(&l));
        // Anchored: a substring does not match.
        assert!(!Matcher::parse(r#"cluster=~"prod""#).unwrap().matches(&l));
        assert!(Matcher::parse(r#"cluster!~"dev-.*""#).unwrap().matches(&l));
        // Missing label is "".
        assert!(Matcher::parse(r#"team="""#).unwrap().matches(&l));
        assert!(Matcher::parse("team=~\"|db\"").unwrap().matches(&l));
        assert!(Matcher::parse("severity = critical").unwrap().matches(&l));
    }

    #[test]
    fn lists_and_escapes() {
        let ms = Matcher::parse_list(r#"{a="x,y", b=~"q\"r"}"#).unwrap();
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].value, "x,y");
        assert_eq!(ms[1].value, "q\"r");
    }

    #[test]
    fn clear_errors() {
        let e = Matcher::parse(r#"severity=="critical""#).unwrap_err();
        assert!(e.to_string().contains("stray quote"), "{e}");
        let e = Matcher::parse(r#"="x""#).unwrap_err();
        assert!(e.reason.contains("label name"), "{e}");
        let e = Matcher::parse(r#"a~"x""#).unwrap_err();
        assert!(e.reason.contains("operator"), "{e}");
        let e = Matcher::parse(r#"a=~"(""#).unwrap_err();
        assert!(e.reason.contains("bad regex"), "{e}");
        let e = Matcher::parse(r#"a="x"#).unwrap_err();
        assert!(e.reason.contains("closing quote"), "{e}");
    }
}
