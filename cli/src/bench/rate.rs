//! `bench rate`: open-loop arrivals on a fixed clock for a duration, latency
//! percentiles measured from each run's intended arrival time to the
//! controller's commits (the arrival machinery is [`super::open_loop`]).

use std::time::Duration;

use serde::Serialize;

use super::open_loop::{self, Plan};
use super::stats::{Latency, arrivals, histogram, latency_table, record};
use super::{
    Printer, RateArgs, Report, Target, apply_jobs, base_config, burn_down::job_text, round, secs, server_info,
};
use crate::output::key_values;

/// What `rate` measured.
#[derive(Debug, Serialize)]
struct Results {
    arrivals: u64,
    sent: u64,
    achieved_rate: f64,
    errors: u64,
    succeeded: u64,
    failed: u64,
    incomplete: u64,
    enqueue_to_commit: Latency,
    enqueue_to_start: Latency,
    start_to_result: Latency,
}

/// Runs the scenario.
pub async fn run(target: &Target, printer: &Printer, args: RateArgs) -> anyhow::Result<(Report, String)> {
    let job = args.job.name();
    let duration = Duration::from_millis(args.duration);
    let total = arrivals(args.rate, duration);
    let mut client = target.client()?;
    let server = server_info(&mut client).await?;
    let mut config = base_config(target);
    config.insert("job".into(), job.into());
    config.insert("rate".into(), args.rate.into());
    config.insert("duration_s".into(), (args.duration as f64 / 1000.0).into());
    config.insert("arrivals".into(), total.into());
    config.insert("concurrency".into(), args.concurrency.into());
    config.insert("grace_s".into(), (args.grace as f64 / 1000.0).into());
    printer.config(
        "rate",
        &[
            ("controller", target.url.clone()),
            ("job", format!("{job} ({})", job_text(job))),
            ("rate", format!("{} arrivals/s, open loop (fixed clock)", args.rate)),
            ("duration", crate::output::fmt_ms(args.duration)),
            ("arrivals", total.to_string()),
            (
                "connections",
                format!("{} (Enqueue calls round-robin)", args.concurrency),
            ),
            (
                "grace",
                format!(
                    "{} for results after the last arrival",
                    crate::output::fmt_ms(args.grace)
                ),
            ),
            (
                "latency",
                "from each run's intended arrival time to the controller's commit (RunEvent.at_unix_micros)".into(),
            ),
        ],
        &server,
    );
    apply_jobs(&mut client, "").await?;

    let plan = Plan {
        job: job.to_string(),
        total,
        rate: args.rate,
        concurrency: args.concurrency,
        grace: Duration::from_millis(args.grace),
    };
    let outcome = open_loop::run(target, &plan).await?;
    let arrival_window = outcome.arrival_window.max(duration);
    let (sent, errors) = (outcome.sent, outcome.errors);
    let tally = outcome.tally();
    let (succeeded, failed, incomplete) = (tally.succeeded, tally.failed, tally.incomplete);
    let problems = outcome.problems(
        &tally,
        total,
        args.grace,
        " (are agents with executor `builtin` connected?)",
    );
    // Running committed → result committed, of the runs that succeeded.
    let mut result_h = histogram();
    for t in outcome.runs.values() {
        if let (Some(_), Some((end, true)), Some(r)) = (t.intended_us, t.end, t.running_us) {
            record(&mut result_h, end - r);
        }
    }
    let results = Results {
        arrivals: total,
        sent,
        achieved_rate: round(sent as f64 / arrival_window.as_secs_f64(), 1),
        errors,
        succeeded,
        failed,
        incomplete,
        enqueue_to_commit: Latency::of(&tally.enqueue_to_commit),
        enqueue_to_start: Latency::of(&tally.enqueue_to_start),
        start_to_result: Latency::of(&result_h),
    };
    let mut table = key_values(&[
        (
            "arrivals",
            format!(
                "{} intended, {} enqueued in {:.3}s = {:.1}/s achieved, {} errors",
                total,
                sent,
                secs(arrival_window),
                results.achieved_rate,
                errors
            ),
        ),
        (
            "runs",
            format!("{succeeded} succeeded, {failed} failed, {incomplete} incomplete"),
        ),
    ]);
    table.push('\n');
    table.push_str(&latency_table(&[
        ("enqueue→committed", results.enqueue_to_commit),
        ("enqueue→start", results.enqueue_to_start),
        ("start→result", results.start_to_result),
    ]));
    let report = Report::new("rate", config, server, &results, problems)?;
    Ok((report, table))
}
