//! Arbitrary text as a config file: parsing and validation must report errors,
//! never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stormcast::config::{parse_yaml, Config, ValidateCtx};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mut c) = parse_yaml::<Config>(text) {
        let ctx = ValidateCtx {
            base_dir: std::env::temp_dir(),
        };
        let _ = c.validate(&ctx);
    }
});
