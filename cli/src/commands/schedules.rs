//! `schedules [list]`.

use worker_proto::v1 as pb;

use super::Ctx;
use crate::model::Schedule;
use crate::output::{Table, dash, emit, time};

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

/// Schedules as a table.
pub fn schedules_table(schedules: &[Schedule]) -> String {
    let mut table = Table::new([
        "JOB",
        "CRON",
        "TIMEZONE",
        "ENABLED",
        "NEXT FIRE (UTC)",
        "NEXT FIRE (LOCAL)",
        "LAST FIRED",
    ]);
    for s in schedules {
        table.row([
            s.job.clone(),
            s.cron.clone(),
            dash(s.timezone.as_deref()),
            if s.enabled { "yes" } else { "no" }.to_string(),
            time(s.next_fire.as_deref()),
            dash(s.next_fire_local.as_deref()),
            time(s.last_fired.as_deref()),
        ]);
    }
    table.render()
}
