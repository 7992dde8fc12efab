//! The dependency graph of a run's workflow, in layers: runs that wait on
//! nothing in the workflow first, then the runs that wait only on those,
//! and so on. Each node links to its run with its state badge and names what
//! it waits on; the run of the page is marked.
//!
//! The API has no call listing a workflow's runs (`CancelWorkflow` acts on
//! them, `GetRun` gives one run), so this reads the store through the
//! engine: one query for the workflow's runs (by the `workflow_id` index)
//! and one for their dependencies, without attempts or output. A workflow
//! has at most `--limit batch_runs` runs (1000 by default); at most
//! [`MAX_NODES`] are drawn.

use std::collections::{BTreeMap, HashMap};

use maud::{Markup, html};

use super::run_href;
use crate::http::HttpState;
use crate::store::RunRecord;
use crate::web::layout;
use crate::web::{WebError, WebResult};

/// Runs drawn at most.
pub const MAX_NODES: usize = 300;

/// One run of the workflow.
#[derive(Debug, Clone)]
pub struct Node {
    /// Run id.
    pub id: String,
    /// Job name.
    pub job: String,
    /// State.
    pub state: String,
    /// Runs it waits on.
    pub upstream: Vec<String>,
}

/// A workflow's runs in layers, upstream first.
#[derive(Debug, Clone)]
pub struct Graph {
    /// The workflow id.
    pub id: String,
    /// Layers of nodes.
    pub layers: Vec<Vec<Node>>,
    /// Runs in the workflow.
    pub total: usize,
    /// How many are not finished.
    pub unfinished: usize,
}

/// Loads the workflow `id`'s graph (`None` when it has no run).
pub async fn load(state: &HttpState, id: &str) -> WebResult<Option<Graph>> {
    let engine = state
        .readiness
        .engine()
        .ok_or_else(|| WebError::from(tonic::Status::unavailable("the controller is recovering")))?;
    let store = engine.store();
    let runs = store
        .workflow_runs(id)
        .await
        .map_err(|e| WebError::from(tonic::Status::from(e)))?;
    if runs.is_empty() {
        return Ok(None);
    }
    let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
    let deps = store
        .dependencies(&ids)
        .await
        .map_err(|e| WebError::from(tonic::Status::from(e)))?;
    Ok(Some(layers(id, &runs, &deps)))
}

/// The graph of a run outside any workflow that waits on others: the run
/// and its upstream runs, transitively (at most [`MAX_NODES`]), read the
/// same way, one level per query pair.
pub async fn load_upstream(state: &HttpState, run_id: &str) -> WebResult<Graph> {
    let engine = state
        .readiness
        .engine()
        .ok_or_else(|| WebError::from(tonic::Status::unavailable("the controller is recovering")))?;
    let store = engine.store();
    let err = |e| WebError::from(tonic::Status::from(e));
    let mut runs: Vec<RunRecord> = Vec::new();
    let mut deps: Vec<(String, String)> = Vec::new();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut frontier = vec![run_id.to_string()];
    seen.insert(run_id.to_string());
    while !frontier.is_empty() && runs.len() < MAX_NODES {
        frontier.truncate(MAX_NODES - runs.len());
        runs.extend(store.runs_by_id(&frontier).await.map_err(err)?);
        let found = store.dependencies(&frontier).await.map_err(err)?;
        frontier = found
            .iter()
            .filter(|(_, up)| seen.insert(up.clone()))
            .map(|(_, up)| up.clone())
            .collect();
        deps.extend(found);
    }
    // Oldest first, as a workflow's runs come.
    runs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(layers("", &runs, &deps))
}

