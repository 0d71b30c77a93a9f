//! The YAML loader and the runtime compiler: any text gives a config or a located error,
//! never a panic.
#![no_main]

use avx_gateway::{Config, Gateway};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Config::from_yaml_str(&text) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(cfg) => {
            // Building opens an access log file when one is configured: keep the fuzzer
            // from writing files.
            if cfg.access_log.enabled && cfg.access_log.path != "stdout" {
                return;
            }
            let _ = Gateway::builder().config(cfg).build();
        }
    }
});
