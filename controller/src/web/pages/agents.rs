//! `/agents`: the agents the controller knows (`ListAgents`): name, host,
//! state (connected, draining, disconnected), labels, capacity, executors,
//! the runs in flight (links to `/runs/{id}`), when they connected, their
//! last heartbeat and version; 50 a page. An operator or admin may drain
//! an agent (`DrainAgent`, `POST /agents/{id}/drain`, with a confirmation):
//! it is assigned nothing more, finishes its runs and disconnects.

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use maud::html;
use worker_proto::v1 as pb;
use worker_proto::v1::controller_service_server::ControllerService;

use crate::http::HttpState;
use crate::web::form::{Query, query_string, segment};
use crate::web::layout::{self, Nav};
use crate::web::{Caller, WebResult};

/// Agents per page.
pub const PAGE: usize = 50;
/// In-flight runs listed per agent (the rest are counted).
const RUNS_SHOWN: usize = 10;

/// `/agents` and `/agents/{id}/drain`.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/agents", get(list))
        .route("/agents/{id}/drain", post(drain))
}

/// `GET /agents?page=N`.
async fn list(State(state): State<HttpState>, caller: Caller, query: Query) -> WebResult {
    let agents = state
        .web
        .api()?
        .list_agents(caller.request("ControllerService/ListAgents", pb::ListAgentsRequest {})?)
        .await?
        .into_inner()
        .agents;
    let pages = agents.len().div_ceil(PAGE).max(1);
    let page = query.text("page").parse::<usize>().unwrap_or(1).clamp(1, pages);
    let shown = agents.iter().skip((page - 1) * PAGE).take(PAGE);
    let may_drain = caller.may("ControllerService/DrainAgent");
    let connected = agents.iter().filter(|a| a.state == "connected").count();
    let body = html! {
        p.muted { (agents.len()) " known, " (connected) " connected and taking work." }
        @if agents.is_empty() {
            (layout::empty("No agent has connected: start one with `worker-agent --controller URL`."))
        } @else {
            div.table-wrap {
                table #agents-table {
                    tr {
                        th { "name" } th.hide-phone { "host" } th { "state" } th { "labels" } th.num { "capacity" }
                        th.hide-phone { "executors" } th { "in flight" } th.hide-phone { "connected at" }
                        th { "last heartbeat" } th.hide-phone { "version" }
                        @if may_drain { th { "actions" } }
                    }
                    @for a in shown {
                        tr id={ "agent-" (a.id) } {
                            td { (a.name) br; span.muted.mono { (a.id) } }
                            td.hide-phone { (a.host) }
                            td { (layout::badge(&a.state)) }
                            td.mono {
                                @let labels: std::collections::BTreeMap<_, _> = a.labels.iter().collect();
                                @for (k, v) in labels { span { (k) "=" (v) } " " }
                            }
                            td.num { (a.running.len()) "/" (a.capacity) }
                            td.hide-phone { (a.executors.join(", ")) }
                            td.mono {
                                @for id in a.running.iter().take(RUNS_SHOWN) {
                                    a href={ "/runs/" (segment(id)) } { (id) } " "
                                }
                                @if a.running.len() > RUNS_SHOWN {
                                    span.muted { "and " (a.running.len() - RUNS_SHOWN) " more" }
                                }
                                @if a.running.is_empty() { span.muted { "—" } }
                            }
                            td.hide-phone { (layout::time(&a.connected_at)) }
                            td { (layout::time(&a.last_heartbeat)) }
                            td.hide-phone { (a.version) }
                            @if may_drain {
                                td {
                                    @if a.state == "connected" {
                                        form.inline method="post" action={ "/agents/" (segment(&a.id)) "/drain" }
                                            data-confirm={ "Really drain agent " (a.name) "? It finishes its runs, takes no more and disconnects." } {
                                            (layout::csrf_field(&caller))
                                            button.danger id={ "drain-" (a.id) } type="submit" { "Drain" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if pages > 1 {
                nav.pager aria-label="Pages" {
                    @if page > 1 {
                        a href={ "/agents" (query_string([("page", (page - 1).to_string().as_str())])) } { "Previous" }
                    }
                    span { "page " (page) " of " (pages) }
                    @if page < pages {
                        a href={ "/agents" (query_string([("page", (page + 1).to_string().as_str())])) } { "Next" }
                    }
                }
            }
        }
    };
    Ok(layout::page(&caller, Nav::Agents, "Agents", body))
}

/// `POST /agents/{id}/drain`.
async fn drain(State(state): State<HttpState>, caller: Caller, Path(id): Path<String>) -> WebResult {
    let request = caller.request("ControllerService/DrainAgent", pb::DrainAgentRequest { id: id.clone() })?;
    Ok(match state.web.api()?.drain_agent(request).await {
        Ok(agent) => {
            let agent = agent.into_inner();
            layout::done(
                &caller,
                "/agents",
                format!(
                    "Agent {} is {}: it takes no more runs and disconnects once its {} run(s) finish.",
                    agent.name,
                    agent.state,
                    agent.running.len()
                ),
            )
        }
        Err(e) => layout::failed(&caller, "/agents", format!("Agent {id} not drained: {}", e.message())),
    })
}
