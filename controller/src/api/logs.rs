//! `FollowRunOutput`: a run's output, stored and live (the follower itself is
//! [`crate::logs::follow`]).
//!
//! Like `WatchEvents`, the stream counts against its token's stream limit
//! while open, ends with the token's revocation (or expiry) and at shutdown.
//! A run that does not exist is `NotFound` before anything is sent.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use worker_proto::v1 as pb;

use super::limits::check_id;
use crate::logs::LiveOutput;
use crate::logs::follow::{QUEUE, follow};

/// The stream of `FollowRunOutput`.
pub type OutputStream = Pin<Box<dyn Stream<Item = Result<pb::OutputEvent, Status>> + Send>>;

/// Serves one `FollowRunOutput` call from `live`.
pub async fn follow_run_output(
    live: &Arc<LiveOutput>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    request: Request<pb::FollowRunOutputRequest>,
) -> Result<Response<OutputStream>, Status> {
    let principal = crate::auth::Principal::of(&request);
    let guard = principal.open_stream()?;
    let run_id = request.into_inner().run_id;
    check_id("run_id", &run_id)?;
    // NotFound as the call's answer, not as a stream item.
    live.engine().run_view(&run_id).await?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let live = live.clone();
    tokio::spawn(async move {
        let _guard = guard;
        tokio::select! {
            () = follow(&live, &run_id, &tx) => {}
            status = principal.ended() => last_word(&tx, status).await,
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => last_word(&tx, Status::unavailable("the controller is shutting down")).await,
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

/// Ends the stream with `status`, unless the client does not read it within a second.
async fn last_word(tx: &mpsc::Sender<Result<pb::OutputEvent, Status>>, status: Status) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), tx.send(Err(status))).await;
}
