//! The controller's error type and its mapping onto gRPC status codes.
//!
//! Every failure the API can report is one [`ErrorCode`]; each code maps to exactly
//! one [`tonic::Code`] and back, so clients (and `workerctl`'s exit codes) can rely
//! on the status code alone. Messages name the offending field first
//! (`priority: unknown priority "urgent" ...`).

use std::fmt;

/// What kind of failure an [`Error`] is; decides the gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed or violates a limit (names the field).
    InvalidArgument,
    /// The named job, run or agent does not exist.
    NotFound,
    /// The request is valid but the object is in the wrong state for it.
    FailedPrecondition,
    /// The store or an invariant failed; the operation was not applied.
    Internal,
    /// The controller is shutting down or the store is unreachable.
    Unavailable,
}

impl ErrorCode {
    /// The gRPC status code this error is reported with.
    pub fn to_grpc(self) -> tonic::Code {
        match self {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorCode::Internal => tonic::Code::Internal,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
        }
    }

    /// The error code a gRPC status code stands for, if it is one of ours.
    pub fn from_grpc(code: tonic::Code) -> Option<Self> {
        Some(match code {
            tonic::Code::InvalidArgument => ErrorCode::InvalidArgument,
            tonic::Code::NotFound => ErrorCode::NotFound,
            tonic::Code::FailedPrecondition => ErrorCode::FailedPrecondition,
            tonic::Code::Internal => ErrorCode::Internal,
            tonic::Code::Unavailable => ErrorCode::Unavailable,
            _ => return None,
        })
    }

    /// All codes, for exhaustive tests.
    pub const ALL: [ErrorCode; 5] = [
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::FailedPrecondition,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
    ];
}

/// A controller error: a code and a message meant for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What kind of failure this is.
    pub code: ErrorCode,
    /// Human-readable message; for invalid input it starts with the field name.
    pub message: String,
}

impl Error {
    /// An invalid field: the message becomes `FIELD: REASON`.
    pub fn invalid(field: &str, reason: impl fmt::Display) -> Self {
        Error {
            code: ErrorCode::InvalidArgument,
            message: format!("{field}: {reason}"),
        }
    }

    /// Something named does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error {
            code: ErrorCode::NotFound,
            message: message.into(),
        }
    }

    /// The object is in the wrong state for the request.
    pub fn precondition(message: impl Into<String>) -> Self {
        Error {
            code: ErrorCode::FailedPrecondition,
            message: message.into(),
        }
    }

    /// An internal failure (store error, broken invariant).
    pub fn internal(message: impl Into<String>) -> Self {
        Error {
            code: ErrorCode::Internal,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        if store_wide(&err) {
            Error {
                code: ErrorCode::Unavailable,
                message: format!("store unavailable: {err}"),
            }
        } else {
            Error::internal(format!("store error: {err}"))
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        let store_wide = match &err {
            rusqlite::Error::SqliteFailure(e, _) => store_wide_code(&e.extended_code.to_string()),
            _ => false,
        };
        if store_wide {
            Error {
                code: ErrorCode::Unavailable,
                message: format!("store unavailable: {err}"),
            }
        } else {
            Error::internal(format!("store error: {err}"))
        }
    }
}

/// Whether `err` says the store as a whole cannot take writes now (any other
/// write would fail the same way), rather than refusing this statement's
/// content: the engine then retries everything later instead of splitting
/// its work to find a culprit.
///
/// * connection and pool failures;
/// * PostgreSQL SQLSTATE classes 08 (connection), 53 (insufficient
///   resources), 57 (operator intervention: shutdown, cancel), 58 (system
///   error), and 25006 (read-only transaction, e.g. a demoted primary);
/// * SQLite result codes BUSY (5), LOCKED (6), IOERR (10), FULL (13) and
///   CANTOPEN (14), extended codes included (the primary code is the low byte).
fn store_wide(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| store_wide_code(&code)),
        _ => false,
    }
}

/// See [`store_wide`]: a PostgreSQL SQLSTATE or a SQLite (extended) result code.
/// A SQLSTATE has exactly five characters; SQLite's codes (at most 4 digits)
/// never do.
fn store_wide_code(code: &str) -> bool {
    if code.len() == 5 {
        return matches!(code.get(..2), Some("08" | "53" | "57" | "58")) || code == "25006";
    }
    code.parse::<i64>()
        .is_ok_and(|sqlite| matches!(sqlite & 0xff, 5 | 6 | 10 | 13 | 14))
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        // Bounded: the message travels in a header (see `limits::status_message`).
        tonic::Status::new(err.code.to_grpc(), crate::limits::status_message(err.message))
    }
}

/// Result with the controller's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_grpc() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_grpc(code.to_grpc()), Some(code), "{code:?}");
        }
        assert_eq!(ErrorCode::from_grpc(tonic::Code::Ok), None);
    }

    #[test]
    fn store_wide_failures_are_told_from_refused_content() {
        for code in [
            "08006", "53100", "57P01", "58030", "25006", "5", "517", "6", "10", "13", "14",
        ] {
            assert!(store_wide_code(code), "{code}");
        }
        // Unique and foreign-key violations, bad text, SQLite CONSTRAINT (19).
        for code in ["23505", "23503", "22021", "42P01", "19", "2067", "1"] {
            assert!(!store_wide_code(code), "{code}");
        }
    }

    #[test]
    fn status_keeps_code_and_message() {
        let status: tonic::Status = Error::invalid("priority", "unknown priority \"urgent\"").into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "priority: unknown priority \"urgent\"");
    }
}
