//! Tests of the cron parser and of the DST-exact evaluator.
//!
//! Transitions used (checked against chrono-tz):
//! - Europe/Berlin: 2026-03-29 01:00Z (02:00 CET -> 03:00 CEST, gap 02:00-03:00),
//!   2026-10-25 01:00Z (03:00 CEST -> 02:00 CET, repeat 02:00-03:00).
//! - America/New_York: 2026-03-08 07:00Z (gap 02:00-03:00), 2026-11-01 06:00Z
//!   (repeat 01:00-02:00).
//! - Australia/Lord_Howe (30 minutes): 2026-04-04 15:00Z (02:00 +11 -> 01:30
//!   +10:30, repeat 01:30-02:00 on 2026-04-05), 2026-10-03 15:30Z (02:00 +10:30
//!   -> 02:30 +11, gap 02:00-02:30 on 2026-10-04).
//! - America/Havana (at midnight): 2026-03-08 05:00Z (00:00 CST -> 01:00 CDT,
//!   midnight skipped), 2026-11-01 05:00Z (01:00 CDT -> 00:00 CST, midnight
//!   repeated).

use super::*;
use chrono::TimeZone;

fn tz(name: &str) -> Tz {
    parse_tz(name).unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad instant {s}: {e}"))
        .with_timezone(&Utc)
}

const ALL_POLICIES: [DstPolicy; 6] = [
    DstPolicy {
        gap: DstGap::Shift,
        repeat: DstRepeat::First,
    },
    DstPolicy {
        gap: DstGap::Shift,
        repeat: DstRepeat::Last,
    },
    DstPolicy {
        gap: DstGap::Shift,
        repeat: DstRepeat::Both,
    },
    DstPolicy {
        gap: DstGap::Skip,
        repeat: DstRepeat::First,
    },
    DstPolicy {
        gap: DstGap::Skip,
        repeat: DstRepeat::Last,
    },
    DstPolicy {
        gap: DstGap::Skip,
        repeat: DstRepeat::Both,
    },
];

/// Which policies an expectation is for.
#[derive(Clone, Copy, Debug)]
enum For {
    All,
    Gap(DstGap),
    Repeat(DstRepeat),
}

impl For {
    fn covers(self, p: DstPolicy) -> bool {
        match self {
            For::All => true,
            For::Gap(g) => p.gap == g,
            For::Repeat(r) => p.repeat == r,
        }
    }
}

use DstGap::{Shift, Skip};
use DstRepeat::{Both, First, Last};

/// (zone, expression, after, until, expected fires in (after, until] per policy).
type DstCase = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(For, &'static [&'static str])],
);

