//! Roles and the role matrix: which roles may call which RPC.
//!
//! [`MATRIX`] is the one table the server enforces ([`allowed_roles`]),
//! `docs/security.md` shows (a unit test below keeps them equal) and the
//! end-to-end matrix test (`tests/tests/auth_matrix.rs`) checks call by call.
//! A method missing from the table is denied to every role.

use std::fmt;
use std::str::FromStr;

/// What a token may do (docs/security.md, "Role matrix").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Everything a client may do, including tokens and alert channels.
    Admin,
    /// Jobs, schedules, runs, queue, DLQ, enqueue, alert rules and tests.
    Operator,
    /// Read-only calls.
    Viewer,
    /// Enqueue runs and follow them.
    Enqueuer,
    /// The agent protocol (`AgentService.Connect`), and `SendDigest` for the
    /// digest runs its agents hold.
    Agent,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 5] = [Role::Admin, Role::Operator, Role::Viewer, Role::Enqueuer, Role::Agent];

    /// Its name in flags, the store and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Enqueuer => "enqueuer",
            Role::Agent => "agent",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role \"{s}\" (expected admin, operator, viewer, enqueuer or agent)"))
    }
}

use Role::{Admin, Agent, Enqueuer, Operator, Viewer};

/// Read-only calls.
const READ: &[Role] = &[Admin, Operator, Viewer];
/// Read-only calls an enqueuer also needs to follow its runs.
const FOLLOW: &[Role] = &[Admin, Operator, Viewer, Enqueuer];
/// Creating runs.
const ENQUEUE: &[Role] = &[Admin, Operator, Enqueuer];
/// Changing jobs, schedules, runs, the queue, the DLQ and alert rules.
const MANAGE: &[Role] = &[Admin, Operator];
/// Tokens and alert channels.
const ADMIN: &[Role] = &[Admin];
/// The agent protocol (and `SendDigest`, checked further by its handler).
const AGENT: &[Role] = &[Agent];

/// The role matrix: every RPC (`Service/Method`, as in the gRPC path
/// `/worker.v1.Service/Method`) with the roles that may call it.
pub const MATRIX: &[(&str, &[Role])] = &[
    ("ControllerService/ListJobs", READ),
    ("ControllerService/GetJob", READ),
    ("ControllerService/Enqueue", ENQUEUE),
    ("ControllerService/GetRun", FOLLOW),
    ("ControllerService/WaitRun", FOLLOW),
    ("ControllerService/ListRuns", READ),
    ("ControllerService/CancelRun", MANAGE),
    ("ControllerService/RetryRun", MANAGE),
    ("ControllerService/QueueStats", READ),
    ("ControllerService/ListQueue", READ),
    ("ControllerService/ListDlq", READ),
    ("ControllerService/RetryDlq", MANAGE),
    ("ControllerService/PurgeDlq", MANAGE),
    ("ControllerService/PruneRuns", MANAGE),
    ("ControllerService/ListAgents", READ),
    ("ControllerService/DrainAgent", MANAGE),
    ("ControllerService/ListSchedules", READ),
    ("ControllerService/PauseSchedule", MANAGE),
    ("ControllerService/ResumeSchedule", MANAGE),
    ("ControllerService/PreviewSchedule", FOLLOW),
    ("ControllerService/EnqueueBatch", ENQUEUE),
    ("ControllerService/CancelWorkflow", MANAGE),
    ("ControllerService/ApplyJobs", MANAGE),
    ("ControllerService/ExportJobs", READ),
    ("ControllerService/SetJobEnabled", MANAGE),
    ("ControllerService/DeleteJob", MANAGE),
    ("ControllerService/WatchEvents", FOLLOW),
    ("ControllerService/FollowRunOutput", FOLLOW),
    ("ControllerService/ServerInfo", FOLLOW),
    ("ControllerService/ListAlertChannels", READ),
    ("ControllerService/PutAlertChannel", ADMIN),
    ("ControllerService/DeleteAlertChannel", ADMIN),
    ("ControllerService/SetAlertChannelEnabled", ADMIN),
    ("ControllerService/ListAlertRules", READ),
    ("ControllerService/PutAlertRule", MANAGE),
    ("ControllerService/DeleteAlertRule", MANAGE),
    ("ControllerService/ListAlertHistory", READ),
    ("ControllerService/TestAlertChannel", MANAGE),
    ("ControllerService/CreateToken", ADMIN),
    ("ControllerService/ListTokens", ADMIN),
    ("ControllerService/RevokeToken", ADMIN),
    ("ControllerService/SnapshotStore", ADMIN),
    ("AgentService/Connect", AGENT),
    ("ControllerService/SendDigest", AGENT),
    // The job catalog (docs/catalog.md): install applies jobs, so it takes
    // the role ApplyJobs takes; so do publish, rate and review.
    ("CatalogService/ListPacks", READ),
    ("CatalogService/SearchPacks", READ),
    ("CatalogService/ShowPack", READ),
    ("CatalogService/PublishPack", MANAGE),
    ("CatalogService/InstallPack", MANAGE),
    ("CatalogService/RatePack", MANAGE),
    ("CatalogService/ReviewPack", MANAGE),
];

