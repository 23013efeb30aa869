//! Positional arguments of a benchmark (`cargo bench --bench NAME -- 10000
//! 2016`), without the flags cargo passes (`--bench`).
#![allow(dead_code)]

use std::str::FromStr;

/// The arguments that are not flags, in order.
pub fn positional() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect()
}

/// Argument `i` parsed, or `default` when it is absent or does not parse.
pub fn nth<T: FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}
