//! The vocabulary shared by every component: priorities, run states, attempt
//! outcomes, triggers and policies. Each enum has one lower-case name used in the
//! store, the API, JSON output and configuration files.

/// Declares a string-named enum with `as_str`, `Display`, `FromStr` and `ALL`.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The lower-case name used everywhere outside the code.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        concat!("unknown ", $what, " \"{}\" (expected one of: {})"),
                        other,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

/// Lets other modules (such as [`crate::alerting`]) declare their enums the same way.
pub(crate) use named_enum;

named_enum!(
    /// Dispatch priority; higher runs first, FIFO by ready time within one.
    Priority, "priority" {
        /// Background work.
        Low => "low",
        /// The default.
        Normal => "normal",
        /// Ahead of normal work.
        High => "high",
        /// Ahead of everything.
        Critical => "critical",
    }
);

named_enum!(
    /// The state of a run. Each variant says which component moves a run out
    /// of it; the complete table of legal moves is
    /// [`crate::engine::transitions::TRANSITIONS`] (rendered in
    /// `docs/architecture.md#the-run-state-machine`).
    RunState, "state" {
        /// Waits for `not_before` (delayed enqueue, retry backoff, jittered
        /// fire). The timer loop moves it to `queued`; a cancel to `cancelled`.
        Scheduled => "scheduled",
        /// Waits for its `depends_on` runs. The last upstream success moves it
        /// to `queued` (or `scheduled`, before its `not_before`); an upstream
        /// cancel or purge, or a cancel, to `cancelled`.
        Blocked => "blocked",
        /// Ready, in the priority queue. The dispatcher moves it to `running`;
        /// a cancel to `cancelled`.
        Queued => "queued",
        /// Leased to one agent. Its result moves it to `succeeded`, `scheduled`
        /// (retry), `dead`, or `cancelled` after a cancel request (a cancel
        /// only marks the run and tells the agent); lease expiry records the
        /// attempt as `lost` (`timed_out` past its deadline) and then handles it
        /// as a failure.
        Running => "running",
        /// Terminal.
        Succeeded => "succeeded",
        /// Attempts exhausted, a non-retryable failure, or (at start-up) its
        /// job no longer defined: the dead-letter queue. `dlq retry` moves it
        /// to `queued`; `dlq purge` deletes it.
        Dead => "dead",
        /// Terminal.
        Cancelled => "cancelled",
    }
);

impl RunState {
    /// No component moves the run out of this state on its own.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Succeeded | RunState::Dead | RunState::Cancelled)
    }
}

named_enum!(
    /// How one attempt ended.
    Outcome, "outcome" {
        /// Exit code 0 / handler success.
        Succeeded => "succeeded",
        /// Non-zero exit, spawn error, handler error.
        Failed => "failed",
        /// Killed after the job's timeout.
        TimedOut => "timed_out",
        /// Its agent stopped heartbeating past the lease.
        Lost => "lost",
        /// Cancelled by an operator.
        Cancelled => "cancelled",
    }
);

named_enum!(
    /// Why a run was created.
    Trigger, "trigger" {
        /// A cron fire.
        Schedule => "schedule",
        /// `workerctl jobs run`.
        Manual => "manual",
        /// An application's enqueue.
        Api => "api",
        /// Upstream of a triggered job chain.
        Dependency => "dependency",
        /// A copy made by `runs retry`.
        Retry => "retry",
    }
);

named_enum!(
    /// Growth of the delay between attempts.
    Backoff, "backoff" {
        /// `initial_delay * 2^(n-1)`.
        Exponential => "exponential",
        /// `initial_delay` every time.
        Fixed => "fixed",
        /// `initial_delay * n`.
        Linear => "linear",
    }
);

named_enum!(
    /// What a schedule fire does while a run of the same job is not terminal.
    Overlap, "overlap policy" {
        /// Fire anyway.
        Allow => "allow",
        /// Skip the fire and record the skip.
        Forbid => "forbid",
        /// Cancel the unfinished runs, then fire.
        Replace => "replace",
    }
);

named_enum!(
    /// What happens to fires missed while the controller was down.
    CatchUp, "catch-up policy" {
        /// Record them as missed.
        Skip => "skip",
        /// Run once for the missed period (the latest missed instant).
        Latest => "latest",
        /// Run each missed fire, at most `max_catch_up`.
        All => "all",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>().unwrap(), *p);
        }
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>().unwrap(), *s);
        }
        assert_eq!("timed_out".parse::<Outcome>().unwrap(), Outcome::TimedOut);
    }

    #[test]
    fn priorities_order_low_to_critical() {
        assert!(
            Priority::Critical > Priority::High
                && Priority::High > Priority::Normal
                && Priority::Normal > Priority::Low
        );
    }

    #[test]
    fn unknown_name_lists_the_choices() {
        let err = "urgent".parse::<Priority>().unwrap_err();
        assert_eq!(
            err,
            "unknown priority \"urgent\" (expected one of: low, normal, high, critical)"
        );
    }
}