/// The HTTP endpoints that need a token when authentication is on, with the
/// roles that may call them (`/healthz` and `/readyz` are open to probes:
/// they tell nothing but "alive" and "ready"). Shown below the RPCs in
/// `docs/security.md`'s table.
pub const HTTP_MATRIX: &[(&str, &[Role])] = &[(METRICS, READ)];

/// The name of `GET /metrics` in [`HTTP_MATRIX`].
pub const METRICS: &str = "HTTP GET /metrics";

/// The roles that may call `method` (`Service/Method`, or an entry of
/// [`HTTP_MATRIX`]); empty for a method the tables do not know (denied to
/// everyone).
pub fn allowed_roles(method: &str) -> &'static [Role] {
    MATRIX
        .iter()
        .chain(HTTP_MATRIX)
        .find(|(m, _)| *m == method)
        .map(|(_, roles)| *roles)
        .unwrap_or(&[])
}

/// "operator or admin": the roles of a denial message, listed as the
/// matrix lists them, most powerful last.
pub fn describe(roles: &[Role]) -> String {
    let names: Vec<&str> = roles.iter().rev().map(|r| r.as_str()).collect();
    match names.as_slice() {
        [] => "a role no token has".to_string(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// The matrix as the markdown table of `docs/security.md`.
pub fn markdown_table() -> Vec<String> {
    let mut rows = vec![
        "| RPC | admin | operator | viewer | enqueuer | agent |".to_string(),
        "|---|---|---|---|---|---|".to_string(),
    ];
    for (method, roles) in MATRIX.iter().chain(HTTP_MATRIX) {
        let cells: Vec<&str> = Role::ALL
            .iter()
            .map(|r| if roles.contains(r) { "yes" } else { "-" })
            .collect();
        rows.push(format!("| `{method}` | {} |", cells.join(" | ")));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/security.md` shows the role matrix; it must be this one, row for
    /// row, so the document never drifts from what the server enforces.
    #[test]
    fn the_security_document_shows_this_table() {
        let doc = include_str!("../../../docs/security.md");
        let header = "| RPC | admin | operator | viewer | enqueuer | agent |";
        let shown: Vec<&str> = doc
            .lines()
            .skip_while(|line| *line != header)
            .take_while(|line| line.starts_with('|'))
            .collect();
        let table = markdown_table();
        assert_eq!(
            shown,
            table,
            "docs/security.md's role matrix differs from auth::roles::MATRIX; its rows should be:\n{}",
            table.join("\n")
        );
    }

    /// Every RPC of both services is in the table (read from the proto
    /// files), and nothing else is.
    #[test]
    fn every_rpc_is_in_the_matrix() {
        let mut rpcs = Vec::new();
        for proto in [
            include_str!("../../../proto/worker/v1/controller.proto"),
            include_str!("../../../proto/worker/v1/agent.proto"),
            include_str!("../../../proto/worker/v1/catalog.proto"),
        ] {
            let mut service = "";
            for line in proto.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.trim_end_matches('{').trim();
                } else if let Some(rest) = line.strip_prefix("rpc ") {
                    let name = rest.split('(').next().unwrap().trim();
                    rpcs.push(format!("{service}/{name}"));
                }
            }
        }
        rpcs.sort();
        let mut table: Vec<String> = MATRIX.iter().map(|(m, _)| m.to_string()).collect();
        table.sort();
        assert_eq!(rpcs, table);
    }

    #[test]
    fn unknown_methods_are_denied_and_roles_parse() {
        assert!(allowed_roles("ControllerService/NoSuchCall").is_empty());
        assert_eq!(allowed_roles("AgentService/Connect"), &[Role::Agent]);
        assert_eq!(allowed_roles(METRICS), READ);
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().unwrap_err().contains("unknown role \"root\""));
        assert_eq!(describe(MANAGE), "operator or admin");
        assert_eq!(describe(FOLLOW), "enqueuer, viewer, operator or admin");
    }
}
