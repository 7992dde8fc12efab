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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::engine::state::LiveRun;
    use crate::model::{Priority, RunState};

    fn jobs() -> JobSet {
        let yaml = "jobs:\n  eu:\n    builtin: noop\n    selector: { region: eu }\n  any:\n    builtin: noop\n  one:\n    builtin: noop\n    max_concurrency: 1\n";
        crate::config::parse_scheduler_yaml(Path::new("t.yaml"), yaml, &|_| None).unwrap()
    }

    fn queue(core: &mut Core, id: &str, job: &str, priority: Priority, at: i64) {
        core.live.insert(
            id.into(),
            LiveRun {
                id: id.into(),
                job: job.into(),
                state: RunState::Queued,
                priority,
                attempt: 0,
                max_attempts: 1,
                payload: Arc::from("null"),
                not_before: 0,
                ready_key: None,
                agent_id: None,
                lease_until: 0,
                deadline: None,
                cancel_requested: false,
                cancel_reason: None,
                waiting_on: Default::default(),
            },
        );
        core.push_ready(id, at);
    }

    fn agent(core: &mut Core, id: &str, credits: u32, labels: &[(&str, &str)]) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::mem::forget(rx);
        core.agents.insert(
            id.into(),
            AgentEntry {
                id: id.into(),
                name: id.into(),
                host: "h".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
                executors: vec!["builtin".into()],
                capacity: credits,
                version: "t".into(),
                credits,
                sender: Some(tx),
                connection: 1,
                connected_at: 0,
                last_seen: 0,
                running: Default::default(),
            },
        );
    }

    #[test]
    fn priority_order_selectors_and_concurrency() {
        let jobs = jobs();
        let mut core = Core::default();
        queue(&mut core, "eu-1", "eu", Priority::Critical, 1);
        queue(&mut core, "eu-2", "eu", Priority::Critical, 2);
        queue(&mut core, "one-1", "one", Priority::High, 3);
        queue(&mut core, "one-2", "one", Priority::High, 4);
        queue(&mut core, "any-low", "any", Priority::Low, 5);
        queue(&mut core, "any-normal", "any", Priority::Normal, 6);
        agent(&mut core, "us", 3, &[("region", "us")]);
        let picks: Vec<String> = select_assignments(&mut core, &jobs)
            .into_iter()
            .map(|(run, _)| run)
            .collect();
        // eu runs have no agent; `one` allows one at a time; then priority order.
        assert_eq!(picks, vec!["one-1", "any-normal", "any-low"]);
        assert_eq!(core.agents["us"].credits, 0);
    }
}
