//! Arbitrary cron expressions, zones and instants: parsing and evaluation never
//! panic and the fires of a schedule strictly increase.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use worker_controller::scheduler::cron::CronSchedule;

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let zones = chrono_tz::TZ_VARIANTS;
    let zone = zones[usize::from(data[0]) * zones.len() / 256];
    let secs = i64::from_le_bytes(data[1..9].try_into().unwrap()) % 400_000_000_000;
    let Some(from) = Utc.timestamp_opt(secs, 0).single() else {
        return;
    };
    let expr = String::from_utf8_lossy(&data[9..]);
    if let Ok(schedule) = CronSchedule::parse(&expr, zone) {
        let mut prev = from;
        for _ in 0..3 {
            let Some(next) = schedule.next_after(prev) else { break };
            assert!(next > prev, "{expr:?} in {zone}: {next} after {prev}");
            prev = next;
        }
    }
});
