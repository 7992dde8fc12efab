//! Taking and keeping the leadership lease.

use tokio::sync::watch;
use tokio::time::Instant;

use super::HaSettings;
use crate::http::{Leadership, Readiness};
use crate::store::Store;

/// A term of leadership won by [`campaign`].
#[derive(Debug, Clone)]
pub struct Term {
    /// The lease's epoch for this term; every fenced write carries it.
    pub epoch: i64,
    /// When the lease was taken (Unix ms, the database's clock).
    pub acquired_at: i64,
    /// Until when this controller may act on it by its own clock (the lease
    /// minus [`HaSettings::margin`], counted from before the request).
    valid_until: Instant,
}

/// Tries to take the lease every [`HaSettings::poll_every`] until it does.
/// Meanwhile `seen` and `readiness` show who leads, for the standby's
/// answers and `/readyz`. Dropping the future stops the campaign (a lease
/// taken by a request cut short expires by itself).
pub async fn campaign(
    store: &Store,
    settings: &HaSettings,
    seen: &watch::Sender<Option<super::standby::SeenLease>>,
    readiness: &Readiness,
) -> Term {
    let mut logged: Option<i64> = None;
    loop {
        let started = Instant::now();
        match store
            .acquire_lease(&settings.id, &settings.advertise_url, settings.lease_ms())
            .await
        {
            Ok(Some(epoch)) => {
                let acquired_at = match store.lease().await {
                    Ok(lease) if lease.epoch == epoch => lease.acquired_at,
                    _ => chrono::Utc::now().timestamp_millis(),
                };
                tracing::info!(epoch, id = %settings.id, "took the leadership lease: this controller leads");
                super::count_term();
                readiness.set_leadership(Leadership::Leader {
                    epoch,
                    since: acquired_at,
                });
                return Term {
                    epoch,
                    acquired_at,
                    valid_until: started + settings.lease - settings.margin(),
                };
            }
            Ok(None) => match store.lease().await {
                Ok(lease) => {
                    if logged != Some(lease.epoch) {
                        logged = Some(lease.epoch);
                        tracing::info!(epoch = lease.epoch, leader = %lease.holder, address = %lease.address, "standby: another controller leads");
                    }
                    readiness.set_leadership(Leadership::Follower {
                        epoch: lease.epoch,
                        leader: lease.holder.clone(),
                        address: lease.address.clone(),
                        since: lease.acquired_at,
                    });
                    seen.send_replace(Some(super::standby::SeenLease {
                        lease,
                        read_at: std::time::Instant::now(),
                    }));
                }
                Err(e) => tracing::warn!(error = %e, "standby: cannot read the leadership lease"),
            },
            Err(e) => {
                tracing::warn!(error = %e, "standby: cannot reach the store to take the leadership lease");
                readiness.set_leadership(Leadership::Unknown);
            }
        }
        tokio::time::sleep(settings.poll_every()).await;
    }
}

/// Renews the lease of `term` every [`HaSettings::renew_every`]. Returns why
/// leadership ended: another controller took the lease, or it could not be
/// renewed before [`Term`]'s deadline by this controller's clock. Runs until
/// then (a graceful shutdown drops it).
pub async fn keep(store: &Store, settings: &HaSettings, term: &Term) -> String {
    let mut valid_until = term.valid_until;
    let mut last_renewal = Instant::now();
    let mut tick = tokio::time::interval(settings.renew_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(valid_until) => {
                return format!(
                    "the leadership lease of epoch {} could not be renewed in time (last renewed {} ms ago; \
                     stepping down {} ms before it ends)",
                    term.epoch,
                    last_renewal.elapsed().as_millis(),
                    settings.margin().as_millis()
                );
            }
            _ = tick.tick() => {}
        }
        let sent = Instant::now();
        match tokio::time::timeout_at(valid_until, store.renew_lease(term.epoch, settings.lease_ms())).await {
            Ok(Ok(true)) => {
                valid_until = sent + settings.lease - settings.margin();
                last_renewal = sent;
            }
            Ok(Ok(false)) => {
                return format!(
                    "another controller took the leadership lease (this controller's epoch {} ended)",
                    term.epoch
                );
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, epoch = term.epoch, "cannot renew the leadership lease; trying again")
            }
            // The deadline passed: the next turn of the loop steps down.
            Err(_) => {}
        }
    }
}
