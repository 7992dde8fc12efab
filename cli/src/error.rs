//! Exit codes (the README lists them for users) and the mapping of failures
//! onto them.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the operation failed, or the awaited run did not succeed |
//! | 2 | usage or validation error |
//! | 3 | not found |
//! | 4 | controller unreachable (also: its TLS certificate is not trusted), no token where one is required, the token refused, or its role not allowed |
//! | 5 | bad data: a backup whose checksum does not match its manifest (`backup restore`) |

use std::fmt;

use tonic::Code;

/// Success.
pub const OK: u8 = 0;
/// The operation failed, or the awaited run did not end `succeeded`.
pub const FAILED: u8 = 1;
/// Usage or validation error.
pub const USAGE: u8 = 2;
/// The job or run does not exist.
pub const NOT_FOUND: u8 = 3;
/// The controller cannot be reached, or refused the credentials.
pub const UNREACHABLE: u8 = 4;
/// The data is corrupt (a backup's SHA-256 differs from its manifest's).
pub const DATA: u8 = 5;

/// An error raised by `workerctl` itself, with the exit code it stands for.
#[derive(Debug)]
pub struct CliError {
    /// Process exit code.
    pub code: u8,
    /// Message printed after `error: `.
    pub message: String,
}

impl CliError {
    /// A usage or validation error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: USAGE,
            message: message.into(),
        }
    }

    /// A failed operation (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: FAILED,
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// The exit code for a gRPC status code.
pub fn exit_code(code: Code) -> u8 {
    match code {
        Code::Ok => OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists | Code::OutOfRange => USAGE,
        Code::NotFound => NOT_FOUND,
        Code::Unavailable | Code::Unauthenticated | Code::PermissionDenied => UNREACHABLE,
        _ => FAILED,
    }
}

/// The exit code and the message to print for any error returned by a command.
///
/// A gRPC status prints the server's message verbatim; a connection failure
/// (`Unavailable`) also names the controller's address.
pub fn describe(err: &anyhow::Error, controller: &str) -> (u8, String) {
    if let Some(err) = err.downcast_ref::<CliError>() {
        return (err.code, err.message.clone());
    }
    if let Some(status) = err.downcast_ref::<tonic::Status>() {
        if let Some(message) = crate::tls::explain_plain_text_to_tls(controller, status.message()) {
            return (UNREACHABLE, message);
        }
        return (exit_code(status.code()), status_message(status, controller));
    }
    (FAILED, format!("{err:#}"))
}

/// The message of a gRPC status, as printed after `error: `.
fn status_message(status: &tonic::Status, controller: &str) -> String {
    let mut message = status.message().to_string();
    if status.code() == Code::Unavailable && message.starts_with(worker_agent::controllers::STANDBY_PREFIX) {
        // "standby: this controller does not lead; the leader is at URL".
        return format!("{controller}: {message}");
    }
    if status.code() == Code::Unavailable && message.starts_with(crate::leader::NO_LEADER) {
        // Says for each address why it did not take the call.
        return message;
    }
    if status.code() == Code::Unavailable {
        // Connection errors keep their cause (e.g. "Connection refused") in the
        // source chain; the status message alone is often just "tcp connect error".
        let mut source = std::error::Error::source(status);
        while let Some(err) = source {
            let text = err.to_string();
            if !text.is_empty() && !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            source = err.source();
        }
        if let Some(explained) = crate::tls::explain_handshake_failure(controller, &message) {
            return explained;
        }
        return format!("cannot reach the controller at {controller}: {message}");
    }
    if message.is_empty() {
        message = format!("{} ({:?})", status.code().description(), status.code());
    }
    // The controller's messages say which: "this controller requires a
    // token ...", "token refused: ...", or for a role "token ... may not call".
    if status.code() == Code::PermissionDenied && !message.starts_with("permission denied") {
        message = format!("permission denied: {message}");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_to_exit_codes() {
        assert_eq!(exit_code(Code::Ok), 0);
        for code in [
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::AlreadyExists,
            Code::OutOfRange,
        ] {
            assert_eq!(exit_code(code), 2, "{code:?}");
        }
        assert_eq!(exit_code(Code::NotFound), 3);
        for code in [Code::Unavailable, Code::Unauthenticated, Code::PermissionDenied] {
            assert_eq!(exit_code(code), 4, "{code:?}");
        }
        for code in [
            Code::Internal,
            Code::Unknown,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Aborted,
        ] {
            assert_eq!(exit_code(code), 1, "{code:?}");
        }
    }

    #[test]
    fn server_message_is_printed_verbatim() {
        let err = anyhow::Error::new(tonic::Status::invalid_argument("payload: expected JSON"));
        assert_eq!(describe(&err, "http://x"), (2, "payload: expected JSON".to_string()));
        let err = anyhow::Error::new(tonic::Status::not_found("job `nope` not found"));
        assert_eq!(describe(&err, "http://x"), (3, "job `nope` not found".to_string()));
    }

    #[test]
    fn refusals_say_which() {
        let err = anyhow::Error::new(tonic::Status::permission_denied(
            "token \"v\" (role viewer) may not call ApplyJobs; it needs operator or admin",
        ));
        let (code, message) = describe(&err, "");
        assert_eq!(code, 4);
        assert!(message.starts_with("permission denied: token \"v\""), "{message}");
        let err = anyhow::Error::new(tonic::Status::unauthenticated("token refused: unknown token"));
        assert_eq!(describe(&err, ""), (4, "token refused: unknown token".to_string()));
    }

    #[test]
    fn unavailable_names_the_controller() {
        let err = anyhow::Error::new(tonic::Status::unavailable("tcp connect error"));
        let (code, message) = describe(&err, "http://127.0.0.1:1");
        assert_eq!(code, 4);
        assert!(message.contains("http://127.0.0.1:1"), "{message}");
    }

    #[test]
    fn a_standby_names_the_leader() {
        let err = anyhow::Error::new(tonic::Status::unavailable(
            "standby: this controller does not lead; the leader is at http://10.0.0.5:7070",
        ));
        let (code, message) = describe(&err, "http://10.0.0.4:7070");
        assert_eq!(code, 4);
        assert_eq!(
            message,
            "http://10.0.0.4:7070: standby: this controller does not lead; the leader is at http://10.0.0.5:7070"
        );
        let summary = format!("{}: http://a:1: tcp connect error", crate::leader::NO_LEADER);
        let err = anyhow::Error::new(tonic::Status::unavailable(summary.clone()));
        assert_eq!(describe(&err, "http://a:1, http://b:2"), (4, summary));
    }

    #[test]
    fn own_errors_keep_their_code() {
        let err = anyhow::Error::new(CliError::usage("bad"));
        assert_eq!(describe(&err, ""), (2, "bad".to_string()));
        let err = anyhow::anyhow!("boom");
        assert_eq!(describe(&err, ""), (1, "boom".to_string()));
    }
}
