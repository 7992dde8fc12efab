//! High availability on PostgreSQL: several controllers share one database,
//! one of them leads (`docs/high-availability.md`).
//!
//! Leadership is a lease row in the database with an epoch that rises by one
//! at every takeover (`store/postgres/lease.rs`). The layout:
//!
//! * [`HaSettings`]: who this controller is, where it is reached, the lease's
//!   length and the timings derived from it;
//! * `lease.rs`: [`campaign`] (a standby tries to take the lease until it
//!   does) and [`keep`] (the leader renews it, and gives up by its own clock,
//!   a margin before the lease would end in the database);
//! * `standby.rs`: the gRPC server of a standby. It relays every unary call
//!   of the controller and catalog services to the leader through the store
//!   ([`relay`]: reads, enqueues and management work against any
//!   controller), and answers the rest (streams, the agents' `Connect`)
//!   `UNAVAILABLE` with the leader's address in the
//!   [`worker_proto::LEADER_HEADER`] header, so that agents find the leader;
//! * [`relay`]: the store-mediated relay, both its standby side and the
//!   leader's loop that claims and answers relayed calls.
//!
//! What makes it safe is the fence, not the timing: once leading, the
//! controller sets its epoch on the store (`Store::set_fence`), and every
//! write only the leader may make (new runs, state changes, schedule cursors,
//! retention) checks in its own transaction that the epoch is still the
//! lease's. A stale leader's write either commits before the takeover (which
//! waits for it) or writes nothing. The timing only keeps a stale leader from
//! trying: it stops scheduling and dispatching before its lease ends.
//!
//! Every term this process begins is counted ([`terms_begun`], the metric
//! `worker_leadership_changes_total`), and a term that follows an earlier
//! one raises the alert event `leader_changed` ([`announce`]).
//!
//! A controller that loses the lease stops like after an internal failure
//! and `run` returns [`crate::RunError::LostLeadership`]; the binary then
//! starts again as a standby on the same addresses, with a fresh engine
//! rebuilt from the store when it leads again.

mod lease;
pub mod relay;
mod standby;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use lease::{Term, campaign, keep};
pub use standby::{SeenLease, serve_standby};

use crate::alerting::Event;
use crate::alerting::facts::{Fact, LeaderChange, LeaderFact, PreviousLeader};
use crate::engine::Engine;
use crate::store::Store;

/// Terms of leadership this process has begun (see [`terms_begun`]).
static TERMS_BEGUN: AtomicU64 = AtomicU64::new(0);

/// How many terms of leadership this process has begun (taken the lease),
/// over all its runs as leader and standby; `worker_leadership_changes_total`.
pub fn terms_begun() -> u64 {
    TERMS_BEGUN.load(Ordering::Relaxed)
}

/// Counts a term begun (called by [`campaign`] when it takes the lease).
fn count_term() {
    TERMS_BEGUN.fetch_add(1, Ordering::Relaxed);
}

/// How long [`announce`] waits for the previous term's record.
const PREVIOUS_TERM_TIMEOUT: Duration = Duration::from_secs(2);

/// Tells alerting that this controller leads now, when `term` follows an
/// earlier one (epoch above 1) and some rule is about `leader_changed`: the
/// previous term's holder is read from the store's record of terms (left out
/// when it cannot be read within [`PREVIOUS_TERM_TIMEOUT`]). Called once at
/// the start of the term, after alerting started.
pub async fn announce(store: &Store, engine: &Engine, settings: &HaSettings, term: &Term) {
    if term.epoch <= 1 {
        return;
    }
    let Some(sink) = engine.alert_sink().filter(|s| s.wants(Event::LeaderChanged)) else {
        return;
    };
    let previous = match tokio::time::timeout(PREVIOUS_TERM_TIMEOUT, store.leader_term(term.epoch - 1)).await {
        Ok(Ok(record)) => record.map(|r| PreviousLeader {
            id: r.holder,
            address: r.address,
            epoch: r.epoch,
            since: r.acquired_at,
        }),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, epoch = term.epoch - 1, "cannot read the previous term of leadership");
            None
        }
        Err(_) => {
            tracing::warn!(
                epoch = term.epoch - 1,
                "the previous term of leadership could not be read in time"
            );
            None
        }
    };
    sink.send(Fact::LeaderChanged(leader_fact(settings, term, previous, engine.now())));
}

/// The fact [`announce`] sends.
fn leader_fact(settings: &HaSettings, term: &Term, previous: Option<PreviousLeader>, at: i64) -> LeaderFact {
    LeaderFact {
        change: LeaderChange {
            id: settings.id.clone(),
            address: settings.advertise_url.clone(),
            epoch: term.epoch,
            since: term.acquired_at,
            previous,
        },
        at,
    }
}

/// The shortest lease `--ha-lease` accepts.
pub const MIN_LEASE: Duration = Duration::from_secs(1);

/// How this controller takes part in the election.
#[derive(Debug, Clone)]
pub struct HaSettings {
    /// This controller's name in the lease (`--ha-id`; default host name and
    /// process id).
    pub id: String,
    /// The URL agents and clients reach this controller's gRPC at
    /// (`--advertise-url`); given to them by standbys while it leads.
    pub advertise_url: String,
    /// How long a lease lasts without renewal (`--ha-lease`, 5 s by default):
    /// a standby takes over at most this long after the leader died, plus
    /// one poll.
    pub lease: Duration,
}

impl HaSettings {
    /// How often the leader renews: five times per lease.
    pub fn renew_every(&self) -> Duration {
        self.lease / 5
    }

    /// How long before the lease would end the leader gives up if it could
    /// not renew: a quarter of the lease (its stop takes under a second).
    pub fn margin(&self) -> Duration {
        self.lease / 4
    }

    /// How often a standby tries to take the lease.
    pub fn poll_every(&self) -> Duration {
        (self.lease / 5).max(Duration::from_millis(100))
    }

    /// The lease in milliseconds, for the database.
    pub fn lease_ms(&self) -> i64 {
        self.lease.as_millis().min(i64::MAX as u128) as i64
    }
}

/// The default `--ha-id`: `HOST-PID`.
pub fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "controller".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_follow_the_lease() {
        let settings = HaSettings {
            id: "a".into(),
            advertise_url: "http://127.0.0.1:7070".into(),
            lease: Duration::from_secs(5),
        };
        assert_eq!(settings.renew_every(), Duration::from_secs(1));
        assert_eq!(settings.margin(), Duration::from_millis(1250));
        assert_eq!(settings.poll_every(), Duration::from_secs(1));
        assert_eq!(settings.lease_ms(), 5000);
        // The leader renews several times before its margin is reached.
        assert!(settings.renew_every() * 3 < settings.lease - settings.margin());
    }
}
