//! The schedule preview: the next five fires of a cron expression in its
//! zone and in UTC (from PreviewSchedule), with warnings where a
//! daylight-saving change moves, repeats or skips fires.
//!
//! `GET /jobs/preview?cron=&timezone=&dst_gap=&dst_repeat=` returns the
//! preview as an HTML fragment, which the editor's script puts into
//! `#schedule-preview` as the user types; the editor and the job page render
//! the same markup on the server ([`preview_markup`]), so it works without
//! script. An invalid expression gives the API's message in a
//! `p.field-error[data-invalid]` (the script marks the cron field invalid).
//!
//! **DST warnings reuse the scheduler's own evaluation** ([`CronSchedule`]),
//! never a second cron implementation:
//! * the cron's *nominal* wall-clock times are the fires of the same
//!   expression evaluated in UTC (a zone without DST): a local time matches
//!   the expression iff it is such a fire;
//! * a fire whose local time is not nominal was moved (a gap time shifted to
//!   the end of the gap); a fire whose local time exists twice is in a
//!   repeated hour;
//! * the zone's offset changes within the next year are found with chrono-tz
//!   (a day-by-day scan, then a binary search to the second), and the
//!   nominal times inside each gap or repeated period are counted, so a
//!   02:30 daily job in Europe/Berlin is warned about on the spring-forward
//!   day although that fire is not among the next five.

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use maud::{Markup, html};
use worker_proto::v1 as pb;
use worker_proto::v1::controller_service_server::ControllerService;

use crate::http::HttpState;
use crate::scheduler::cron::{CronSchedule, DstPolicy, parse_tz};
use crate::web::Caller;
use crate::web::form::Query;

/// Fires shown.
pub const FIRES: u32 = 5;
/// How far ahead DST changes are looked for.
const LOOKAHEAD_DAYS: i64 = 366;

/// A schedule as the editor holds it (text as typed).
#[derive(Debug, Clone, Default)]
pub struct ScheduleInput {
    /// The cron expression ("" = no schedule).
    pub cron: String,
    /// IANA zone ("" = UTC).
    pub timezone: String,
    /// `shift` | `skip` | "" (default).
    pub dst_gap: String,
    /// `first` | `last` | `both` | "" (default).
    pub dst_repeat: String,
}

/// `GET /jobs/preview`: the fragment.
pub async fn fragment(State(state): State<HttpState>, caller: Caller, query: Query) -> Response {
    let input = ScheduleInput {
        cron: query.text("cron"),
        timezone: query.text("timezone"),
        dst_gap: query.text("dst_gap"),
        dst_repeat: query.text("dst_repeat"),
    };
    let (markup, _) = preview_markup(&state, &caller, &input).await;
    Html(markup.into_string()).into_response()
}

/// The preview of `input`, and whether the expression is valid (or empty).
pub async fn preview_markup(state: &HttpState, caller: &Caller, input: &ScheduleInput) -> (Markup, bool) {
    if input.cron.is_empty() {
        return (html! { p.muted { "No schedule (run manually or by API)." } }, true);
    }
    let answer = async {
        let api = state.web.api()?;
        let request = caller.request(
            "ControllerService/PreviewSchedule",
            pb::PreviewScheduleRequest {
                cron: input.cron.clone(),
                timezone: input.timezone.clone(),
                dst_gap: input.dst_gap.clone(),
                dst_repeat: input.dst_repeat.clone(),
                count: FIRES,
                ..Default::default()
            },
        )?;
        Ok::<_, crate::web::WebError>(api.preview_schedule(request).await?.into_inner())
    }
    .await;
    match answer {
        Err(e) => (html! { p.field-error data-invalid role="alert" { (e.message) } }, false),
        Ok(preview) => {
            // The API accepted it, so the scheduler's parser does too.
            let schedule = schedule_of(input);
            (render(&preview, schedule.as_ref(), Utc::now()), true)
        }
    }
}

/// The scheduler's schedule for `input` (as PreviewSchedule builds it).
pub fn schedule_of(input: &ScheduleInput) -> Option<CronSchedule> {
    let tz = if input.timezone.is_empty() {
        Tz::UTC
    } else {
        parse_tz(&input.timezone).ok()?
    };
    let mut policy = DstPolicy::default();
    if !input.dst_gap.is_empty() {
        policy.gap = input.dst_gap.parse().ok()?;
    }
    if !input.dst_repeat.is_empty() {
        policy.repeat = input.dst_repeat.parse().ok()?;
    }
    CronSchedule::with_policy(&input.cron, tz, policy).ok()
}