const DST_CASES: &[DstCase] = &[
    // ---- Europe/Berlin, spring forward 2026-03-29 (gap 02:00-03:00 local, transition 01:00Z).
    (
        "Europe/Berlin",
        "30 2 * * *",
        "2026-03-27T12:00:00Z",
        "2026-03-30T12:00:00Z",
        &[
            (
                For::Gap(Shift),
                &["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
            ),
            (For::Gap(Skip), &["2026-03-28T01:30:00Z", "2026-03-30T00:30:00Z"]),
        ],
    ),
    // 02:00 shifts to 03:00 CEST, which is also a regular fire: one instant.
    (
        "Europe/Berlin",
        "0 1-3 * * *",
        "2026-03-28T22:00:00Z",
        "2026-03-29T03:00:00Z",
        &[(For::All, &["2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z"])],
    ),
    // Four gap times collapse into one shifted fire.
    (
        "Europe/Berlin",
        "*/15 2 * * *",
        "2026-03-28T22:00:00Z",
        "2026-03-29T03:00:00Z",
        &[(For::Gap(Shift), &["2026-03-29T01:00:00Z"]), (For::Gap(Skip), &[])],
    ),
    // Real time: 01:45 CET, then 03:00 CEST; nothing shifted.
    (
        "Europe/Berlin",
        "*/15 * * * *",
        "2026-03-29T00:30:00Z",
        "2026-03-29T01:30:00Z",
        &[(
            For::All,
            &[
                "2026-03-29T00:45:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T01:15:00Z",
                "2026-03-29T01:30:00Z",
            ],
        )],
    ),
    // ---- Europe/Berlin, fall back 2026-10-25 (repeat 02:00-03:00: CEST 00:xxZ, CET 01:xxZ).
    (
        "Europe/Berlin",
        "30 2 * * *",
        "2026-10-23T12:00:00Z",
        "2026-10-26T12:00:00Z",
        &[
            (
                For::Repeat(First),
                &["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
            ),
            (
                For::Repeat(Last),
                &["2026-10-24T00:30:00Z", "2026-10-25T01:30:00Z", "2026-10-26T01:30:00Z"],
            ),
            (
                For::Repeat(Both),
                &[
                    "2026-10-24T00:30:00Z",
                    "2026-10-25T00:30:00Z",
                    "2026-10-25T01:30:00Z",
                    "2026-10-26T01:30:00Z",
                ],
            ),
        ],
    ),
    (
        "Europe/Berlin",
        "0 1-3 * * *",
        "2026-10-24T22:00:00Z",
        "2026-10-25T03:00:00Z",
        &[
            (
                For::Repeat(First),
                &["2026-10-24T23:00:00Z", "2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z"],
            ),
            (
                For::Repeat(Last),
                &["2026-10-24T23:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z"],
            ),
            (
                For::Repeat(Both),
                &[
                    "2026-10-24T23:00:00Z",
                    "2026-10-25T00:00:00Z",
                    "2026-10-25T01:00:00Z",
                    "2026-10-25T02:00:00Z",
                ],
            ),
        ],
    ),
    // Real time: 8 fires between 02:00 CEST and 03:00 CET whatever the policy.
    (
        "Europe/Berlin",
        "*/15 * * * *",
        "2026-10-24T23:59:59Z",
        "2026-10-25T01:59:59Z",
        &[(
            For::All,
            &[
                "2026-10-25T00:00:00Z",
                "2026-10-25T00:15:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T00:45:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T01:15:00Z",
                "2026-10-25T01:30:00Z",
                "2026-10-25T01:45:00Z",
            ],
        )],
    ),
    // ---- America/New_York, spring forward 2026-03-08 (gap 02:00-03:00, transition 07:00Z).
    (
        "America/New_York",
        "30 2 * * *",
        "2026-03-06T12:00:00Z",
        "2026-03-09T12:00:00Z",
        &[
            (
                For::Gap(Shift),
                &["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"],
            ),
            (For::Gap(Skip), &["2026-03-07T07:30:00Z", "2026-03-09T06:30:00Z"]),
        ],
    ),
    (
        "America/New_York",
        "0 1-3 * * *",
        "2026-03-08T04:00:00Z",
        "2026-03-08T09:00:00Z",
        &[(For::All, &["2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z"])],
    ),
    (
        "America/New_York",
        "*/15 * * * *",
        "2026-03-08T06:30:00Z",
        "2026-03-08T07:30:00Z",
        &[(
            For::All,
            &[
                "2026-03-08T06:45:00Z",
                "2026-03-08T07:00:00Z",
                "2026-03-08T07:15:00Z",
                "2026-03-08T07:30:00Z",
            ],
        )],
    ),
    // ---- America/New_York, fall back 2026-11-01 (repeat 01:00-02:00: EDT 05:xxZ, EST 06:xxZ).
    (
        "America/New_York",
        "30 1 * * *",
        "2026-10-30T12:00:00Z",
        "2026-11-02T12:00:00Z",
        &[
            (
                For::Repeat(First),
                &["2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"],
            ),
            (
                For::Repeat(Last),
                &["2026-10-31T05:30:00Z", "2026-11-01T06:30:00Z", "2026-11-02T06:30:00Z"],
            ),
            (
                For::Repeat(Both),
                &[
                    "2026-10-31T05:30:00Z",
                    "2026-11-01T05:30:00Z",
                    "2026-11-01T06:30:00Z",
                    "2026-11-02T06:30:00Z",
                ],
            ),
        ],
    ),
    (
        "America/New_York",
        "0 1-3 * * *",
        "2026-11-01T03:00:00Z",
        "2026-11-01T09:00:00Z",
        &[
            (
                For::Repeat(First),
                &["2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z", "2026-11-01T08:00:00Z"],
            ),
            (
                For::Repeat(Last),
                &["2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z", "2026-11-01T08:00:00Z"],
            ),
            (
                For::Repeat(Both),
                &[
                    "2026-11-01T05:00:00Z",
                    "2026-11-01T06:00:00Z",
                    "2026-11-01T07:00:00Z",
                    "2026-11-01T08:00:00Z",
                ],
            ),
        ],
    ),
    (
        "America/New_York",
        "*/15 * * * *",
        "2026-11-01T04:59:59Z",
        "2026-11-01T06:59:59Z",
        &[(
            For::All,
            &[
                "2026-11-01T05:00:00Z",
                "2026-11-01T05:15:00Z",
                "2026-11-01T05:30:00Z",
                "2026-11-01T05:45:00Z",
                "2026-11-01T06:00:00Z",
                "2026-11-01T06:15:00Z",
                "2026-11-01T06:30:00Z",
                "2026-11-01T06:45:00Z",
            ],
        )],
    ),
    // 02:30 on the fall-back day exists once (EST).
    (
        "America/New_York",
        "30 2 * * *",
        "2026-11-01T00:00:00Z",
        "2026-11-02T00:00:00Z",
        &[(For::All, &["2026-11-01T07:30:00Z"])],
    ),
    // ---- Australia/Lord_Howe, fall back 30 minutes 2026-04-05 (repeat 01:30-02:00:
    //      +11 14:30-15:00Z, +10:30 15:00-15:30Z on 2026-04-04).
    (
        "Australia/Lord_Howe",
        "45 1 * * *",
        "2026-04-03T00:00:00Z",
        "2026-04-06T00:00:00Z",
        &[
            (
                For::Repeat(First),
                &["2026-04-03T14:45:00Z", "2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"],
            ),
            (
                For::Repeat(Last),
                &["2026-04-03T14:45:00Z", "2026-04-04T15:15:00Z", "2026-04-05T15:15:00Z"],
            ),
            (
                For::Repeat(Both),
                &[
                    "2026-04-03T14:45:00Z",
                    "2026-04-04T14:45:00Z",
                    "2026-04-04T15:15:00Z",
                    "2026-04-05T15:15:00Z",
                ],
            ),
        ],
    ),
    // 01:00 and 02:00 exist once; nothing ambiguous.
    (
        "Australia/Lord_Howe",
        "0 1-3 * * *",
        "2026-04-04T12:00:00Z",
        "2026-04-04T18:00:00Z",
        &[(
            For::All,
            &["2026-04-04T14:00:00Z", "2026-04-04T15:30:00Z", "2026-04-04T16:30:00Z"],
        )],
    ),
    // Only 01:40 is repeated.
    (
        "Australia/Lord_Howe",
        "*/20 1 * * *",
        "2026-04-04T12:00:00Z",
        "2026-04-04T18:00:00Z",
        &[
            (
                For::Repeat(First),
                &["2026-04-04T14:00:00Z", "2026-04-04T14:20:00Z", "2026-04-04T14:40:00Z"],
            ),
            (
                For::Repeat(Last),
                &["2026-04-04T14:00:00Z", "2026-04-04T14:20:00Z", "2026-04-04T15:10:00Z"],
            ),
            (
                For::Repeat(Both),
                &[
                    "2026-04-04T14:00:00Z",
                    "2026-04-04T14:20:00Z",
                    "2026-04-04T14:40:00Z",
                    "2026-04-04T15:10:00Z",
                ],
            ),
        ],
    ),
    (
        "Australia/Lord_Howe",
        "*/15 * * * *",
        "2026-04-04T14:00:00Z",
        "2026-04-04T16:00:00Z",
        &[(
            For::All,
            &[
                "2026-04-04T14:15:00Z",
                "2026-04-04T14:30:00Z",
                "2026-04-04T14:45:00Z",
                "2026-04-04T15:00:00Z",
                "2026-04-04T15:15:00Z",
                "2026-04-04T15:30:00Z",
                "2026-04-04T15:45:00Z",
                "2026-04-04T16:00:00Z",
            ],
        )],
    ),
    // ---- Australia/Lord_Howe, spring forward 30 minutes 2026-10-04 (gap 02:00-02:30,
    //      transition 2026-10-03 15:30Z).
    (
        "Australia/Lord_Howe",
        "15 2 * * *",
        "2026-10-02T00:00:00Z",
        "2026-10-05T00:00:00Z",
        &[
            (
                For::Gap(Shift),
                &["2026-10-02T15:45:00Z", "2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"],
            ),
            (For::Gap(Skip), &["2026-10-02T15:45:00Z", "2026-10-04T15:15:00Z"]),
        ],
    ),
    (
        "Australia/Lord_Howe",
        "0 1-3 * * *",
        "2026-10-03T12:00:00Z",
        "2026-10-03T18:00:00Z",
        &[
            (
                For::Gap(Shift),
                &["2026-10-03T14:30:00Z", "2026-10-03T15:30:00Z", "2026-10-03T16:00:00Z"],
            ),
            (For::Gap(Skip), &["2026-10-03T14:30:00Z", "2026-10-03T16:00:00Z"]),
        ],
    ),
    (
        "Australia/Lord_Howe",
        "*/15 * * * *",
        "2026-10-03T14:45:00Z",
        "2026-10-03T16:15:00Z",
        &[(
            For::All,
            &[
                "2026-10-03T15:00:00Z",
                "2026-10-03T15:15:00Z",
                "2026-10-03T15:30:00Z",
                "2026-10-03T15:45:00Z",
                "2026-10-03T16:00:00Z",
                "2026-10-03T16:15:00Z",
            ],
        )],
    ),
    // 02:30 is the end of the gap: it exists (at the transition).
    (
        "Australia/Lord_Howe",
        "30 2 * * *",
        "2026-10-03T00:00:00Z",
        "2026-10-04T00:00:00Z",
        &[(For::All, &["2026-10-03T15:30:00Z"])],
    ),
    // ---- America/Havana, spring forward at midnight 2026-03-08 (00:00 CST -> 01:00 CDT at 05:00Z).
    (
        "America/Havana",
        "0 0 * * *",
        "2026-03-06T12:00:00Z",
        "2026-03-09T12:00:00Z",
        &[
            (
                For::Gap(Shift),
                &["2026-03-07T05:00:00Z", "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z"],
            ),
            (For::Gap(Skip), &["2026-03-07T05:00:00Z", "2026-03-09T04:00:00Z"]),
        ],
    ),
    // 2026-03-08 is a Sunday.
    (
        "America/Havana",
        "@weekly",
        "2026-03-02T00:00:00Z",
        "2026-03-16T00:00:00Z",
        &[
            (For::Gap(Shift), &["2026-03-08T05:00:00Z", "2026-03-15T04:00:00Z"]),
            (For::Gap(Skip), &["2026-03-15T04:00:00Z"]),
        ],
    ),
    (
        "America/Havana",
        "*/30 0 * * *",
        "2026-03-08T03:00:00Z",
        "2026-03-08T07:00:00Z",
        &[(For::Gap(Shift), &["2026-03-08T05:00:00Z"]), (For::Gap(Skip), &[])],
    ),
    // Real time: 23:00 CST, (00:00 skipped), 01:00 CDT, 02:00 CDT.
    (
        "America/Havana",
        "@hourly",
        "2026-03-08T03:30:00Z",
        "2026-03-08T06:30:00Z",
        &[(
            For::All,
            &["2026-03-08T04:00:00Z", "2026-03-08T05:00:00Z", "2026-03-08T06:00:00Z"],
        )],
    ),
    // ---- America/Havana, fall back at midnight 2026-11-01 (repeat 00:00-01:00: CDT 04:xxZ, CST 05:xxZ).
    (
        "America/Havana",
        "0 0 * * *",
        "2026-10-30T12:00:00Z",
        "2026-11-02T12:00:00Z",
        &[
            (
                For::Repeat(First),
                &["2026-10-31T04:00:00Z", "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z"],
            ),
            (
                For::Repeat(Last),
                &["2026-10-31T04:00:00Z", "2026-11-01T05:00:00Z", "2026-11-02T05:00:00Z"],
            ),
            (
                For::Repeat(Both),
                &[
                    "2026-10-31T04:00:00Z",
                    "2026-11-01T04:00:00Z",
                    "2026-11-01T05:00:00Z",
                    "2026-11-02T05:00:00Z",
                ],
            ),
        ],
    ),
    // 2026-11-01 is a Sunday.
    (
        "America/Havana",
        "0 0 * * SUN",
        "2026-10-26T00:00:00Z",
        "2026-11-07T00:00:00Z",
        &[
            (For::Repeat(First), &["2026-11-01T04:00:00Z"]),
            (For::Repeat(Last), &["2026-11-01T05:00:00Z"]),
            (For::Repeat(Both), &["2026-11-01T04:00:00Z", "2026-11-01T05:00:00Z"]),
        ],
    ),
    (
        "America/Havana",
        "@hourly",
        "2026-11-01T03:30:00Z",
        "2026-11-01T06:30:00Z",
        &[(
            For::All,
            &["2026-11-01T04:00:00Z", "2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z"],
        )],
    ),
];

#[test]
fn dst_fire_instants_per_policy() {
    for &(zone, expr, after, until, expectations) in DST_CASES {
        for policy in ALL_POLICIES {
            let matching: Vec<_> = expectations.iter().filter(|(f, _)| f.covers(policy)).collect();
            assert_eq!(
                matching.len(),
                1,
                "{zone} {expr}: expectations must cover {policy} exactly once"
            );
            let expected: Vec<DateTime<Utc>> = matching[0].1.iter().map(|s| at(s)).collect();
            let s = CronSchedule::with_policy(expr, tz(zone), policy).unwrap();
            let (fires, count) = s.fires_between(at(after), at(until), usize::MAX);
            assert_eq!(fires, expected, "{zone} {expr:?} {policy} in ({after}, {until}]");
            assert_eq!(count, expected.len() as u64, "{zone} {expr:?} {policy}");
        }
    }
}

/// (zone, expression, start, end, expected count in [start, end) per policy).
type CountCase = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(For, u64)],
);

