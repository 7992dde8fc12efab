//! The HTML part of a digest: the sections of the text part (`text.rs`), as
//! tables with inline styles (mail clients ignore style sheets). Every value
//! that comes from a job, a run or a configuration (job and metric names,
//! error texts, run ids, links) is escaped with
//! [`html_text`]; errors are shown in `<pre>`.

use std::fmt::Write as _;

use super::facts::{Facts, human_ms, human_number};
use super::text::{HEADINGS, summary};
use crate::alerting::detect::Links;
use crate::alerting::message::html_text as e;

const TABLE: &str = "border-collapse:collapse;margin:4px 0 12px 0";
const CELL: &str = "border:1px solid #ddd;padding:3px 8px";
const NUM: &str = "border:1px solid #ddd;padding:3px 8px;text-align:right";
const PRE: &str = "background:#f6f6f6;padding:6px;margin:2px 0 8px 0;white-space:pre-wrap;font-size:12px";

/// The HTML part of the digest of `facts`.
pub fn render(facts: &Facts, links: &Links) -> String {
    let w = &facts.window;
    let mut out =
        String::from("<!DOCTYPE html>\n<html><body style=\"font-family:sans-serif;font-size:14px;color:#222\">\n");
    let _ = writeln!(
        out,
        "<h2>Worker {} digest</h2>\n<p>{}</p>\n<p><b>{}</b></p>",
        e(w.period.as_str()),
        e(&w.describe()),
        e(&summary(facts))
    );

    heading(&mut out, HEADINGS[0]);
    if facts.jobs.is_empty() {
        out.push_str("<p>Nothing finished in this window.</p>\n");
    } else {
        header_row(
            &mut out,
            &["job", "succeeded", "failed", "timed out", "lost", "cancelled", "dead"],
        );
        for j in &facts.jobs {
            let _ = write!(out, "<tr><td style=\"{CELL}\">{}</td>", job_cell(&j.job, links));
            for n in [j.succeeded, j.failed, j.timed_out, j.lost, j.cancelled, j.dead] {
                let _ = write!(out, "<td style=\"{NUM}\">{n}</td>");
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n<p style=\"color:#666;font-size:12px\">succeeded, cancelled and dead count runs; failed, timed out and lost count attempts</p>\n");
    }

    heading(&mut out, HEADINGS[1]);
    if facts.failures.is_empty() {
        out.push_str("<p>No failed attempts.</p>\n");
    } else {
        if facts.failures_total > facts.failures.len() as u64 {
            let _ = writeln!(
                out,
                "<p>The newest {} of {} failed attempts:</p>",
                facts.failures.len(),
                facts.failures_total
            );
        }
        out.push_str("<ul>\n");
        for f in &facts.failures {
            let run = match links.run(&f.run_id) {
                Some(link) => format!("<a href=\"{}\">{}</a>", e(&link), e(&f.run_id)),
                None => e(&f.run_id),
            };
            let _ = write!(
                out,
                "<li>{} <b>{}</b> run {} attempt {} <i>{}</i>",
                e(&w.local(f.finished_at)),
                e(&f.job),
                run,
                f.attempt,
                e(&f.outcome.replace('_', " "))
            );
            let error = f.error.trim();
            if !error.is_empty() {
                let _ = write!(out, "<pre style=\"{PRE}\">{}</pre>", e(error));
            }
            out.push_str("</li>\n");
        }
        out.push_str("</ul>\n");
    }

    heading(&mut out, HEADINGS[2]);
    if facts.slowest.is_empty() {
        out.push_str("<p>No attempts finished.</p>\n");
    } else {
        header_row(&mut out, &["job", "attempts", "mean", "longest"]);
        for s in &facts.slowest {
            let _ = writeln!(
                out,
                "<tr><td style=\"{CELL}\">{}</td><td style=\"{NUM}\">{}</td><td style=\"{NUM}\">{}</td><td style=\"{NUM}\">{}</td></tr>",
                job_cell(&s.job, links),
                s.attempts,
                e(&human_ms(s.avg_ms)),
                e(&human_ms(s.max_ms as f64))
            );
        }
        out.push_str("</table>\n");
    }

    heading(&mut out, HEADINGS[3]);
    let link = match (facts.dead_letter > 0, links.dlq()) {
        (true, Some(link)) => format!(" <a href=\"{}\">Dead letters</a>", e(&link)),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "<p>{} run{} in the dead-letter queue now ({} went dead in this window).{link}</p>",
        facts.dead_letter,
        if facts.dead_letter == 1 { "" } else { "s" },
        facts.dead()
    );

    heading(&mut out, HEADINGS[4]);
    if facts.costs.is_empty() {
        out.push_str("<p>No metrics were reported.</p>\n");
    } else {
        header_row(&mut out, &["job", "metric", "sum", "reports"]);
        for c in &facts.costs {
            let _ = writeln!(
                out,
                "<tr><td style=\"{CELL}\">{}</td><td style=\"{CELL}\">{}</td><td style=\"{NUM}\">{}</td><td style=\"{NUM}\">{}</td></tr>",
                job_cell(&c.job, links),
                e(&c.metric),
                e(&human_number(c.sum)),
                c.reports
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body></html>\n");
    out
}

fn heading(out: &mut String, title: &str) {
    let _ = writeln!(out, "<h3>{}</h3>", e(title));
}

/// Opens a table with its header row.
fn header_row(out: &mut String, names: &[&str]) {
    let _ = write!(out, "<table style=\"{TABLE}\"><tr>");
    for name in names {
        let _ = write!(out, "<th style=\"{CELL}\">{}</th>", e(name));
    }
    out.push_str("</tr>\n");
}

/// A job's name, linked to its page when `--web-url` is set.
fn job_cell(job: &str, links: &Links) -> String {
    match links.job(job) {
        Some(link) => format!("<a href=\"{}\">{}</a>", e(&link), e(job)),
        None => e(job),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{Period, Window};
    use crate::store::digest::{DigestCost, DigestFailure, DigestSlow};

    fn facts() -> Facts {
        Facts {
            window: Window::ending_at(1_714_975_200_000, Period::Daily, chrono_tz::UTC),
            jobs: vec![crate::digest::JobActivity {
                job: "etl<script>".into(),
                succeeded: 3,
                failed: 1,
                dead: 1,
                attempts: 5,
                ..Default::default()
            }],
            failures: vec![DigestFailure {
                run_id: "01RUN".into(),
                attempt: 2,
                job: "etl<script>".into(),
                outcome: "timed_out".into(),
                error: "<b>boom</b> & \"quotes\" 'too'\nsecond line".into(),
                finished_at: 1_714_970_000_000,
            }],
            failures_total: 1,
            slowest: vec![DigestSlow {
                job: "etl<script>".into(),
                attempts: 5,
                avg_ms: 1_500.0,
                max_ms: 245_000,
            }],
            costs: vec![DigestCost {
                job: "etl<script>".into(),
                metric: "api_cost_usd<".into(),
                sum: 0.75,
                reports: 3,
            }],
            dead_letter: 2,
        }
    }

    #[test]
    fn html_escapes_every_value_and_has_every_section() {
        let links = Links::new(Some("https://ui.example/".into()));
        let html = render(&facts(), &links);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<b>boom"), "{html}");
        assert!(
            html.contains("&lt;b&gt;boom&lt;/b&gt; &amp; &quot;quotes&quot; &#39;too&#39;\nsecond line"),
            "{html}"
        );
        assert!(html.contains("etl&lt;script&gt;"), "{html}");
        assert!(html.contains("api_cost_usd&lt;"), "{html}");
        assert!(
            html.contains("<a href=\"https://ui.example/runs/01RUN\">01RUN</a>"),
            "{html}"
        );
        assert!(
            html.contains("href=\"https://ui.example/jobs/etl&lt;script&gt;\""),
            "{html}"
        );
        for heading in HEADINGS {
            assert!(html.contains(&format!("<h3>{heading}</h3>")), "{heading}: {html}");
        }
        assert!(html.contains("4m05s") && html.contains("0.75"), "{html}");
        assert!(
            html.contains("<p>2 runs in the dead-letter queue now (1 went dead in this window). <a href=\"https://ui.example/dlq\">"),
            "{html}"
        );
    }

    #[test]
    fn text_has_every_section_without_escaping() {
        let text = crate::digest::text::render(&facts(), &Links::new(None));
        for heading in HEADINGS {
            assert!(text.contains(&format!("{heading}\n")), "{heading}: {text}");
        }
        assert!(
            text.contains("    <b>boom</b> & \"quotes\" 'too'\n    second line"),
            "{text}"
        );
        assert!(text.contains("run 01RUN attempt 2  timed out"), "{text}");
        assert!(
            text.contains("2 runs in the dead-letter queue now (1 went dead"),
            "{text}"
        );
        assert!(!text.contains("http"), "no links without --web-url: {text}");
    }

    #[test]
    fn an_empty_window_says_so() {
        let mut empty = facts();
        empty.jobs.clear();
        empty.failures.clear();
        empty.failures_total = 0;
        empty.slowest.clear();
        empty.costs.clear();
        empty.dead_letter = 0;
        assert!(empty.is_empty());
        let text = crate::digest::text::render(&empty, &Links::new(None));
        assert!(text.contains("Nothing finished in this window."), "{text}");
        assert!(text.contains("No metrics were reported."), "{text}");
        let html = render(&empty, &Links::new(None));
        assert!(html.contains("<p>No failed attempts.</p>"), "{html}");
    }
}