fn render(preview: &pb::PreviewScheduleResponse, schedule: Option<&CronSchedule>, now: DateTime<Utc>) -> Markup {
    let notes = schedule.map(|s| dst_notes(s, now, now + Duration::days(LOOKAHEAD_DAYS)));
    html! {
        p.muted { "Next " (preview.fires.len()) " fires, in " (preview.timezone) " and in UTC:" }
        ol #next-fires {
            @for fire in &preview.fires {
                @let note = schedule.zip(DateTime::parse_from_rfc3339(&fire.utc).ok()).and_then(|(s, t)| fire_note(s, t.with_timezone(&Utc)));
                li {
                    span.mono { (fire.local.replace('T', " ")) } " · "
                    span.mono.muted { (fire.utc.replace('T', " ")) }
                    @if let Some(note) = note {
                        " " span.warn { "⚠ " (note) }
                    }
                }
            }
        }
        @if let Some(notes) = notes.filter(|n| !n.is_empty()) {
            ul.dst-notes aria-label="Daylight-saving changes in the next year" {
                @for note in notes { li.warn { "⚠ " (note) } }
            }
        }
    }
}

/// The expression's nominal wall-clock matcher: the same expression in UTC.
fn nominal(schedule: &CronSchedule) -> Option<CronSchedule> {
    CronSchedule::parse(schedule.expr(), Tz::UTC).ok()
}

/// Whether the wall-clock time `local` matches the expression.
fn is_nominal(nominal: &CronSchedule, local: NaiveDateTime) -> bool {
    nominal.next_after(local.and_utc() - Duration::seconds(1)) == Some(local.and_utc())
}

fn offset_secs(tz: Tz, t: DateTime<Utc>) -> i64 {
    i64::from(tz.offset_from_utc_datetime(&t.naive_utc()).fix().local_minus_utc())
}

fn hm(t: NaiveDateTime) -> String {
    t.format("%H:%M").to_string()
}

/// A warning for one fire at `fire`, if a DST change concerns it: moved out
/// of a gap, or at a local time that occurs twice that day.
pub fn fire_note(schedule: &CronSchedule, fire: DateTime<Utc>) -> Option<String> {
    let tz = schedule.tz();
    let local = fire.with_timezone(&tz).naive_local();
    let nominal = nominal(schedule)?;
    if !is_nominal(&nominal, local) {
        return Some(format!(
            "moved by the DST change: the scheduled local time does not exist on {}, so it fires at {} instead",
            local.format("%Y-%m-%d"),
            hm(local)
        ));
    }
    if let LocalResult::Ambiguous(a, b) = tz.from_local_datetime(&local) {
        let first = a.with_timezone(&Utc).min(b.with_timezone(&Utc));
        let which = if fire == first { "first" } else { "second" };
        return Some(format!(
            "{} occurs twice on {} (DST ends); this is its {which} occurrence",
            hm(local),
            local.format("%Y-%m-%d")
        ));
    }
    None
}

