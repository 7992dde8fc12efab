//! Cron expressions evaluated in an IANA time zone, with an explicit
//! daylight-saving-time policy (the syntax and the `dst` keys of a job are in
//! `docs/configuration.md`).
//!
//! # Syntax
//!
//! Five fields (`minute hour day-of-month month day-of-week`) or six with a
//! leading seconds field; `@hourly @daily @midnight @weekly @monthly @yearly
//! @annually` (any case); month names `JAN`-`DEC` and weekday names `SUN`-`SAT`
//! (any case); `*`, values, ranges `a-b`, steps `*/s`, `a-b/s` and `a/s` (from `a`
//! to the end of the field), lists `a,b-c,*/5`; weekday 0-7 with 0 and 7 both
//! Sunday (`*` is 0-6). `?` is accepted as `*` in the two day fields. Day-of-month
//! and day-of-week follow Vixie cron: when both are restricted (neither starts
//! with `*`), a day matches if either matches; otherwise both must. Parsing is
//! in `parse`; errors say which field is wrong and why, and an expression that
//! can never fire (`0 0 30 2 *`) is rejected.
//!
//! # Evaluation and daylight saving time
//!
//! A cron expression describes *wall-clock* (local) times, but fires are
//! instants. Most local times exist exactly once, but around a DST change some
//! exist zero times (the gap of a spring-forward) and some twice (the repeated
//! period of a fall-back). Libraries that walk instants and test each one's
//! local time silently drop gap times and fire repeated times twice (or once,
//! depending on the implementation); neither is what an operator who wrote
//! `30 2 * * *` for a nightly job wants, and the behaviour should be explicit.
//! So each schedule has a [`DstPolicy`]:
//!
//! - a matching local time that exists once fires at that instant;
//! - in a **gap**, [`DstGap::Shift`] (the default) fires once at the first
//!   instant after the gap (the transition instant, whose local time is the end
//!   of the gap); all gap times of one schedule on that night collapse into that
//!   single instant (and into a regular fire at the same instant). [`DstGap::Skip`]
//!   drops them;
//! - in a **repeat**, [`DstRepeat::First`] (the default) fires at the earlier
//!   occurrence, [`DstRepeat::Last`] at the later, [`DstRepeat::Both`] at both.
//!
//! The policy is about schedules with fixed hours (a daily job at 02:30 should
//! run once a day). A schedule whose hour field matches every hour (`*`) is about
//! elapsed real time instead, and [follows real time](CronSchedule::follows_real_time)
//! whatever the policy: in a repeated hour it fires at both occurrences
//! (`*/15 * * * *` fires every 15 real minutes through a fall-back), and in a gap
//! nothing fires (the clock jumps over those minutes; nothing is shifted).
//!
//! The evaluator therefore works in local time: the field-wise search
//! (`parse::Fields::next_match`) yields the matching local date-times in
//! increasing order, each is mapped with `tz.from_local_datetime()` (one, two or
//! no instants) and the policy turns that into zero to two fire instants. The
//! shift instant is found by a binary search for the transition (second
//! precision). Because instants are not monotonic in local time around a
//! fall-back, [`CronSchedule::next_after`] looks at real time in windows of three
//! hours (a DST change moves the clock by at most two hours, and changes are
//! months apart): for the window `(t, t + 3h]`, with `lo`/`hi` the smaller/larger
//! UTC offset at its two ends, every instant of the window has a local time in
//! `[t + lo, t + 3h + hi]`, so the matching local times of that range are mapped
//! and the earliest instant inside the window wins; the scan stops early as soon
//! as a later local time cannot give an earlier instant (`local - hi > best`).
//! When the next matching local time is far away the search jumps to just
//! before it. Every loop is bounded (the local search looks at most 400 years
//! ahead, one full Gregorian cycle), so a schedule never hangs the scheduler.

mod parse;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use parse::Fields;

/// Length of the real-time windows of [`CronSchedule::next_after`], in seconds.
/// Longer than any DST shift (at most two hours).
const WINDOW_SECS: i64 = 3 * 3600;

/// How far ahead (in days) the local search looks: one Gregorian cycle of 400
/// years, after which the calendar (dates and weekdays) repeats exactly.
const HORIZON_DAYS: i64 = 146_097;

