//! `schedules [list]`, `schedules pause|resume NAME`, `schedules next`.

use worker_proto::v1 as pb;

use super::Ctx;
use crate::cli::{NextArgs, SchedulesCmd};
use crate::model::{Fire, Schedule};
use crate::output::{Table, dash, emit, time};

/// Runs a `schedules` subcommand.
pub async fn run(ctx: &mut Ctx, cmd: SchedulesCmd) -> anyhow::Result<()> {
    match cmd {
        SchedulesCmd::List => list(ctx).await,
        SchedulesCmd::Pause { name } => {
            let schedule = ctx.client.pause_schedule(pb::ScheduleRequest { job: name }).await?;
            emit_one(ctx, schedule.into_inner().into())
        }
        SchedulesCmd::Resume { name } => {
            let schedule = ctx.client.resume_schedule(pb::ScheduleRequest { job: name }).await?;
            emit_one(ctx, schedule.into_inner().into())
        }
        SchedulesCmd::Next(args) => next(ctx, args).await,
    }
}

/// Lists the schedules with their next fire.
pub async fn list(ctx: &mut Ctx) -> anyhow::Result<()> {
    let schedules: Vec<Schedule> = ctx
        .client
        .list_schedules(pb::ListSchedulesRequest {})
        .await?
        .into_inner()
        .schedules
        .into_iter()
        .map(Schedule::from)
        .collect();
    emit(ctx.format, &schedules, || schedules_table(&schedules))
}

/// One schedule: the object of `schedules list`, a one-line table for people.
fn emit_one(ctx: &Ctx, schedule: Schedule) -> anyhow::Result<()> {
    emit(ctx.format, &schedule, || {
        schedules_table(std::slice::from_ref(&schedule))
    })
}

/// Previews the next fires: `[{utc, local}]`, or a zone line and a table.
async fn next(ctx: &mut Ctx, args: NextArgs) -> anyhow::Result<()> {
    let request = pb::PreviewScheduleRequest {
        job: args.name.unwrap_or_default(),
        cron: args.cron.unwrap_or_default(),
        timezone: args.tz.unwrap_or_default(),
        from: args.from.unwrap_or_default(),
        count: args.count.unwrap_or(0),
        dst_gap: args.dst_gap.unwrap_or_default(),
        dst_repeat: args.dst_repeat.unwrap_or_default(),
    };
    let response = ctx.client.preview_schedule(request).await?.into_inner();
    let fires: Vec<Fire> = response.fires.into_iter().map(Fire::from).collect();
    emit(ctx.format, &fires, || fires_text(&response.timezone, &fires))
}

/// `time zone: ZONE` then `UTC  LOCAL` columns.
pub fn fires_text(timezone: &str, fires: &[Fire]) -> String {
    let zone = if timezone.is_empty() { "UTC" } else { timezone };
    let mut table = Table::new(["UTC", "LOCAL"]);
    for f in fires {
        table.row([time(Some(&f.utc)), local_time(&f.local)]);
    }
    format!("time zone: {zone}\n{}", table.render())
}

/// An RFC 3339 timestamp as `2025-03-30 03:00:00+02:00`, keeping its offset.
fn local_time(value: &str) -> String {
    if value.is_empty() {
        return "-".to_string();
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%:z").to_string())
        .unwrap_or_else(|_| value.to_string())
}

/// Schedules as a table.
pub fn schedules_table(schedules: &[Schedule]) -> String {
    let mut table = Table::new([
        "JOB",
        "CRON",
        "TIMEZONE",
        "ENABLED",
        "PAUSED",
        "NEXT FIRE (UTC)",
        "NEXT FIRE (LOCAL)",
        "LAST FIRED",
        "MISSED",
        "SKIPPED",
        "FAILING",
    ]);
    for s in schedules {
        table.row([
            s.job.clone(),
            s.cron.clone(),
            dash(s.timezone.as_deref()),
            yes_no(s.enabled),
            yes_no(s.paused),
            time(s.next_fire.as_deref()),
            dash(s.next_fire_local.as_deref()),
            time(s.last_fired.as_deref()),
            s.missed.to_string(),
            s.skipped.to_string(),
            failing(s),
        ]);
    }
    let mut text = table.render();
    for s in schedules.iter().filter(|s| s.failing > 0) {
        text.push_str(&format!(
            "\n{}: its fire has failed {} time(s) in a row (retried with backoff): {}",
            s.job,
            s.failing,
            s.last_error.as_deref().unwrap_or("unknown error")
        ));
    }
    if schedules.iter().any(|s| s.failing > 0) {
        text.push('\n');
    }
    text
}

/// `-` for a schedule that fires, else its failures in a row.
fn failing(s: &Schedule) -> String {
    if s.failing == 0 {
        "-".into()
    } else {
        format!("{}x", s.failing)
    }
}

/// `yes` / `no`.
fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_show_the_zone_and_local_offsets() {
        let fires = [
            Fire {
                utc: "2025-03-30T00:30:00Z".into(),
                local: "2025-03-30T01:30:00+01:00".into(),
            },
            Fire {
                utc: "2025-03-31T00:30:00Z".into(),
                local: "2025-03-31T02:30:00+02:00".into(),
            },
        ];
        assert_eq!(
            fires_text("Europe/Paris", &fires),
            "time zone: Europe/Paris\n\
             UTC                   LOCAL\n\
             2025-03-30 00:30:00Z  2025-03-30 01:30:00+01:00\n\
             2025-03-31 00:30:00Z  2025-03-31 02:30:00+02:00\n"
        );
        assert_eq!(fires_text("", &[]), "time zone: UTC\nUTC  LOCAL\n");
    }

    #[test]
    fn table_shows_paused() {
        let schedule = Schedule::from(pb::Schedule {
            job: "backup".into(),
            cron: "0 3 * * *".into(),
            enabled: true,
            paused: true,
            ..Default::default()
        });
        let text = schedules_table(&[schedule]);
        assert!(text.lines().next().unwrap().contains("ENABLED  PAUSED"), "{text}");
        assert!(text.contains("yes      yes"), "{text}");
    }
}
