//! Arbitrary bytes as a `scheduler.yaml` document: loading never panics, and a
//! refusal always carries at least one located problem with a message.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use worker_controller::config::parse_scheduler_yaml;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(errors) = parse_scheduler_yaml(Path::new("scheduler.yaml"), &text, &|_| Err("no variables".into())) {
        assert!(!errors.0.is_empty());
        assert!(errors.0.iter().all(|e| !e.message.is_empty()));
    }
});