const COUNT_CASES: &[CountCase] = &[
    // Every minute over whole local days: a 23-hour, a 25-hour and a normal day.
    (
        "Europe/Berlin",
        "* * * * *",
        "2026-03-27T23:00:00Z",
        "2026-03-28T23:00:00Z",
        &[(For::All, 1440)],
    ),
    (
        "Europe/Berlin",
        "* * * * *",
        "2026-03-28T23:00:00Z",
        "2026-03-29T22:00:00Z",
        &[(For::All, 1380)],
    ),
    (
        "Europe/Berlin",
        "* * * * *",
        "2026-10-24T22:00:00Z",
        "2026-10-25T23:00:00Z",
        &[(For::All, 1500)],
    ),
    (
        "America/New_York",
        "* * * * *",
        "2026-03-08T05:00:00Z",
        "2026-03-09T04:00:00Z",
        &[(For::All, 1380)],
    ),
    (
        "America/New_York",
        "* * * * *",
        "2026-11-01T04:00:00Z",
        "2026-11-02T05:00:00Z",
        &[(For::All, 1500)],
    ),
    (
        "Australia/Lord_Howe",
        "* * * * *",
        "2026-04-04T13:00:00Z",
        "2026-04-05T13:30:00Z",
        &[(For::All, 1470)],
    ),
    (
        "Australia/Lord_Howe",
        "* * * * *",
        "2026-10-03T13:30:00Z",
        "2026-10-04T13:00:00Z",
        &[(For::All, 1410)],
    ),
    (
        "America/Havana",
        "* * * * *",
        "2026-03-08T05:00:00Z",
        "2026-03-09T04:00:00Z",
        &[(For::All, 1380)],
    ),
    (
        "America/Havana",
        "* * * * *",
        "2026-11-01T04:00:00Z",
        "2026-11-02T05:00:00Z",
        &[(For::All, 1500)],
    ),
    // Every minute of one fixed hour, on the same days.
    (
        "Europe/Berlin",
        "* 2 * * *",
        "2026-03-27T23:00:00Z",
        "2026-03-28T23:00:00Z",
        &[(For::All, 60)],
    ),
    (
        "Europe/Berlin",
        "* 2 * * *",
        "2026-03-28T23:00:00Z",
        "2026-03-29T22:00:00Z",
        &[(For::Gap(Shift), 1), (For::Gap(Skip), 0)],
    ),
    (
        "Europe/Berlin",
        "* 2 * * *",
        "2026-10-24T22:00:00Z",
        "2026-10-25T23:00:00Z",
        &[
            (For::Repeat(First), 60),
            (For::Repeat(Last), 60),
            (For::Repeat(Both), 120),
        ],
    ),
    (
        "America/New_York",
        "* 2 * * *",
        "2026-03-08T05:00:00Z",
        "2026-03-09T04:00:00Z",
        &[(For::Gap(Shift), 1), (For::Gap(Skip), 0)],
    ),
    (
        "America/New_York",
        "* 1 * * *",
        "2026-11-01T04:00:00Z",
        "2026-11-02T05:00:00Z",
        &[
            (For::Repeat(First), 60),
            (For::Repeat(Last), 60),
            (For::Repeat(Both), 120),
        ],
    ),
    // 01:30-01:59 repeated.
    (
        "Australia/Lord_Howe",
        "* 1 * * *",
        "2026-04-04T13:00:00Z",
        "2026-04-05T13:30:00Z",
        &[
            (For::Repeat(First), 60),
            (For::Repeat(Last), 60),
            (For::Repeat(Both), 90),
        ],
    ),
    // 02:00-02:29 skipped; the shifted fire coincides with 02:30's.
    (
        "Australia/Lord_Howe",
        "* 2 * * *",
        "2026-10-03T13:30:00Z",
        "2026-10-04T13:00:00Z",
        &[(For::All, 30)],
    ),
    (
        "America/Havana",
        "* 0 * * *",
        "2026-03-07T05:00:00Z",
        "2026-03-09T04:00:00Z",
        &[(For::Gap(Shift), 61), (For::Gap(Skip), 60)],
    ),
    (
        "America/Havana",
        "* 0 * * *",
        "2026-11-01T04:00:00Z",
        "2026-11-02T05:00:00Z",
        &[
            (For::Repeat(First), 60),
            (For::Repeat(Last), 60),
            (For::Repeat(Both), 120),
        ],
    ),
];

