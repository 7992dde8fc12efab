//! Arbitrary bytes as an enqueue payload: validation never panics, accepts
//! only JSON (or nothing), and never echoes the payload in its refusal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use worker_controller::engine::validate_payload;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match validate_payload(&text) {
        Ok(stored) => assert!(stored == "null" || stored == *text),
        Err(message) => assert!(!message.is_empty() && message.len() <= 512),
    }
});
