//! Helpers for controllers that require tokens (docs/security.md): a client
//! and `workerctl` with a token, a controller started with a bootstrap token,
//! and an agent started with a token.

use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use worker_proto::v1::agent_service_client::AgentServiceClient;
use worker_proto::v1::controller_service_client::ControllerServiceClient;
use worker_proto::v1::{self as pb};

use crate::{Agent, CliOutput, Controller, TestEnv, run_cli};

/// A bootstrap secret the tests use (at least 16 characters).
pub const BOOTSTRAP_SECRET: &str = "e2e-bootstrap-secret-0123456789";

/// Adds `authorization: Bearer <token>` to every call (none: no header).
#[derive(Debug, Clone)]
pub struct Bearer(pub Option<String>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| tonic::Status::internal("bad token"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// A `ControllerService` client sending a token.
pub type AuthedClient = ControllerServiceClient<InterceptedService<Channel, Bearer>>;
/// An `AgentService` client sending a token.
pub type AuthedAgentClient = AgentServiceClient<InterceptedService<Channel, Bearer>>;

impl Controller {
    /// A gRPC channel to this controller.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone())
            .expect("controller url")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url))
    }

    /// A client of `ControllerService` sending `token` (none: no header).
    pub async fn client_with_token(&self, token: Option<&str>) -> AuthedClient {
        ControllerServiceClient::with_interceptor(self.channel().await, Bearer(token.map(String::from)))
            .max_decoding_message_size(64 << 20)
    }

    /// A client of `AgentService` sending `token` (none: no header).
    pub async fn agent_client_with_token(&self, token: Option<&str>) -> AuthedAgentClient {
        AgentServiceClient::with_interceptor(self.channel().await, Bearer(token.map(String::from)))
    }

    /// `workerctl --controller URL -o json --token TOKEN ARGS...`.
    pub async fn cli_with_token(&self, token: &str, args: &[&str]) -> CliOutput {
        let mut full = vec!["--controller", self.url.as_str(), "-o", "json", "--token", token];
        full.extend_from_slice(args);
        run_cli(&full).await
    }

    /// Creates a token with `workerctl tokens create` (as `admin`) and returns
    /// its secret.
    pub async fn create_token(&self, admin: &str, name: &str, role: &str, extra: &[&str]) -> String {
        let mut args = vec!["tokens", "create", name, "--role", role];
        args.extend_from_slice(extra);
        let out = self.cli_with_token(admin, &args).await.expect_code(0).json();
        out["token"]
            .as_str()
            .unwrap_or_else(|| panic!("tokens create {name}: no token in {out}"))
            .to_string()
    }
}

impl TestEnv {
    /// Starts a controller with `--bootstrap-token-file` holding
    /// [`BOOTSTRAP_SECRET`], on `grpc_listen`, with extra arguments.
    pub async fn start_controller_with_bootstrap(&self, grpc_listen: &str, extra: &[&str]) -> Controller {
        let file = self.path().join("bootstrap.token");
        std::fs::write(&file, format!("{BOOTSTRAP_SECRET}\n")).expect("write the bootstrap token file");
        let file = file.display().to_string();
        let mut args = vec!["--bootstrap-token-file", file.as_str()];
        args.extend_from_slice(extra);
        self.start_controller_timed(grpc_listen, crate::HEARTBEAT, crate::LEASE_TIMEOUT, &args)
            .await
    }

    /// Starts `worker-agent` with `--token agent_token` and waits until the
    /// controller lists it connected (asked with `admin_token`).
    pub async fn start_agent_with_token(
        &self,
        ctl: &Controller,
        name: &str,
        agent_token: &str,
        admin_token: &str,
        extra: &[&str],
    ) -> Agent {
        // `--capacity N` in `extra` wins over the agent's default of 4.
        let capacity = extra
            .iter()
            .position(|a| *a == "--capacity")
            .and_then(|i| extra.get(i + 1))
            .map_or(4, |n| n.parse().expect("--capacity N"));
        let mut args = vec!["--token", agent_token];
        let mut rest = extra.iter();
        while let Some(arg) = rest.next() {
            if *arg == "--capacity" {
                rest.next();
            } else {
                args.push(arg);
            }
        }
        let agent = self.spawn_agent(&ctl.url, name, capacity, &args);
        let client = ctl.client_with_token(Some(admin_token)).await;
        crate::wait_until_connected(agent, || {
            let mut client = client.clone();
            async move {
                client
                    .list_agents(pb::ListAgentsRequest {})
                    .await
                    .expect("ListAgents")
                    .into_inner()
                    .agents
            }
        })
        .await
    }
}