/// Bound of the window loop of [`CronSchedule::next_after`].
const MAX_WINDOWS: u32 = 100_000;

/// What a schedule does with a local time skipped by a spring-forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DstGap {
    /// Fire once at the first instant after the gap (the default).
    #[default]
    Shift,
    /// Do not fire.
    Skip,
}

/// What a schedule does with a local time that occurs twice in a fall-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DstRepeat {
    /// Fire at the first (earlier) occurrence (the default).
    #[default]
    First,
    /// Fire at the last (later) occurrence.
    Last,
    /// Fire at both occurrences.
    Both,
}

/// The DST policy of a schedule with fixed hours (a job's `dst.gap` and
/// `dst.repeat`). Default: `shift` / `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DstPolicy {
    /// Local times that do not exist.
    pub gap: DstGap,
    /// Local times that exist twice.
    pub repeat: DstRepeat,
}

impl fmt::Display for DstGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DstGap::Shift => "shift",
            DstGap::Skip => "skip",
        })
    }
}

impl FromStr for DstGap {
    type Err = String;

    /// `shift` or `skip` (any case).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "shift" => Ok(DstGap::Shift),
            "skip" => Ok(DstGap::Skip),
            _ => Err(format!("unknown DST gap policy \"{s}\" (expected shift or skip)")),
        }
    }
}

impl fmt::Display for DstRepeat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DstRepeat::First => "first",
            DstRepeat::Last => "last",
            DstRepeat::Both => "both",
        })
    }
}

impl FromStr for DstRepeat {
    type Err = String;

    /// `first`, `last` or `both` (any case).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "first" => Ok(DstRepeat::First),
            "last" => Ok(DstRepeat::Last),
            "both" => Ok(DstRepeat::Both),
            _ => Err(format!(
                "unknown DST repeat policy \"{s}\" (expected first, last or both)"
            )),
        }
    }
}

impl fmt::Display for DstPolicy {
    /// `gap=shift repeat=first`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gap={} repeat={}", self.gap, self.repeat)
    }
}

/// A validated cron expression with its time zone and DST policy.
#[derive(Clone)]
pub struct CronSchedule {
    expr: String,
    fields: Fields,
    tz: Tz,
    policy: DstPolicy,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?} in {}, dst {})", self.expr, self.tz, self.policy)
    }
}

/// Longest cron expression accepted, in bytes: far more than any real
/// schedule needs (a list of every minute of an hour is 170 bytes), and short
/// enough that parsing and echoing one costs nothing.
pub const MAX_EXPRESSION_BYTES: usize = 1024;

impl CronSchedule {
    /// Parses `expr` with the default DST policy (`shift` / `first`); the error
    /// says what is wrong with it and where.
    pub fn parse(expr: &str, tz: Tz) -> Result<Self, String> {
        Self::with_policy(expr, tz, DstPolicy::default())
    }