/// Puts `runs` in layers by their dependencies `(run, upstream)`.
pub fn layers(id: &str, runs: &[RunRecord], deps: &[(String, String)]) -> Graph {
    let mut upstream: HashMap<&str, Vec<String>> = HashMap::new();
    for (run, up) in deps {
        upstream.entry(run.as_str()).or_default().push(up.clone());
    }
    let index: HashMap<&str, usize> = runs.iter().enumerate().map(|(i, r)| (r.id.as_str(), i)).collect();
    // Depth: 0 for runs waiting on nothing inside the workflow, else one more
    // than their deepest upstream. Dependencies form no cycle (the API
    // refuses them); the pass count bounds the work anyway.
    let mut depth = vec![0usize; runs.len()];
    for _ in 0..runs.len() {
        let mut changed = false;
        for (i, run) in runs.iter().enumerate() {
            let d = upstream
                .get(run.id.as_str())
                .into_iter()
                .flatten()
                .filter_map(|u| index.get(u.as_str()))
                .map(|&u| depth[u] + 1)
                .max()
                .unwrap_or(0);
            if d != depth[i] {
                depth[i] = d;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut by_depth: BTreeMap<usize, Vec<Node>> = BTreeMap::new();
    for (i, run) in runs.iter().enumerate() {
        by_depth.entry(depth[i]).or_default().push(Node {
            id: run.id.clone(),
            job: run.job.clone(),
            state: run.state.to_string(),
            upstream: upstream.remove(run.id.as_str()).unwrap_or_default(),
        });
    }
    Graph {
        id: id.to_string(),
        layers: by_depth.into_values().collect(),
        total: runs.len(),
        unfinished: runs.iter().filter(|r| !r.state.is_terminal()).count(),
    }
}

/// The graph as nested lists (`section#workflow`), `current` marked.
pub fn render(graph: &Graph, current: &str, actions: Markup) -> Markup {
    let jobs: HashMap<&str, &str> = graph
        .layers
        .iter()
        .flatten()
        .map(|n| (n.id.as_str(), n.job.as_str()))
        .collect();
    let mut budget = MAX_NODES;
    let mut shown: Vec<&[Node]> = Vec::new();
    for layer in &graph.layers {
        if budget == 0 {
            break;
        }
        let take = layer.len().min(budget);
        shown.push(&layer[..take]);
        budget -= take;
    }
    html! {
        section #workflow aria-labelledby="workflow-heading" {
            h2 #workflow-heading {
                @if graph.id.is_empty() { "Dependencies" } @else { "Workflow " span.mono { (graph.id) } }
            }
            p.muted {
                (graph.total) " runs, " (graph.unfinished) " not finished. Upstream runs come first; each run starts once those it waits on succeeded."
            }
            (actions)
            ol.workflow-layers {
                @for (i, layer) in shown.iter().enumerate() {
                    li {
                            span.muted { "step " (i + 1) }
                            ul {
                                @for node in layer.iter() {
                                    li aria-current=[(node.id == current).then_some("true")] {
                                        a.mono href=(run_href(&node.id)) { (node.job) } " "
                                        (layout::badge(&node.state))
                                        @if node.id == current { " " strong { "(this run)" } }
                                        @if !node.upstream.is_empty() {
                                            " " span.muted { "after " }
                                            @for (k, up) in node.upstream.iter().enumerate() {
                                                @if k > 0 { ", " }
                                                a href=(run_href(up)) { (jobs.get(up.as_str()).copied().unwrap_or(up.as_str())) }
                                            }
                                        }
                                    }
                                }
                            }
                    }
                }
            }
            @if graph.total > MAX_NODES {
                p.warn { "Only the first " (MAX_NODES) " of " (graph.total) " runs are drawn." }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Priority, RunState, Trigger};

    fn run(id: &str, state: RunState) -> RunRecord {
        RunRecord {
            id: id.into(),
            job: format!("job-{id}"),
            state,
            priority: Priority::Normal,
            payload: String::new(),
            trigger: Trigger::Api,
            scheduled_for: None,
            created_at: 0,
            not_before: None,
            ready_at: None,
            finished_at: None,
            attempt: 0,
            max_attempts: 1,
            reason: None,
            workflow_id: Some("w".into()),
            cancel_requested: false,
            idempotency_key: None,
        }
    }

    #[test]
    fn runs_are_layered_upstream_first() {
        // d waits on b and c, which wait on a; e waits on nothing.
        let runs = [
            run("d", RunState::Blocked),
            run("b", RunState::Blocked),
            run("a", RunState::Succeeded),
            run("c", RunState::Running),
            run("e", RunState::Queued),
        ];
        let deps = [
            ("d".to_string(), "b".to_string()),
            ("d".to_string(), "c".to_string()),
            ("b".to_string(), "a".to_string()),
            ("c".to_string(), "a".to_string()),
        ];
        let g = layers("w", &runs, &deps);
        let ids: Vec<Vec<&str>> = g
            .layers
            .iter()
            .map(|l| l.iter().map(|n| n.id.as_str()).collect())
            .collect();
        assert_eq!(ids, vec![vec!["a", "e"], vec!["b", "c"], vec!["d"]]);
        assert_eq!((g.total, g.unfinished), (5, 4));
        let html = render(&g, "c", html! {}).into_string();
        assert!(html.contains("id=\"workflow\""));
        assert!(html.contains("(this run)"));
        assert!(html.contains(">job-b</a>, <a href=\"/runs/c\">job-c</a>"), "{html}");
    }
}
