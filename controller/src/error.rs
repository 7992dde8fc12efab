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
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => Error {
                code: ErrorCode::Unavailable,
                message: format!("store unavailable: {err}"),
            },
            other => Error::internal(format!("store error: {other}")),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        tonic::Status::new(err.code.to_grpc(), err.message)
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
    fn status_keeps_code_and_message() {
        let status: tonic::Status = Error::invalid("priority", "unknown priority \"urgent\"").into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "priority: unknown priority \"urgent\"");
    }
}