#[test]
fn dst_fire_counts_per_policy() {
    let second = Duration::seconds(1);
    for &(zone, expr, start, end, expectations) in COUNT_CASES {
        for policy in ALL_POLICIES {
            let matching: Vec<_> = expectations.iter().filter(|(f, _)| f.covers(policy)).collect();
            assert_eq!(
                matching.len(),
                1,
                "{zone} {expr}: expectations must cover {policy} exactly once"
            );
            let s = CronSchedule::with_policy(expr, tz(zone), policy).unwrap();
            let (kept, count) = s.fires_between(at(start) - second, at(end) - second, 0);
            assert!(kept.is_empty());
            assert_eq!(count, matching[0].1, "{zone} {expr:?} {policy} in [{start}, {end})");
        }
    }
}

/// A slow, obviously-right evaluator (minute precision) to cross-check the
/// windowed search: every local minute in a wide range, mapped through the zone
/// and the policy; gaps shifted to the transition found by a minute-by-minute scan.
fn reference(s: &CronSchedule, after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let zone = s.tz();
    let local_of = |u: DateTime<Utc>| u.with_timezone(&zone).naive_local();
    let margin = Duration::hours(3);
    let minute = Duration::minutes(1);
    let transitions: Vec<DateTime<Utc>> = {
        let (mut u, mut out) = (after - margin, Vec::new());
        while u <= until + margin {
            if local_of(u) - local_of(u - minute) != minute {
                out.push(u);
            }
            u += minute;
        }
        out
    };
    let mut out = Vec::new();
    let mut local = local_of(after - margin).with_second(0).unwrap();
    while local <= local_of(until + margin) {
        if s.fields.matches(local) {
            let real = s.follows_real_time();
            match zone.from_local_datetime(&local) {
                LocalResult::Single(t) => out.push(t.with_timezone(&Utc)),
                LocalResult::Ambiguous(a, b) => {
                    let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                    if real || s.policy().repeat != DstRepeat::Last {
                        out.push(a.min(b));
                    }
                    if real || s.policy().repeat != DstRepeat::First {
                        out.push(a.max(b));
                    }
                }
                LocalResult::None => {
                    if !real && s.policy().gap == DstGap::Shift {
                        let t = transitions
                            .iter()
                            .find(|t| local_of(**t - minute) < local && local < local_of(**t))
                            .expect("a gap has a transition");
                        out.push(*t);
                    }
                }
            }
        }
        local += minute;
    }
    out.retain(|t| *t > after && *t <= until);
    out.sort();
    out.dedup();
    out
}