/// The zone's offset changes in `(from, until]`: (instant, offset before,
/// offset after), in seconds.
pub fn transitions(tz: Tz, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<(DateTime<Utc>, i64, i64)> {
    let mut out = Vec::new();
    // Whole seconds, so that the search below ends on the transition itself.
    let mut t = from.with_nanosecond(0).unwrap_or(from);
    while t < until {
        let next = (t + Duration::days(1)).min(until);
        let (o1, o2) = (offset_secs(tz, t), offset_secs(tz, next));
        if o1 != o2 {
            let (mut lo, mut hi) = (t, next);
            while (hi - lo).num_seconds() > 1 {
                let mid = lo + Duration::seconds((hi - lo).num_seconds() / 2);
                if offset_secs(tz, mid) == o1 {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            out.push((hi, o1, offset_secs(tz, hi)));
        }
        t = next;
    }
    out
}

/// Warnings for the DST changes in `(from, until]` that move, repeat or
/// skip fires of `schedule`.
pub fn dst_notes(schedule: &CronSchedule, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<String> {
    let Some(nominal) = nominal(schedule) else {
        return Vec::new();
    };
    let tz = schedule.tz();
    let policy = schedule.policy();
    let real_time = schedule.follows_real_time();
    let mut notes = Vec::new();
    for (at, before, after) in transitions(tz, from, until) {
        let old_wall = at.naive_utc() + Duration::seconds(before);
        let new_wall = at.naive_utc() + Duration::seconds(after);
        let (start, end) = (old_wall.min(new_wall), old_wall.max(new_wall));
        // Nominal times in [start, end): fires of the UTC twin in (start - 1s, end - 1s].
        let (first, count) = nominal.fires_between(
            start.and_utc() - Duration::seconds(1),
            end.and_utc() - Duration::seconds(1),
            usize::MAX,
        );
        let Some(first) = first.first().map(|f| f.naive_utc()) else {
            continue;
        };
        let day = start.format("%Y-%m-%d");
        let times = if count == 1 {
            hm(first)
        } else {
            format!("{count} local times from {}", hm(first))
        };
        let note = if after > before {
            let jump = format!("the clock jumps from {} to {} ({tz})", hm(start), hm(end));
            if real_time {
                format!("{day}: {jump}; {times} do not occur, so nothing fires then (this schedule follows real time)")
            } else {
                match policy.gap {
                    crate::scheduler::cron::DstGap::Shift => format!(
                        "{day}: {jump}; {times} does not exist and fires once at {} instead (dst gap: shift)",
                        hm(end)
                    ),
                    crate::scheduler::cron::DstGap::Skip => {
                        format!("{day}: {jump}; {times} does not exist and is skipped (dst gap: skip)")
                    }
                }
            }
        } else {
            let back = format!("the clock goes back from {} to {} ({tz})", hm(end), hm(start));
            if real_time {
                format!("{day}: {back}; {times} occur twice and fire both times (this schedule follows real time)")
            } else {
                use crate::scheduler::cron::DstRepeat;
                let fires = match policy.repeat {
                    DstRepeat::First => "fires once, at the first occurrence (dst repeat: first)",
                    DstRepeat::Last => "fires once, at the second occurrence (dst repeat: last)",
                    DstRepeat::Both => "fires twice, at both occurrences (dst repeat: both)",
                };
                format!("{day}: {back}; {times} occurs twice and {fires}")
            }
        };
        notes.push(note);
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin(cron: &str, gap: &str, repeat: &str) -> CronSchedule {
        schedule_of(&ScheduleInput {
            cron: cron.into(),
            timezone: "Europe/Berlin".into(),
            dst_gap: gap.into(),
            dst_repeat: repeat.into(),
        })
        .expect("valid")
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn fires(s: &CronSchedule, from: &str, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = at(from);
        while out.len() < n {
            t = s.next_after(t).unwrap();
            out.push(t);
        }
        out
    }

    #[test]
    fn spring_forward_shifts_or_skips_a_berlin_0230_fire() {
        let s = berlin("30 2 * * *", "", "");
        let transitions = transitions(s.tz(), at("2027-03-01T00:00:00Z"), at("2027-04-01T00:00:00Z"));
        assert_eq!(transitions, vec![(at("2027-03-28T01:00:00Z"), 3600, 7200)]);
        let notes = dst_notes(&s, at("2027-03-01T00:00:00Z"), at("2027-04-01T00:00:00Z"));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("2027-03-28: the clock jumps from 02:00 to 03:00"),
            "{}",
            notes[0]
        );
        assert!(
            notes[0].contains("02:30 does not exist and fires once at 03:00"),
            "{}",
            notes[0]
        );

        // The fires themselves: 03-28 fires at 03:00 CEST (01:00 UTC), marked moved.
        let f = fires(&s, "2027-03-26T12:00:00Z", 3);
        assert_eq!(f[1], at("2027-03-28T01:00:00Z"));
        assert!(fire_note(&s, f[0]).is_none());
        assert!(fire_note(&s, f[1]).unwrap().starts_with("moved by the DST change"));
        assert!(fire_note(&s, f[2]).is_none());

        let skip = berlin("30 2 * * *", "skip", "");
        let notes = dst_notes(&skip, at("2027-03-01T00:00:00Z"), at("2027-04-01T00:00:00Z"));
        assert!(notes[0].contains("02:30 does not exist and is skipped"), "{}", notes[0]);
        let f = fires(&skip, "2027-03-27T12:00:00Z", 1);
        assert_eq!(f[0], at("2027-03-29T00:30:00Z"), "no fire on the 28th");
    }

    #[test]
    fn fall_back_repeats_a_berlin_0230_fire() {
        let s = berlin("30 2 * * *", "", "");
        let notes = dst_notes(&s, at("2027-10-01T00:00:00Z"), at("2027-11-01T00:00:00Z"));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("2027-10-31: the clock goes back from 03:00 to 02:00"),
            "{}",
            notes[0]
        );
        assert!(notes[0].contains("02:30 occurs twice and fires once, at the first occurrence"));
        let f = fires(&s, "2027-10-30T12:00:00Z", 2);
        assert_eq!(f[0], at("2027-10-31T00:30:00Z"), "the first 02:30 (CEST)");
        assert!(fire_note(&s, f[0]).unwrap().contains("this is its first occurrence"));
        assert!(fire_note(&s, f[1]).is_none());

        let both = berlin("30 2 * * *", "", "both");
        let f = fires(&both, "2027-10-30T12:00:00Z", 2);
        assert_eq!(f[1], at("2027-10-31T01:30:00Z"));
        assert!(fire_note(&both, f[1]).unwrap().contains("second occurrence"));
    }

    #[test]
    fn schedules_away_from_the_changes_and_utc_get_no_warning() {
        let s = berlin("0 12 * * *", "", "");
        assert!(dst_notes(&s, at("2027-01-01T00:00:00Z"), at("2028-01-01T00:00:00Z")).is_empty());
        let utc = schedule_of(&ScheduleInput {
            cron: "30 2 * * *".into(),
            ..Default::default()
        })
        .unwrap();
        assert!(dst_notes(&utc, at("2027-01-01T00:00:00Z"), at("2028-01-01T00:00:00Z")).is_empty());
        // Every 15 minutes follows real time: the gap's minutes do not occur.
        let q = berlin("*/15 * * * *", "", "");
        let notes = dst_notes(&q, at("2027-03-01T00:00:00Z"), at("2027-04-01T00:00:00Z"));
        assert!(notes[0].contains("4 local times from 02:00 do not occur"), "{notes:?}");
    }
}
