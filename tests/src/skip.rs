//! Tests that need something a laptop may lack (a PostgreSQL server, network
//! namespaces) skip themselves there, visibly, and fail under CI.
//!
//! A skipped test still counts as passed for the test harness, so the notice
//! is written straight to the process's standard error, past the harness's
//! output capture: it shows even when every test passes. Each notice is one
//! line, `SKIPPED <test>: <reason>`, which `.ci/run` counts per suite. When the
//! `CI` environment variable is set (to anything but empty, `0` or `false`),
//! a test that cannot run fails instead, saying why: CI must not pass with a
//! suite silently left out.

use std::fmt::Display;
use std::io::Write;

/// Whether this run is CI (`CI` set to anything but empty, `0` or `false`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Skips the calling test because `reason` (what is missing and how to provide
/// it): writes the notice and returns, so the caller can `return`. Under CI it
/// panics with the same reason instead.
pub fn skip_or_fail(reason: impl Display) {
    let test = std::thread::current().name().unwrap_or("<unnamed test>").to_string();
    if under_ci() {
        panic!("{test} cannot run, and CI must not skip it: {reason}");
    }
    // Not `eprintln!`: the harness would capture it and hide it on success.
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {reason}");
}
