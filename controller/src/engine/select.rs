//! Ready selection: which queued runs go to which agents now.
//!
//! Kept free of I/O so it can be benchmarked and tested on its own. The caller
//! commits the picks and restores the agents' credits if the commit fails.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::state::{AgentEntry, Core};
use crate::config::JobSet;

/// Picks (run id, agent id) pairs in dispatch order: runs by priority then
/// ready time; for each, the connected agent with a free credit that runs its
/// executor and matches its selector, preferring the most free credits, then
/// the fewest runs. Honours `max_concurrency`. Takes the credits of the picks.
pub fn select_assignments(core: &mut Core, jobs: &JobSet) -> Vec<(String, String)> {
    let mut credits_left: u32 = core
        .agents
        .values()
        .filter(|a| a.sender.is_some())
        .map(|a| a.credits)
        .sum();
    let mut picks = Vec::new();
    if credits_left == 0 {
        return picks;
    }
    let mut extra_by_job: HashMap<&str, u32> = HashMap::new();
    let Core {
        ready,
        live,
        agents,
        running_by_job,
        ..
    } = core;
    for run_id in ready.values() {
        if credits_left == 0 {
            break;
        }
        let Some(run) = live.get(run_id) else { continue };
        let Some(job) = jobs.get(&run.job) else { continue };
        if let Some(limit) = job.max_concurrency {
            let running = running_by_job.get(&run.job).copied().unwrap_or(0)
                + extra_by_job.get(job.name.as_str()).copied().unwrap_or(0);
            if running >= limit {
                continue;
            }
        }
        let kind = job.executor.kind();
        let Some(agent) = agents
            .values_mut()
            .filter(|a| a.accepts(kind, &job.selector))
            .max_by(|a, b| preference(a, b))
        else {
            continue;
        };
        agent.credits -= 1;
        credits_left -= 1;
        *extra_by_job.entry(job.name.as_str()).or_default() += 1;
        picks.push((run_id.clone(), agent.id.clone()));
    }
    picks
}

/// `Greater` when `a` should get the run rather than `b`.
fn preference(a: &AgentEntry, b: &AgentEntry) -> Ordering {
    a.credits
        .cmp(&b.credits)
        .then(b.running.len().cmp(&a.running.len()))
        .then(b.id.cmp(&a.id))
}