#[test]
fn windowed_search_agrees_with_brute_force_around_transitions() {
    let transitions = [
        ("Europe/Berlin", "2026-03-29T01:00:00Z"),
        ("Europe/Berlin", "2026-10-25T01:00:00Z"),
        ("America/New_York", "2026-03-08T07:00:00Z"),
        ("America/New_York", "2026-11-01T06:00:00Z"),
        ("Australia/Lord_Howe", "2026-04-04T15:00:00Z"),
        ("Australia/Lord_Howe", "2026-10-03T15:30:00Z"),
        ("America/Havana", "2026-03-08T05:00:00Z"),
        ("America/Havana", "2026-11-01T05:00:00Z"),
    ];
    let exprs = [
        "*/15 * * * *",
        "*/7 * * * *",
        "0 1-3 * * *",
        "30 2 * * *",
        "*/10 0-2 * * *",
        "45 1 * * *",
        "0 0 * * *",
        "0,30 23,0,1 * * *",
    ];
    for (zone, transition) in transitions {
        let (after, until) = (at(transition) - Duration::hours(5), at(transition) + Duration::hours(5));
        for expr in exprs {
            for policy in ALL_POLICIES {
                let s = CronSchedule::with_policy(expr, tz(zone), policy).unwrap();
                let (fires, _) = s.fires_between(after, until, usize::MAX);
                let expected = reference(&s, after, until);
                assert_eq!(fires, expected, "{zone} {expr:?} {policy}");
                // next_after from arbitrary instants (not only from fires).
                let mut from = after;
                while from < until - Duration::hours(3) {
                    let got = s.next_after(from);
                    match expected.iter().find(|t| **t > from) {
                        Some(next) => assert_eq!(got, Some(*next), "{zone} {expr:?} {policy} after {from}"),
                        None => assert!(got.is_none_or(|g| g > until), "{zone} {expr:?} {policy} after {from}"),
                    }
                    from += Duration::seconds(17 * 60 + 13);
                }
            }
        }
    }
}

#[test]
fn per_second_schedule_through_a_fall_back() {
    // Four real hours around the Berlin fall-back: 14,400 seconds, each once.
    let s = CronSchedule::parse("* * * * * *", tz("Europe/Berlin")).unwrap();
    let (after, until) = (at("2026-10-24T22:00:00Z"), at("2026-10-25T02:00:00Z"));
    let (kept, count) = s.fires_between(after, until, 2);
    assert_eq!(count, 14_400);
    assert_eq!(kept, [until - Duration::seconds(1), until]);
    // Fixed hour: 3,600 local seconds of 02:xx, each at both occurrences.
    let both = DstPolicy {
        gap: Shift,
        repeat: Both,
    };
    let s = CronSchedule::with_policy("* * 2 * * *", tz("Europe/Berlin"), both).unwrap();
    assert_eq!(s.fires_between(after, until, 0).1, 7_200);
    assert_eq!(
        s.next_after(at("2026-10-25T00:59:59Z")),
        Some(at("2026-10-25T01:00:00Z"))
    );
}

