//! Ready selection: which queued runs go to which agents now.
//!
//! Kept free of I/O so it can be benchmarked and tested on its own. The caller
//! commits the picks and restores the agents' credits if the commit fails.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use super::state::{AgentEntry, Core};
use crate::config::JobSet;

/// Picks (run id, agent id) pairs in dispatch order: runs by priority then
/// ready time; for each, the connected agent with a free credit that runs its
/// executor and matches its selector, preferring the most free credits, then
/// the fewest runs. Honours `max_concurrency`, and skips runs held after their
/// own assignment failed (see [`super::state::Hold`]) until `now` passes their
/// hold. Takes the credits of the picks.
pub fn select_assignments<'a>(core: &'a mut Core, jobs: &'a JobSet, now: i64) -> Vec<(String, String)> {
    let mut credits_left: u32 = core
        .agents
        .values()
        .filter(|a| a.sender.is_some() && !a.draining)
        .map(|a| a.credits)
        .sum();
    let mut picks = Vec::new();
    if credits_left == 0 {
        return picks;
    }
    let mut extra_by_job: HashMap<&str, u32> = HashMap::new();
    // Jobs that cannot be placed in this round (no agent with a credit takes
    // them, or their concurrency limit is reached): later runs of them are
    // skipped without looking for an agent again.
    let mut unplaceable: HashSet<&str> = HashSet::new();
    let Core {
        ready,
        live,
        agents,
        running_by_job,
        queued_by_job,
        holds,
        ..
    } = core;
    // The walk stops when no queued run of a placeable job is left ahead, so a
    // backlog no free agent can take is not walked on every dispatch: `remaining`
    // starts at every queued run, and the first run met of a job that cannot be
    // placed takes all of that job's runs off it. The cost is per job met, not
    // per job with queued runs (10,000 scheduled jobs must not make every
    // dispatch look at 10,000 jobs).
    let mut visited_by_job: HashMap<&str, usize> = HashMap::new();
    let mut remaining: usize = ready.len();
    for run_id in ready.values() {
        if credits_left == 0 || remaining == 0 {
            break;
        }
        let Some(run) = live.get(run_id) else { continue };
        if unplaceable.contains(&*run.job) {
            continue;
        }

        let Some(job) = jobs.get(&run.job) else {
            remaining = remaining.saturating_sub(1);
            continue;
        };
        let name = job.name.as_str();
        let visited = visited_by_job.entry(name).or_default();
        *visited += 1;
        remaining = remaining.saturating_sub(1);
        if !holds.is_empty() && holds.get(run_id).is_some_and(|h| h.until > now) {
            continue;
        }
        let mut give_up = |unplaceable: &mut HashSet<&'a str>, visited: usize| {
            // None of this job's runs further on can be placed either.
            unplaceable.insert(name);
            remaining = remaining.saturating_sub(queued_by_job.get(name).copied().unwrap_or(0).saturating_sub(visited));
        };
        if let Some(limit) = job.max_concurrency {
            let running = running_by_job.get(name).copied().unwrap_or(0) + extra_by_job.get(name).copied().unwrap_or(0);
            if running >= limit {
                give_up(&mut unplaceable, *visited);
                continue;
            }
        }
        let Some(agent) = agents
            .values_mut()
            .filter(|a| a.accepts(&job.executor, &job.selector))
            .max_by(|a, b| preference(a, b))
        else {
            give_up(&mut unplaceable, *visited);
            continue;
        };
        agent.credits -= 1;
        credits_left -= 1;
        *extra_by_job.entry(job.name.as_str()).or_default() += 1;
        picks.push((run_id.to_string(), agent.id.clone()));
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
        crate::config::parse_scheduler_yaml(Path::new("t.yaml"), yaml, &crate::config::env::from_pairs(&[])).unwrap()
    }

    fn queue(core: &mut Core, id: &str, job: &str, priority: Priority, at: i64) {
        let job = core.job_name(job);
        core.insert_live(LiveRun::new(
            id.into(),
            job,
            RunState::Queued,
            priority,
            0,
            1,
            Some(Arc::from("null")),
            0,
        ));
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
                handlers: Default::default(),
                capacity: credits,
                version: "t".into(),
                credits,
                sender: Some(tx),
                connection: 1,
                connected_at: 0,
                last_seen: 0,
                running: Default::default(),
                lost_reported: false,
                draining: false,
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
        let picks: Vec<String> = select_assignments(&mut core, &jobs, 0)
            .into_iter()
            .map(|(run, _)| run)
            .collect();
        // eu runs have no agent; `one` allows one at a time; then priority order.
        assert_eq!(picks, vec!["one-1", "any-normal", "any-low"]);
        assert_eq!(core.agents["us"].credits, 0);
    }

    #[test]
    fn a_placeable_run_behind_an_unplaceable_backlog_is_found() {
        let jobs = jobs();
        let mut core = Core::default();
        for i in 0..1000 {
            queue(&mut core, &format!("eu-{i:04}"), "eu", Priority::High, i);
        }
        queue(&mut core, "one-1", "one", Priority::Normal, 2000);
        queue(&mut core, "one-2", "one", Priority::Normal, 2001);
        queue(&mut core, "any-1", "any", Priority::Low, 2002);
        agent(&mut core, "us", 8, &[("region", "us")]);
        let picks: Vec<String> = select_assignments(&mut core, &jobs, 0)
            .into_iter()
            .map(|(run, _)| run)
            .collect();
        assert_eq!(picks, vec!["one-1", "any-1"], "one-2 waits for its concurrency limit");
        assert_eq!(
            core.queued_by_job.values().sum::<usize>(),
            1003,
            "selection takes nothing out of the queue"
        );
    }

    #[test]
    fn nothing_placeable_means_nothing_picked() {
        let jobs = jobs();
        let mut core = Core::default();
        queue(&mut core, "eu-1", "eu", Priority::High, 1);
        agent(&mut core, "us", 4, &[("region", "us")]);
        assert!(select_assignments(&mut core, &jobs, 0).is_empty());
        assert_eq!(core.agents["us"].credits, 4);
        agent(&mut core, "eu", 4, &[("region", "eu")]);
        assert_eq!(
            select_assignments(&mut core, &jobs, 0),
            vec![("eu-1".to_string(), "eu".to_string())]
        );
    }

    #[test]
    fn queued_counts_follow_the_queue() {
        let mut core = Core::default();
        queue(&mut core, "a", "any", Priority::Normal, 1);
        queue(&mut core, "b", "any", Priority::Normal, 2);
        core.push_ready("a", 3); // re-queued: counted once
        assert_eq!(core.queued_by_job["any"], 2);
        core.unindex("a");
        core.unindex("a");
        assert_eq!(core.queued_by_job["any"], 1);
        core.unindex("b");
        assert!(core.queued_by_job.is_empty());
    }
}
