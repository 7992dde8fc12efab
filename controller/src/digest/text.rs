//! The plain-text part of a digest: a title, a summary line, then one
//! section per heading (the HTML part, `html.rs`, has the same headings and
//! order): runs by outcome per job, failures, slowest jobs, dead-letter
//! queue, reported costs. Tables are aligned with spaces.

use std::fmt::Write as _;

use super::facts::{Facts, human_ms, human_number};
use crate::alerting::detect::Links;

/// Section headings, shared with the HTML part.
pub const HEADINGS: [&str; 5] = [
    "Runs by outcome per job",
    "Failures",
    "Slowest jobs",
    "Dead-letter queue",
    "Reported costs",
];

/// The text part of the digest of `facts`.
pub fn render(facts: &Facts, links: &Links) -> String {
    let w = &facts.window;
    let mut out = String::new();
    let title = format!("Worker {} digest: {}", w.period, w.describe());
    let _ = writeln!(out, "{title}\n{}\n", "=".repeat(title.chars().count()));
    let _ = writeln!(out, "{}\n", summary(facts));

    heading(&mut out, HEADINGS[0]);
    if facts.jobs.is_empty() {
        out.push_str("Nothing finished in this window.\n");
    } else {
        let mut rows = vec![columns(&[
            "job",
            "succeeded",
            "failed",
            "timed out",
            "lost",
            "cancelled",
            "dead",
        ])];
        for j in &facts.jobs {
            rows.push(vec![
                j.job.clone(),
                j.succeeded.to_string(),
                j.failed.to_string(),
                j.timed_out.to_string(),
                j.lost.to_string(),
                j.cancelled.to_string(),
                j.dead.to_string(),
            ]);
        }
        table(&mut out, &rows);
        out.push_str("(succeeded, cancelled and dead count runs; failed, timed out and lost count attempts)\n");
    }
    out.push('\n');

    heading(&mut out, HEADINGS[1]);
    if facts.failures.is_empty() {
        out.push_str("No failed attempts.\n");
    } else {
        if facts.failures_total > facts.failures.len() as u64 {
            let _ = writeln!(
                out,
                "The newest {} of {} failed attempts:",
                facts.failures.len(),
                facts.failures_total
            );
        }
        for f in &facts.failures {
            let _ = writeln!(
                out,
                "- {}  {}  run {} attempt {}  {}",
                w.local(f.finished_at),
                f.job,
                f.run_id,
                f.attempt,
                f.outcome.replace('_', " ")
            );
            let error = f.error.trim();
            if !error.is_empty() {
                for line in error.lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
            if let Some(link) = links.run(&f.run_id) {
                let _ = writeln!(out, "    {link}");
            }
        }
    }
    out.push('\n');

    heading(&mut out, HEADINGS[2]);
    if facts.slowest.is_empty() {
        out.push_str("No attempts finished.\n");
    } else {
        let mut rows = vec![columns(&["job", "attempts", "mean", "longest"])];
        for s in &facts.slowest {
            rows.push(vec![
                s.job.clone(),
                s.attempts.to_string(),
                human_ms(s.avg_ms),
                human_ms(s.max_ms as f64),
            ]);
        }
        table(&mut out, &rows);
    }
    out.push('\n');

    heading(&mut out, HEADINGS[3]);
    let _ = writeln!(
        out,
        "{} run{} in the dead-letter queue now ({} went dead in this window).",
        facts.dead_letter,
        if facts.dead_letter == 1 { "" } else { "s" },
        facts.dead()
    );
    if facts.dead_letter > 0
        && let Some(link) = links.dlq()
    {
        let _ = writeln!(out, "{link}");
    }
    out.push('\n');

    heading(&mut out, HEADINGS[4]);
    if facts.costs.is_empty() {
        out.push_str("No metrics were reported.\n");
    } else {
        let mut rows = vec![columns(&["job", "metric", "sum", "reports"])];
        for c in &facts.costs {
            rows.push(vec![
                c.job.clone(),
                c.metric.clone(),
                human_number(c.sum),
                c.reports.to_string(),
            ]);
        }
        table(&mut out, &rows);
    }
    out
}

/// `12 runs finished (40 attempts, 3 failed); 1 went dead; 2 in the dead-letter queue.`
pub fn summary(facts: &Facts) -> String {
    format!(
        "{} runs finished ({} attempts, {} failed); {} went dead; {} in the dead-letter queue.",
        facts.runs_finished(),
        facts.attempts(),
        facts.failures_total,
        facts.dead(),
        facts.dead_letter
    )
}

fn heading(out: &mut String, title: &str) {
    let _ = writeln!(out, "{title}\n{}", "-".repeat(title.chars().count()));
}

fn columns(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// Rows aligned in columns: the first left-aligned, the others right-aligned.
fn table(out: &mut String, rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i == 0 {
                let _ = write!(line, "{cell:<width$}", width = widths[0]);
            } else {
                let _ = write!(line, "  {cell:>width$}", width = widths[i]);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}
