//! Latency histograms and their summaries; the fixed arrival clock of `rate`.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::output::Table;

/// Largest value a histogram tracks: one hour, in microseconds.
pub const MAX_MICROS: u64 = 3_600_000_000;

/// A microsecond histogram with 3 significant digits, 1 µs to one hour.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid bounds")
}

/// Records `micros` (negative values, from clock jitter, count as 0; values
/// past one hour as one hour).
pub fn record(h: &mut Histogram<u64>, micros: i64) {
    h.saturating_record(micros.max(0) as u64);
}

/// Percentiles of a latency histogram, in milliseconds with 3 decimals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Latency {
    /// The summary of `h` (all 0 when it is empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self {
                count: 0,
                p50_ms: 0.0,
                p90_ms: 0.0,
                p99_ms: 0.0,
                p999_ms: 0.0,
                max_ms: 0.0,
                mean_ms: 0.0,
            };
        }
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: (h.mean()).round() / 1000.0,
        }
    }
}

/// A table of latency summaries, one row per `(name, summary)`, values in ms
/// with 3 decimals.
pub fn latency_table(rows: &[(&str, Latency)]) -> String {
    let mut table = Table::new(["LATENCY (ms)", "COUNT", "P50", "P90", "P99", "P99.9", "MAX", "MEAN"]);
    for (name, l) in rows {
        table.row([
            name.to_string(),
            l.count.to_string(),
            format!("{:.3}", l.p50_ms),
            format!("{:.3}", l.p90_ms),
            format!("{:.3}", l.p99_ms),
            format!("{:.3}", l.p999_ms),
            format!("{:.3}", l.max_ms),
            format!("{:.3}", l.mean_ms),
        ]);
    }
    table.render()
}

/// Number of arrivals at `rate` per second during `duration` (arrival `i` is at
/// `i / rate`, for every such instant strictly before the end).
pub fn arrivals(rate: f64, duration: Duration) -> u64 {
    let exact = rate * duration.as_secs_f64();
    let n = exact.ceil() as u64;
    n.max(1)
}

/// Offset of arrival `i` from the start: `i / rate`, to the nanosecond (computed
/// from `i`, never accumulated, so the clock does not drift).
pub fn intended_offset(i: u64, rate: f64) -> Duration {
    Duration::from_nanos((i as f64 * 1e9 / rate).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_clock_schedule() {
        assert_eq!(arrivals(200.0, Duration::from_secs(3)), 600);
        assert_eq!(arrivals(3.0, Duration::from_millis(1500)), 5); // 0, 0.33, 0.67, 1.0, 1.33
        assert_eq!(arrivals(0.1, Duration::from_secs(1)), 1);
        assert_eq!(intended_offset(0, 200.0), Duration::ZERO);
        assert_eq!(intended_offset(1, 200.0), Duration::from_millis(5));
        assert_eq!(intended_offset(599, 200.0), Duration::from_millis(2995));
        assert_eq!(intended_offset(1, 3.0), Duration::from_nanos(333_333_333));
        assert_eq!(intended_offset(3, 3.0), Duration::from_secs(1));
        // No drift over many arrivals.
        assert_eq!(intended_offset(1_000_000, 1000.0), Duration::from_secs(1000));
        // Every arrival is before the end.
        let (rate, d) = (7.0, Duration::from_secs(2));
        assert!(intended_offset(arrivals(rate, d) - 1, rate) < d);
        assert!(intended_offset(arrivals(rate, d), rate) >= d);
    }

    #[test]
    fn summary_in_milliseconds() {
        let mut h = histogram();
        for us in 1..=1000 {
            record(&mut h, us * 1000); // 1ms .. 1000ms
        }
        record(&mut h, -5);
        let l = Latency::of(&h);
        assert_eq!(l.count, 1001);
        // 3 significant digits: values are within 0.1% of the exact ones.
        assert!((l.p50_ms - 500.0).abs() <= 0.5, "{l:?}");
        assert!((l.p90_ms - 900.0).abs() <= 1.0, "{l:?}");
        assert!((l.p99_ms - 990.0).abs() <= 1.0, "{l:?}");
        assert!((l.max_ms - 1000.0).abs() <= 1.0, "{l:?}");
        assert_eq!(Latency::of(&histogram()).count, 0);
        assert_eq!(Latency::of(&histogram()).max_ms, 0.0);
    }

    #[test]
    fn small_values_keep_microseconds() {
        let mut h = histogram();
        record(&mut h, 1234);
        let l = Latency::of(&h);
        assert_eq!((l.p50_ms, l.max_ms, l.mean_ms), (1.234, 1.234, 1.234));
    }

    #[test]
    fn table_formats_three_decimals() {
        let mut h = histogram();
        record(&mut h, 1500);
        record(&mut h, 2500);
        let text = latency_table(&[("enqueue→start", Latency::of(&h))]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "LATENCY (ms)   COUNT  P50    P90    P99    P99.9  MAX    MEAN"
        );
        assert_eq!(
            lines[1],
            "enqueue→start  2      1.500  2.501  2.501  2.501  2.501  2.001"
        );
    }
}