#[test]
fn next_after_from_inside_a_repeat() {
    // From the second occurrence of 02:10 (CET): the next fire of */15 is 02:15 CET.
    let berlin = tz("Europe/Berlin");
    let s = CronSchedule::parse("*/15 * * * *", berlin).unwrap();
    assert_eq!(
        s.next_after(at("2026-10-25T01:10:00Z")),
        Some(at("2026-10-25T01:15:00Z"))
    );
    // From the first occurrence of 02:40 (CEST), a `last` fire at 02:30 CET is next.
    let last = DstPolicy {
        gap: Shift,
        repeat: Last,
    };
    let s = CronSchedule::with_policy("30 2 * * *", berlin, last).unwrap();
    assert_eq!(
        s.next_after(at("2026-10-25T00:40:00Z")),
        Some(at("2026-10-25T01:30:00Z"))
    );
    assert_eq!(
        s.next_after(at("2026-10-25T01:30:00Z")),
        Some(at("2026-10-26T01:30:00Z"))
    );
    // Seconds field through a gap: the shifted fire, then the next real one.
    let s = CronSchedule::parse("*/20 * 2 * * *", berlin).unwrap();
    assert_eq!(
        s.next_after(at("2026-03-29T00:59:59Z")),
        Some(at("2026-03-29T01:00:00Z"))
    );
    assert_eq!(
        s.next_after(at("2026-03-29T01:00:00Z")),
        Some(at("2026-03-30T00:00:00Z"))
    );
}

#[test]
fn normal_days_in_other_zones() {
    let cases: &[(&str, &str, &str, &str, &[&str])] = &[
        // Weekdays at 09:00 EST = 14:00Z.
        (
            "America/New_York",
            "0 9 * * MON-FRI",
            "2026-01-10T00:00:00Z",
            "2026-01-18T00:00:00Z",
            &[
                "2026-01-12T14:00:00Z",
                "2026-01-13T14:00:00Z",
                "2026-01-14T14:00:00Z",
                "2026-01-15T14:00:00Z",
                "2026-01-16T14:00:00Z",
            ],
        ),
        // Southern hemisphere: +11 in summer, +10 after 2026-04-05.
        (
            "Australia/Sydney",
            "30 8 1 * *",
            "2025-12-01T00:00:00Z",
            "2026-05-15T00:00:00Z",
            &[
                "2025-12-31T21:30:00Z",
                "2026-01-31T21:30:00Z",
                "2026-02-28T21:30:00Z",
                "2026-03-31T21:30:00Z",
                "2026-04-30T22:30:00Z",
            ],
        ),
        // +05:30, no DST, seconds field.
        (
            "Asia/Kolkata",
            "30 15 10 * * *",
            "2026-03-01T00:00:00Z",
            "2026-03-03T00:00:00Z",
            &["2026-03-01T04:45:30Z", "2026-03-02T04:45:30Z"],
        ),
        // Summer time in Berlin (+02:00), every 6 hours.
        (
            "Europe/Berlin",
            "0 */6 * * *",
            "2026-07-01T00:00:00Z",
            "2026-07-02T00:00:00Z",
            &[
                "2026-07-01T04:00:00Z",
                "2026-07-01T10:00:00Z",
                "2026-07-01T16:00:00Z",
                "2026-07-01T22:00:00Z",
            ],
        ),
    ];
    for &(zone, expr, after, until, expected) in cases {
        let s = CronSchedule::parse(expr, tz(zone)).unwrap();
        let expected: Vec<_> = expected.iter().map(|s| at(s)).collect();
        assert_eq!(
            s.fires_between(at(after), at(until), usize::MAX).0,
            expected,
            "{zone} {expr}"
        );
    }
}

#[test]
fn seconds_field_and_zone() {
    let tz = parse_tz("Asia/Kolkata").unwrap();
    let s = CronSchedule::parse("30 15 10 * * *", tz).unwrap();
    let after = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    // 10:15:30 in Kolkata (+05:30) is 04:45:30 UTC.
    assert_eq!(
        s.next_after(after).unwrap(),
        Utc.with_ymd_and_hms(2026, 3, 1, 4, 45, 30).unwrap()
    );
}

#[test]
fn names_and_macros() {
    let utc = parse_tz("UTC").unwrap();
    assert!(CronSchedule::parse("0 9 * JAN-MAR MON-FRI", utc).is_ok());
    assert!(CronSchedule::parse("@hourly", utc).is_ok());
    let daily = CronSchedule::parse("@daily", utc).unwrap();
    let after = Utc.with_ymd_and_hms(2026, 3, 1, 5, 0, 0).unwrap();
    assert_eq!(
        daily.next_after(after).unwrap(),
        Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap()
    );
}

#[test]
fn fires_between_keeps_latest() {
    let utc = parse_tz("UTC").unwrap();
    let s = CronSchedule::parse("* * * * *", utc).unwrap();
    let a = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let (kept, count) = s.fires_between(a, a + chrono::Duration::minutes(10), 3);
    assert_eq!(count, 10);
    assert_eq!(kept.len(), 3);
    assert_eq!(kept[2], a + chrono::Duration::minutes(10));
}

