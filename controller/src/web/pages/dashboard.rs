//! `/`: the dashboard. Queue depth per priority, running runs, agents,
//! failures and runs per hour over the last 24 hours (a chart), the next
//! fires; the counters stay live over server-sent events (`/live/counters`,
//! every [`COUNTER_PERIOD`]).

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::Stream;
use maud::html;
use worker_proto::v1 as pb;
use worker_proto::v1::controller_service_server::ControllerService;

use crate::http::HttpState;
use crate::web::layout::{self, Bar, Nav};
use crate::web::{Caller, WebError, WebResult};

/// How often the live counters are sent.
pub const COUNTER_PERIOD: Duration = Duration::from_secs(2);
/// Fires listed under "Next fires".
const NEXT_FIRES: usize = 10;
const HOUR_MS: i64 = 3_600_000;

/// `/` and `/live/counters`.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/live/counters", get(counters))
}

/// The queue's numbers and the agents, and from them what the counters show
/// by `data-counter` key.
async fn counter_values(
    state: &HttpState,
    caller: &Caller,
) -> Result<(serde_json::Value, pb::QueueStatsResponse), WebError> {
    let api = state.web.api()?;
    let q = api
        .queue_stats(caller.request("ControllerService/QueueStats", pb::QueueStatsRequest {})?)
        .await?
        .into_inner();
    let agents = api
        .list_agents(caller.request("ControllerService/ListAgents", pb::ListAgentsRequest {})?)
        .await?
        .into_inner()
        .agents;
    let mut values = serde_json::json!({
        "queued": q.queued,
        "scheduled": q.scheduled,
        "blocked": q.blocked,
        "running": q.running,
        "dead": q.dead,
        "agents": agents.iter().filter(|a| a.state != "disconnected").count(),
        "slots": agents.iter().filter(|a| a.state == "connected").map(|a| a.capacity as u64).sum::<u64>(),
    });
    for p in &q.priorities {
        values[format!("priority-{}", p.priority)] = p.queued.into();
    }
    Ok((values, q))
}

async fn dashboard(State(state): State<HttpState>, caller: Caller) -> WebResult {
    let api = state.web.api()?;
    let (values, q) = counter_values(&state, &caller).await?;
    let mut schedules = api
        .list_schedules(caller.request("ControllerService/ListSchedules", pb::ListSchedulesRequest {})?)
        .await?
        .into_inner()
        .schedules;
    let failing: Vec<pb::Schedule> = schedules.iter().filter(|s| s.failing > 0).cloned().collect();
    schedules.retain(|s| s.enabled && !s.paused && !s.next_fire.is_empty());
    schedules.sort_by(|a, b| a.next_fire.cmp(&b.next_fire));
    schedules.truncate(NEXT_FIRES);

    let now = crate::time::now_ms();
    let first_hour = (now / HOUR_MS - 23) * HOUR_MS;
    let engine = state
        .readiness
        .engine()
        .ok_or_else(|| WebError::from(tonic::Status::unavailable("recovering")))?;
    let hours = engine
        .store()
        .finished_per_hour(first_hour)
        .await
        .map_err(|e| WebError::from(tonic::Status::from(e)))?;
    let bars: Vec<Bar> = (0..24)
        .map(|i| {
            let hour = first_hour + i * HOUR_MS;
            let found = hours.iter().find(|h| h.hour == hour);
            Bar {
                label: crate::time::rfc3339(hour).get(11..16).unwrap_or("").to_string(),
                good: found.map_or(0, |h| h.succeeded),
                bad: found.map_or(0, |h| h.dead),
            }
        })
        .collect();
    let failed_24h: u64 = hours.iter().map(|h| h.dead).sum();
    let succeeded_24h: u64 = hours.iter().map(|h| h.succeeded).sum();
    let card = |key: &str, label: &str, href: &str| {
        html! {
            a.card href=(href) {
                div.value data-counter=(key) { (values[key]) }
                div.label { (label) }
            }
        }
    };
    let body = html! {
        section data-live="/live/counters" aria-label="Live counters" {
            div.cards {
                (card("queued", "queued", "/queue"))
                (card("running", "running", "/runs?state=running"))
                (card("scheduled", "scheduled (waiting for their time)", "/runs?state=scheduled"))
                (card("blocked", "blocked on dependencies", "/runs?state=blocked"))
                (card("dead", "in the dead-letter queue", "/dlq"))
                (card("agents", "agents connected", "/agents"))
                (card("slots", "free and busy slots", "/agents"))
                a.card href="/runs?state=dead" {
                    div.value { (failed_24h) }
                    div.label { "failed in the last 24 h (" (succeeded_24h) " succeeded)" }
                }
            }
            h2 { "Queue by priority" }
            div.table-wrap {
                table {
                    tr { th { "priority" } th.num { "queued" } th.num { "oldest waits" } }
                    @for p in &q.priorities {
                        tr {
                            td { (p.priority) }
                            td.num data-counter={ "priority-" (p.priority) } { (p.queued) }
                            td.num { @if p.queued > 0 { (layout::duration_ms(p.oldest_wait_ms)) } @else { span.muted { "—" } } }
                        }
                    }
                }
            }
        }
        h2 { "Runs finished per hour" }
        (layout::bar_chart("Runs finished per hour, last 24 hours (UTC)", &bars))
        h2 { "Next fires" }
        @if schedules.is_empty() {
            (layout::empty("No schedule is due: define a job with a schedule, or resume a paused one."))
        } @else {
            div.table-wrap {
                table {
                    tr { th { "job" } th { "next fire (UTC)" } th.hide-phone { "in its zone" } th.hide-phone { "cron" } }
                    @for s in &schedules {
                        tr {
                            td { a href={ "/jobs/" (crate::web::form::segment(&s.job)) } { (s.job) } }
                            td { (layout::time(&s.next_fire)) }
                            td.hide-phone.mono { (s.next_fire_local) }
                            td.hide-phone.mono { (s.cron) }
                        }
                    }
                }
            }
        }
        @if !failing.is_empty() {
            h2 { "Schedules failing to fire" }
            ul {
                @for s in &failing {
                    li {
                        a href={ "/jobs/" (crate::web::form::segment(&s.job)) } { (s.job) } ": "
                        (s.failing) " tries in a row failed; last error: " span.mono { (s.last_error) }
                    }
                }
            }
        }
    };
    Ok(layout::page(&caller, Nav::Dashboard, "Dashboard", body))
}

/// `GET /live/counters`: the counters as server-sent events, until the
/// browser goes away or the session ends.
async fn counters(State(state): State<HttpState>, caller: Caller) -> Response {
    let stream = counter_stream(state, caller);
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

fn counter_stream(state: HttpState, caller: Caller) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold((state, caller, true), |(state, caller, first)| async move {
        if !first {
            tokio::time::sleep(COUNTER_PERIOD).await;
        }
        if caller.principal().still_valid(crate::time::now_ms()).is_err() {
            return None;
        }
        let event = match counter_values(&state, &caller).await {
            Ok((values, _)) => Event::default().event("counters").data(values.to_string()),
            Err(e) => Event::default().event("failure").data(e.message),
        };
        Some((Ok(event), (state, caller, false)))
    })
}