    /// Parses `expr` with an explicit DST policy; the error says what is wrong
    /// with it and where (e.g. `invalid cron expression "61 * * * *": minute: 61
    /// is out of range 0-59`).
    pub fn with_policy(expr: &str, tz: Tz, policy: DstPolicy) -> Result<Self, String> {
        let invalid = |reason: String| {
            format!(
                "invalid cron expression \"{}\": {}",
                crate::limits::echo(expr),
                crate::limits::escape_controls(reason)
            )
        };
        if expr.len() > MAX_EXPRESSION_BYTES {
            return Err(invalid(format!(
                "{} bytes long (at most {MAX_EXPRESSION_BYTES})",
                expr.len()
            )));
        }
        let fields = parse::parse_fields(expr).map_err(invalid)?;
        // The calendar repeats every 400 years, so a date pattern without a match
        // in one cycle never matches.
        let start = NaiveDate::from_ymd_opt(2000, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0));
        let end = NaiveDate::from_ymd_opt(2399, 12, 31);
        if let (Some(start), Some(end)) = (start, end)
            && fields.next_match(start, end).is_none()
        {
            return Err(invalid(
                "never fires (no date matches its day-of-month, month and day-of-week fields)".to_string(),
            ));
        }
        Ok(CronSchedule {
            expr: expr.trim().to_string(),
            fields,
            tz,
            policy,
        })
    }

    /// The expression as written (trimmed).
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The zone the expression is evaluated in.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The DST policy (used only when the schedule does not
    /// [follow real time](Self::follows_real_time)).
    pub fn policy(&self) -> DstPolicy {
        self.policy
    }

    /// Whether the hour field is `*` (matches every hour: also `*/1`, `0-23`):
    /// such a schedule follows real time through DST changes (fires at both
    /// occurrences of a repeated time, not at all in a gap) whatever its policy.
    pub fn follows_real_time(&self) -> bool {
        self.fields.every_hour()
    }

    /// The first fire strictly after `after`, if there is one (within 400 years).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let horizon = after
            .checked_add_signed(Duration::days(HORIZON_DAYS))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let window = Duration::seconds(WINDOW_SECS);
        let mut t = after;
        for _ in 0..MAX_WINDOWS {
            if t >= horizon {
                return None;
            }
            // The last window before the end of chrono's range ends there:
            // a fire within it must still be found (it was not, from any
            // instant less than a window before the end).
            let w_end = t.checked_add_signed(window).unwrap_or(DateTime::<Utc>::MAX_UTC);
            let (o_start, o_end) = (self.offset_secs(t), self.offset_secs(w_end));
            let (lo, hi) = (o_start.min(o_end), o_start.max(o_end));
            // Every instant u of (t, w_end] has its local time (and a shifted
            // instant its gap time) in [t + lo, w_end + hi].
            let l_start = shift_naive(t.naive_utc(), lo)?.with_nanosecond(0)?;
            let l_end = shift_naive(w_end.naive_utc(), hi)?;
            let last_day = shift_naive(horizon.naive_utc(), hi)?.date();
            let mut local = self.fields.next_match(l_start, last_day)?;
            if local > l_end {
                // Nothing in this window: jump to just before the next matching local time.
                t = w_end.max(self.jump_target(local, o_end)?);
                continue;
            }
            let mut best: Option<DateTime<Utc>> = None;
            loop {
                for u in self.instants(local).into_iter().flatten() {
                    if u > t && u <= w_end && best.is_none_or(|b| u < b) {
                        best = Some(u);
                    }
                }
                local = match shift_naive(local, 1).and_then(|from| self.fields.next_match(from, last_day)) {
                    Some(next) if next <= l_end => next,
                    _ => break,
                };
                // A later local time gives instants >= local - hi.
                if let Some(b) = best
                    && shift_naive(local, -hi).is_none_or(|earliest| earliest.and_utc() > b)
                {
                    break;
                }
            }
            if best.is_some() {
                return best;
            }
            t = w_end;
        }
        None
    }

    /// Fires in `(after, until]`, at most `limit` of the latest ones, oldest first,
    /// and the total count of fires in that period.
    ///
    /// Enumerates window by window (linear in the number of matching local
    /// times) rather than chaining [`Self::next_after`].
    pub fn fires_between(&self, after: DateTime<Utc>, until: DateTime<Utc>, limit: usize) -> (Vec<DateTime<Utc>>, u64) {
        let mut kept = std::collections::VecDeque::new();
        let mut count = 0u64;
        self.for_each_fire(after, until, |fire| {
            count += 1;
            kept.push_back(fire);
            if kept.len() > limit {
                kept.pop_front();
            }
        });
        (kept.into_iter().collect(), count)
    }

    /// Calls `each` with every fire in `(after, until]`, in increasing order.
    /// The same windows as [`Self::next_after`], but each is enumerated fully
    /// (sorted, duplicates removed); windows are disjoint, so the whole is too.
    fn for_each_fire(&self, after: DateTime<Utc>, until: DateTime<Utc>, mut each: impl FnMut(DateTime<Utc>)) {
        let window = Duration::seconds(WINDOW_SECS);
        let mut fires = Vec::new();
        // Local times past this day cannot give instants up to `until` (offsets
        // are far below two days).
        let Some(last_day) = shift_naive(until.naive_utc(), 2 * 86_400).map(|l| l.date()) else {
            return;
        };
        let mut t = after;
        // Each turn moves `t` forward by at least one window, so this ends.
        while t < until {
            let Some(w_end) = t.checked_add_signed(window).map(|end| end.min(until)) else {
                return;
            };
            let (o_start, o_end) = (self.offset_secs(t), self.offset_secs(w_end));
            let (lo, hi) = (o_start.min(o_end), o_start.max(o_end));
            let bounds = (
                shift_naive(t.naive_utc(), lo).and_then(|l| l.with_nanosecond(0)),
                shift_naive(w_end.naive_utc(), hi),
            );
            let (Some(l_start), Some(l_end)) = bounds else {
                return;
            };
            let Some(mut local) = self.fields.next_match(l_start, last_day) else {
                return;
            };
            if local > l_end {
                t = match self.jump_target(local, o_end) {
                    Some(jump) => w_end.max(jump),
                    None => return,
                };
                continue;
            }
            fires.clear();
            loop {
                fires.extend(
                    self.instants(local)
                        .into_iter()
                        .flatten()
                        .filter(|u| *u > t && *u <= w_end),
                );
                local = match shift_naive(local, 1).and_then(|from| self.fields.next_match(from, last_day)) {
                    Some(next) if next <= l_end => next,
                    _ => break,
                };
            }
            fires.sort_unstable();
            fires.dedup();
            fires.iter().for_each(|fire| each(*fire));
            t = w_end;
        }
    }

    /// Where to continue when the next matching local time `local` is beyond the
    /// current window (`offset` is the offset at its end): three hours (more
    /// than any DST shift) and a second before the rough instant of `local`.
    fn jump_target(&self, local: NaiveDateTime, offset: i64) -> Option<DateTime<Utc>> {
        let rough = shift_naive(local, -offset)?.and_utc();
        let approx = shift_naive(local, -self.offset_secs(rough))?.and_utc();
        approx.checked_sub_signed(Duration::seconds(WINDOW_SECS + 1))
    }

    /// The UTC offset of the zone at `t`, in seconds (local minus UTC).
    fn offset_secs(&self, t: DateTime<Utc>) -> i64 {
        i64::from(self.tz.offset_from_utc_datetime(&t.naive_utc()).fix().local_minus_utc())
    }

    /// The fire instants of the matching local time `local` under the policy
    /// (earlier first).
    fn instants(&self, local: NaiveDateTime) -> [Option<DateTime<Utc>>; 2] {
        let real_time = self.follows_real_time();
        match self.tz.from_local_datetime(&local) {
            LocalResult::Single(dt) => [Some(dt.with_timezone(&Utc)), None],
            LocalResult::Ambiguous(a, b) => {
                let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                let (early, late) = (a.min(b), a.max(b));
                match (real_time, self.policy.repeat) {
                    (true, _) | (false, DstRepeat::Both) => [Some(early), Some(late)],
                    (false, DstRepeat::First) => [Some(early), None],
                    (false, DstRepeat::Last) => [Some(late), None],
                }
            }
            LocalResult::None => match (real_time, self.policy.gap) {
                (false, DstGap::Shift) => [self.gap_end(local), None],
                _ => [None, None],
            },
        }
    }

    /// The first instant after the gap containing the non-existent local time
    /// `local`: the transition, whose local time is the end of the gap. Binary
    /// search (second precision) for the first instant whose local time is past
    /// `local`, between instants three hours either side of it.
    fn gap_end(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        let local_of = |u: DateTime<Utc>| shift_naive(u.naive_utc(), self.offset_secs(u));
        let rough = local.and_utc();
        let guess = shift_naive(local, -self.offset_secs(rough))?.and_utc();
        let mut before = guess.checked_sub_signed(Duration::seconds(WINDOW_SECS))?;
        let mut after = guess.checked_add_signed(Duration::seconds(WINDOW_SECS))?;
        if local_of(before)? >= local || local_of(after)? <= local {
            return None;
        }
        // Invariant: local_of(before) < local < local_of(after).
        for _ in 0..64 {
            let gap = (after - before).num_seconds();
            if gap <= 1 {
                return Some(after);
            }
            let mid = before + Duration::seconds(gap / 2);
            if local_of(mid)? > local {
                after = mid;
            } else {
                before = mid;
            }
        }
        None
    }
}

/// `t + secs`, or `None` at the ends of chrono's range.
fn shift_naive(t: NaiveDateTime, secs: i64) -> Option<NaiveDateTime> {
    t.checked_add_signed(Duration::seconds(secs))
}

/// Parses an IANA zone name with a clear error.
pub fn parse_tz(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("unknown time zone \"{name}\" (expected an IANA name such as Europe/Berlin or UTC)"))
}