fn naive(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap_or_else(|e| panic!("bad local time {s}: {e}"))
}

#[test]
fn parsing_matches() {
    // (expression, local time, matches). 2026-03-02 is a Monday, 2026-03-01 a Sunday.
    let cases: &[(&str, &str, bool)] = &[
        ("* * * * *", "2026-03-02 13:37:00", true),
        ("* * * * *", "2026-03-02 13:37:01", false),
        ("5 4 * * *", "2026-03-02 04:05:00", true),
        ("5 4 * * *", "2026-03-02 05:04:00", false),
        // Ranges, steps, lists.
        ("10-20 * * * *", "2026-03-02 00:15:00", true),
        ("10-20 * * * *", "2026-03-02 00:21:00", false),
        ("*/15 * * * *", "2026-03-02 00:45:00", true),
        ("*/15 * * * *", "2026-03-02 00:50:00", false),
        ("10-40/10 * * * *", "2026-03-02 00:30:00", true),
        ("10-40/10 * * * *", "2026-03-02 00:50:00", false),
        ("5/20 * * * *", "2026-03-02 00:45:00", true),
        ("5/20 * * * *", "2026-03-02 00:40:00", false),
        ("1,3,10-12,*/30 * * * *", "2026-03-02 00:11:00", true),
        ("1,3,10-12,*/30 * * * *", "2026-03-02 00:30:00", true),
        ("1,3,10-12,*/30 * * * *", "2026-03-02 00:02:00", false),
        // Names, any case.
        ("0 0 * jan-Mar *", "2026-02-01 00:00:00", true),
        ("0 0 * JAN-MAR *", "2026-04-01 00:00:00", false),
        ("0 0 * * mon", "2026-03-02 00:00:00", true),
        ("0 0 * * MON-FRI", "2026-03-01 00:00:00", false),
        ("0 0 * * SAT,sun", "2026-03-01 00:00:00", true),
        // Weekday 7 = Sunday; 5-7 = Fri, Sat, Sun; */2 = Sun, Tue, Thu, Sat.
        ("0 0 * * 7", "2026-03-01 00:00:00", true),
        ("0 0 * * 0", "2026-03-01 00:00:00", true),
        ("0 0 * * 5-7", "2026-03-01 00:00:00", true),
        ("0 0 * * 5-7", "2026-03-02 00:00:00", false),
        ("0 0 * * */2", "2026-03-03 00:00:00", true),
        ("0 0 * * */2", "2026-03-02 00:00:00", false),
        // Vixie day semantics: both restricted = either; one `*` = both.
        ("0 0 13 * FRI", "2026-03-13 00:00:00", true),
        ("0 0 13 * FRI", "2026-03-06 00:00:00", true),
        ("0 0 13 * FRI", "2026-03-07 00:00:00", false),
        ("0 0 */2 * MON", "2026-03-02 00:00:00", false),
        ("0 0 */2 * MON", "2026-03-09 00:00:00", true),
        ("0 0 1 * *", "2026-03-01 00:00:00", true),
        ("0 0 ? * MON", "2026-03-02 00:00:00", true),
        // Seconds field.
        ("*/20 * * * * *", "2026-03-02 00:00:40", true),
        ("*/20 * * * * *", "2026-03-02 00:00:30", false),
        // Macros, any case.
        ("@HOURLY", "2026-03-02 07:00:00", true),
        ("@hourly", "2026-03-02 07:01:00", false),
        ("@Daily", "2026-03-02 00:00:00", true),
        ("@midnight", "2026-03-02 01:00:00", false),
        ("@weekly", "2026-03-01 00:00:00", true),
        ("@weekly", "2026-03-02 00:00:00", false),
        ("@monthly", "2026-03-01 00:00:00", true),
        ("@yearly", "2026-01-01 00:00:00", true),
        ("@annually", "2026-03-01 00:00:00", false),
    ];
    let utc = tz("UTC");
    for &(expr, local, expected) in cases {
        let s = CronSchedule::parse(expr, utc).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.fields.matches(naive(local)), expected, "{expr:?} at {local}");
    }
}

