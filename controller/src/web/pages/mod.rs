//! One module per area of the UI, each with its routes.
//!
//! * [`dashboard`]: `/`, `/live/counters`;
//! * [`jobs`]: `/jobs...` (list, detail, editor, schedule preview, actions);
//! * [`runs`]: `/runs...` (list, detail with live output, cancel, retry);
//! * [`queue`]: `/queue` and `/dlq` (retry, purge);
//! * [`agents`][]: `/agents`;
//! * [`alerts`]: `/alerts...` (channels, rules, history, test).

pub mod agents;
pub mod alerts;
pub mod dashboard;
pub mod jobs;
pub mod queue;
pub mod runs;

use axum::Router;

use crate::http::HttpState;

/// Every page's routes.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .merge(dashboard::routes())
        .merge(jobs::routes())
        .merge(runs::routes())
        .merge(queue::routes())
        .merge(agents::routes())
        .merge(alerts::routes())
}
