//! Arbitrary bytes as a sequence of length-delimited `AgentMessage`s on one
//! agent stream, handled as `AgentService.Connect` does (Hello first, then
//! Pull, Started, Heartbeat, Finished) against the real engine on a SQLite
//! file, with a commit round after every message: no panic, and the engine
//! never stops (its memory never disagrees with the store).
#![no_main]

use std::path::Path;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use worker_controller::config::parse_scheduler_yaml;
use worker_controller::engine::{Engine, EngineSettings, EnqueueRequest, ResultMessage};
use worker_controller::store::Store;
use worker_controller::time::Clock;
use worker_proto::v1::{AgentMessage, InFlight, agent_message::Msg};

const JOBS: &str = "jobs:\n  quick:\n    builtin: noop\n  retrying:\n    builtin: noop\n    retry: { max_attempts: 3, initial_delay: 1s, jitter: 0 }\n";

fuzz_target!(|data: &[u8]| {
    let mut messages = Vec::new();
    let mut buf = data;
    while !buf.is_empty() && messages.len() < 64 {
        match AgentMessage::decode_length_delimited(&mut buf) {
            Ok(m) => messages.push(m),
            Err(_) => break,
        }
    }
    let Some(AgentMessage {
        msg: Some(Msg::Hello(hello)),
    }) = messages.first().cloned()
    else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("w.db").display()))
            .await
            .unwrap();
        let jobs = parse_scheduler_yaml(Path::new("scheduler.yaml"), JOBS, &|_| Err("no variables".into())).unwrap();
        let settings = EngineSettings {
            heartbeat_interval: Duration::from_secs(1),
            lease_timeout: Duration::from_secs(5),
            idempotency_window: Duration::from_secs(3600),
        };
        let clock = Clock::manual(1_800_000_000_000);
        let engine = Engine::recover_with_clock(store, jobs, settings, clock.clone())
            .await
            .unwrap();
        let (results, mut rounds) = engine.rounds().unwrap();
        for job in ["quick", "retrying"] {
            let _ = engine.enqueue_in_round(EnqueueRequest {
                job: job.into(),
                payload: String::new(),
                priority: String::new(),
                trigger: String::new(),
                depends_on: Vec::new(),
                idempotency_key: String::new(),
                delay_ms: 0,
                not_before: String::new(),
                reference: String::new(),
            });
        }
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let Ok(connection) = engine.register_agent(&hello, tx.clone()).await else {
            return;
        };
        for message in messages.into_iter().skip(1) {
            match message.msg {
                Some(Msg::Pull(p)) => engine.add_credits(&hello.agent_id, connection, p.credits),
                Some(Msg::Heartbeat(h)) => engine.renew_leases(&hello.agent_id, &h.in_flight),
                Some(Msg::Started(s)) => engine.renew_leases(
                    &hello.agent_id,
                    &[InFlight {
                        run_id: s.run_id,
                        attempt: s.attempt,
                    }],
                ),
                Some(Msg::Finished(finished)) => {
                    let _ = results.send(ResultMessage {
                        agent_id: hello.agent_id.clone(),
                        finished,
                        reply: tx.clone(),
                    });
                }
                Some(Msg::Hello(_)) => break,
                None => {}
            }
            engine.run_round(&mut rounds).await;
            clock.advance(1_000);
            let _ = engine.expire_leases().await;
            assert!(engine.failure().is_none(), "the engine stopped: {:?}", engine.failure());
        }
        engine.agent_disconnected(&hello.agent_id, connection).await;
    });
});