#[test]
fn parsing_errors_say_what_and_where() {
    let cases: &[(&str, &str)] = &[
        (
            "61 * * * *",
            "invalid cron expression \"61 * * * *\": minute: 61 is out of range 0-59",
        ),
        (
            "* * *",
            "invalid cron expression \"* * *\": expected 5 fields (minute hour day-of-month month day-of-week) or 6 with a leading seconds field, found 3",
        ),
        ("* * * * * * *", "found 7"),
        ("", "found 0"),
        (
            "0 0 * * FUNDAY",
            "invalid cron expression \"0 0 * * FUNDAY\": day-of-week: unknown name \"FUNDAY\"",
        ),
        ("0 0 * FOO *", "month: unknown name \"FOO\""),
        ("*/0 * * * *", "minute: step must be at least 1"),
        (
            "*/1000 * * * *",
            "minute: step 1000 is larger than the field's range 0-59 (60 values)",
        ),
        (
            "0 */25 * * *",
            "hour: step 25 is larger than the field's range 0-23 (24 values)",
        ),
        (
            "0 0 * * 1/8",
            "day-of-week: step 8 is larger than the field's range 0-6 (7 values)",
        ),
        (
            "*/99999999999 * * * *",
            "minute: step 99999999999 is larger than the field's range",
        ),
        ("0 10-5 * * *", "hour: range 10-5 is backwards"),
        ("0 0 * * FRI-MON", "day-of-week: range FRI-MON is backwards"),
        ("0 24 * * *", "hour: 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month: 0 is out of range 1-31"),
        ("0 0 1 13 *", "month: 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week: 8 is out of range 0-7"),
        ("60 0 0 * * *", "second: 60 is out of range 0-59"),
        ("MON * * * *", "minute: \"MON\" is not a number"),
        ("1,,2 * * * *", "minute: empty list element"),
        ("*/x * * * *", "minute: step \"x\" is not a number"),
        ("1/ * * * *", "minute: missing step after \"/\""),
        ("1-2-3 * * * *", "minute: \"1-2-3\" is not a valid range"),
        ("5- * * * *", "minute: missing value in range"),
        ("99999999999 * * * *", "minute: 99999999999 is out of range 0-59"),
        ("@fortnightly", "unknown macro \"@fortnightly\""),
        ("@daily 5", "unknown macro"),
        ("0 0 30 2 *", "invalid cron expression \"0 0 30 2 *\": never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
    ];
    let utc = tz("UTC");
    for &(expr, expected) in cases {
        let err = CronSchedule::parse(expr, utc).expect_err(expr);
        assert!(err.contains(expected), "{expr:?}: {err:?} should contain {expected:?}");
    }
    assert!(parse_tz("Mars/Olympus").unwrap_err().contains("unknown time zone"));
}

#[test]
fn rare_and_extreme_schedules() {
    let utc = tz("UTC");
    // Leap day: the next one after 2026 is in 2028; 2100 is not a leap year.
    let s = CronSchedule::parse("0 0 29 2 *", utc).unwrap();
    assert_eq!(
        s.next_after(at("2026-03-01T00:00:00Z")),
        Some(at("2028-02-29T00:00:00Z"))
    );
    assert_eq!(
        s.next_after(at("2096-03-01T00:00:00Z")),
        Some(at("2104-02-29T00:00:00Z"))
    );
    // Both day fields restricted: the 30th of February never exists, but Mondays do.
    let s = CronSchedule::parse("0 0 30 2 MON", utc).unwrap();
    assert_eq!(
        s.next_after(at("2026-02-01T00:00:00Z")),
        Some(at("2026-02-02T00:00:00Z"))
    );
    // The end of time: no panic, no hang.
    let s = CronSchedule::parse("* * * * * *", tz("Europe/Berlin")).unwrap();
    assert_eq!(s.next_after(DateTime::<Utc>::MAX_UTC), None);
    // Less than a window (3 h) before the end of time, a fire still due is
    // found (found by the property test in tests/fuzz.rs).
    let s = CronSchedule::parse("0 4/6 1,* 8/1 0", utc).unwrap();
    let last = Utc.with_ymd_and_hms(262_142, 12, 31, 22, 0, 0).unwrap();
    assert_eq!(s.next_after(last - chrono::Duration::seconds(1)), Some(last));
    assert_eq!(s.next_after(last - chrono::Duration::hours(4)), Some(last));
    // Far future (beyond the zone's transition table): still answers.
    assert!(s.next_after(at("2300-06-01T00:00:00Z")).is_some());
    let s = CronSchedule::parse("0 12 * * *", tz("Europe/Berlin")).unwrap();
    assert!(s.next_after(at("2300-06-01T00:00:00Z")).is_some());
}

#[test]
fn policy_names_and_accessors() {
    assert_eq!(
        DstPolicy::default(),
        DstPolicy {
            gap: Shift,
            repeat: First
        }
    );
    for g in [Shift, Skip] {
        assert_eq!(g.to_string().parse::<DstGap>(), Ok(g));
    }
    for r in [First, Last, Both] {
        assert_eq!(r.to_string().parse::<DstRepeat>(), Ok(r));
    }
    assert_eq!("SKIP".parse::<DstGap>(), Ok(Skip));
    assert!(
        "later"
            .parse::<DstGap>()
            .unwrap_err()
            .contains("expected shift or skip")
    );
    assert!(
        "twice"
            .parse::<DstRepeat>()
            .unwrap_err()
            .contains("expected first, last or both")
    );

    let berlin = tz("Europe/Berlin");
    let policy = DstPolicy {
        gap: Skip,
        repeat: Both,
    };
    let s = CronSchedule::with_policy(" 30 2 * * * ", berlin, policy).unwrap();
    assert_eq!(s.expr(), "30 2 * * *");
    assert_eq!(s.tz(), berlin);
    assert_eq!(s.policy(), policy);
    assert!(!s.follows_real_time());
    assert_eq!(
        CronSchedule::parse("0 0 1 1 *", berlin).unwrap().policy(),
        DstPolicy::default()
    );
    for (expr, real) in [
        ("*/15 * * * *", true),
        ("0 */1 * * *", true),
        ("0 0-23 * * *", true),
        ("@hourly", true),
        ("0 */2 * * *", false),
        ("@daily", false),
    ] {
        assert_eq!(
            CronSchedule::parse(expr, berlin).unwrap().follows_real_time(),
            real,
            "{expr}"
        );
    }
    assert_eq!(
        format!("{s:?}"),
        "CronSchedule(\"30 2 * * *\" in Europe/Berlin, dst gap=skip repeat=both)"
    );
}

#[test]
fn long_or_hostile_expressions_are_refused_without_being_echoed_whole() {
    let long = format!("{}1 * * * *", "1,".repeat(10_240));
    let err = CronSchedule::parse(&long, Tz::UTC).unwrap_err();
    assert!(
        err.contains(&format!("{} bytes long (at most 1024)", long.len())),
        "{err}"
    );
    assert!(err.len() < 400, "{}", err.len());
    let err = CronSchedule::parse("0 0 \u{1b}[2J * *", Tz::UTC).unwrap_err();
    assert!(!err.contains('\u{1b}'), "{err}");
}
