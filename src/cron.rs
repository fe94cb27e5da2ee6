//! Cron expressions and their occurrences in a time zone: pure arithmetic over croner, with no
//! tasks, clock or database, so settings validation, the scheduler, freshness thresholds and
//! `status` all work out a next run the same way.
//!
//! Occurrences are worked out in the configured zone the way cron does: a daily `0 0 3 * * *`
//! is 03:00 local time on every day, 23- and 25-hour days included. A fixed time that falls in
//! the hour skipped in spring runs at the first second after the gap, a fixed time in the hour
//! repeated in autumn runs once, at its first occurrence; `*`/step fields run at each wall-clock
//! match (OCPS, as Vixie cron).

use std::time::Duration;

use chrono::{DateTime, Offset as _, SubsecRound as _, TimeZone as _, Utc};
use chrono_tz::Tz;

/// A tick that wakes later than this after its occurrence (a suspended machine, a stepped
/// clock) runs once for the latest occurrence it overslept, not once for each.
const CATCH_UP_WINDOW: Duration = Duration::from_secs(1);

/// Parses like the scheduler does (seconds required), so validation and scheduling agree.
pub fn parse_cron(expression: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expression)
}

/// The first occurrence of `cron`, read in `zone`, strictly after `after` (whole seconds:
/// `after`'s fraction is dropped first, so an occurrence never repeats the one just run).
pub fn next_occurrence(
    cron: &croner::Cron,
    zone: Tz,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let after = after.trunc_subsecs(0);
    let by_zone = first_after(after, |from| find_next(cron, &from.with_timezone(&zone)));
    if cron.determine_job_type() == croner::JobType::FixedTime {
        return by_zone;
    }
    // In the hour repeated in autumn croner finds only the first of each pair of equal wall
    // times, so `0 */15 * * * *` would pause for 75 minutes. Looking in the UTC offset now in
    // force finds the second pass through that hour; it counts if the zone's wall clock really
    // reads a matching time then.
    let offset = zone.offset_from_utc_datetime(&after.naive_utc()).fix();
    let by_offset = find_next(cron, &after.with_timezone(&offset)).filter(|at| {
        cron.is_time_matching(&at.with_timezone(&zone))
            .unwrap_or(false)
    });
    match (by_zone, by_offset) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The first answer of `find` later than `after`. croner reads an ambiguous wall time as its
/// first instant, so from inside the hour repeated in autumn it can answer a time before
/// `after`; searching again from an hour later steps over the repeat.
fn first_after(
    after: DateTime<Utc>,
    find: impl Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let mut from = after;
    for _ in 0..3 {
        let found = find(from)?;
        if found > after {
            return Some(found);
        }
        from += chrono::Duration::hours(1);
    }
    None
}

fn find_next<Z: chrono::TimeZone>(
    cron: &croner::Cron,
    after: &DateTime<Z>,
) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(after, false)
        .ok()
        .map(|at| at.with_timezone(&Utc).trunc_subsecs(0))
}

/// The occurrence to sleep for after running `ran` when the clock now reads `now`: the next
/// one after `ran`, or, when the tick woke so late that later occurrences already passed, the
/// next one after `now` less the catch-up window.
pub fn following_occurrence(
    cron: &croner::Cron,
    zone: Tz,
    ran: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let catch_up = chrono::Duration::from_std(CATCH_UP_WINDOW).unwrap_or_default();
    next_occurrence(cron, zone, ran.max(now - catch_up))
}

/// How far ahead [`longest_gap`] looks: a week and a day, so every weekday (and a weekend)
/// has had its occurrences.
const GAP_HORIZON: Duration = Duration::from_secs(8 * 86_400);
/// At most this many occurrences are looked at (an every-second schedule has 691,200 in the
/// horizon, and all its gaps are the same).
const GAP_OCCURRENCES: usize = 10_000;

/// The schedule's interval: the longest gap between consecutive occurrences of `cron` (read in
/// `zone`) in the [`GAP_HORIZON`] after `from`, at most [`GAP_OCCURRENCES`] of them, so a
/// schedule that runs hourly on weekdays only has an interval of a weekend. A schedule with
/// fewer than two occurrences in the horizon (monthly, yearly) gets the gap between its next
/// two; `None` when it has no two occurrences at all.
pub fn longest_gap(cron: &croner::Cron, zone: Tz, from: DateTime<Utc>) -> Option<Duration> {
    let mut previous = next_occurrence(cron, zone, from)?;
    let end = previous + chrono::Duration::from_std(GAP_HORIZON).ok()?;
    let mut longest = Duration::ZERO;
    for _ in 0..GAP_OCCURRENCES {
        let Some(next) = next_occurrence(cron, zone, previous) else {
            break;
        };
        longest = longest.max((next - previous).to_std().unwrap_or_default());
        if next > end {
            break;
        }
        previous = next;
    }
    (!longest.is_zero()).then_some(longest)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{NaiveDate, TimeZone as _};
    use chrono_tz::Europe::Amsterdam;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// An unambiguous Amsterdam wall time.
    fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32, se: u32) -> DateTime<Utc> {
        Amsterdam
            .with_ymd_and_hms(y, mo, d, h, mi, se)
            .single()
            .unwrap()
            .to_utc()
    }

    /// The occurrences the sleeper runs between `from` and `to`, each tick waking `late` after
    /// its occurrence.
    fn run_ticks(
        expression: &str,
        zone: Tz,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        late: chrono::Duration,
    ) -> Vec<DateTime<Utc>> {
        let cron = parse_cron(expression).unwrap();
        let mut ran = Vec::new();
        let mut next = next_occurrence(&cron, zone, from);
        while let Some(occurrence) = next.filter(|at| *at <= to) {
            ran.push(occurrence);
            next = following_occurrence(&cron, zone, occurrence, occurrence + late);
        }
        ran
    }

    /// Runs per local calendar day.
    fn per_local_day(ran: &[DateTime<Utc>], zone: Tz) -> BTreeMap<NaiveDate, Vec<String>> {
        let mut days: BTreeMap<NaiveDate, Vec<String>> = BTreeMap::new();
        for at in ran {
            let local = at.with_timezone(&zone);
            days.entry(local.date_naive())
                .or_default()
                .push(local.format("%H:%M:%S %Z").to_string());
        }
        days
    }

    fn local_days(from: (i32, u32, u32), count: u64) -> Vec<NaiveDate> {
        let first = NaiveDate::from_ymd_opt(from.0, from.1, from.2).unwrap();
        first.iter_days().take(count as usize).collect()
    }

    #[test]
    fn a_daily_job_runs_once_per_local_day_across_the_spring_change() {
        // Europe/Amsterdam, 29 March 2026: 02:00 CET becomes 03:00 CEST.
        let late = chrono::Duration::milliseconds(250);
        let from = local(2026, 3, 26, 0, 0, 0) - chrono::Duration::seconds(1);
        let to = local(2026, 4, 1, 23, 59, 59);
        let three = per_local_day(
            &run_ticks("0 0 3 * * *", Amsterdam, from, to, late),
            Amsterdam,
        );
        assert_eq!(
            three.keys().copied().collect::<Vec<_>>(),
            local_days((2026, 3, 26), 7)
        );
        for (day, runs) in &three {
            let zone = if *day < NaiveDate::from_ymd_opt(2026, 3, 29).unwrap() {
                "CET"
            } else {
                "CEST"
            };
            assert_eq!(runs, &[format!("03:00:00 {zone}")], "{day}");
        }
        // 02:30 does not exist that day: it runs once, at the first second after the gap.
        let half_past_two = per_local_day(
            &run_ticks("0 30 2 * * *", Amsterdam, from, to, late),
            Amsterdam,
        );
        assert_eq!(half_past_two.len(), 7);
        assert!(half_past_two.values().all(|runs| runs.len() == 1));
        assert_eq!(
            half_past_two[&NaiveDate::from_ymd_opt(2026, 3, 29).unwrap()],
            ["03:00:00 CEST"]
        );
        assert_eq!(
            half_past_two[&NaiveDate::from_ymd_opt(2026, 3, 30).unwrap()],
            ["02:30:00 CEST"]
        );
    }

    #[test]
    fn a_daily_job_runs_once_per_local_day_across_the_autumn_change() {
        // Europe/Amsterdam, 25 October 2026: 03:00 CEST becomes 02:00 CET; 02:xx happens twice.
        let late = chrono::Duration::milliseconds(250);
        let from = local(2026, 10, 22, 0, 0, 0) - chrono::Duration::seconds(1);
        let to = local(2026, 10, 28, 23, 59, 59);
        for (expression, expected) in [
            ("0 0 3 * * *", "03:00:00"),
            ("0 30 2 * * *", "02:30:00"),
            ("0 0 0 * * *", "00:00:00"),
        ] {
            let days = per_local_day(&run_ticks(expression, Amsterdam, from, to, late), Amsterdam);
            assert_eq!(
                days.keys().copied().collect::<Vec<_>>(),
                local_days((2026, 10, 22), 7)
            );
            for (day, runs) in &days {
                assert_eq!(runs.len(), 1, "{expression} on {day}: {runs:?}");
                assert!(
                    runs[0].starts_with(expected),
                    "{expression} on {day}: {runs:?}"
                );
            }
        }
        // In the repeated hour, the one 02:30 that runs is the first (summer time).
        let days = per_local_day(
            &run_ticks("0 30 2 * * *", Amsterdam, from, to, late),
            Amsterdam,
        );
        assert_eq!(
            days[&NaiveDate::from_ymd_opt(2026, 10, 25).unwrap()],
            ["02:30:00 CEST"]
        );
    }

    #[test]
    fn hourly_jobs_follow_real_hours_through_both_changes() {
        let late = chrono::Duration::milliseconds(10);
        let spring = run_ticks(
            "0 0 * * * *",
            Amsterdam,
            local(2026, 3, 29, 0, 0, 0) - chrono::Duration::seconds(1),
            local(2026, 3, 29, 23, 59, 59),
            late,
        );
        assert_eq!(spring.len(), 23, "a 23-hour day");
        let autumn = run_ticks(
            "0 0 * * * *",
            Amsterdam,
            local(2026, 10, 25, 0, 0, 0) - chrono::Duration::seconds(1),
            local(2026, 10, 25, 23, 59, 59),
            late,
        );
        assert_eq!(autumn.len(), 25, "a 25-hour day");
        for pair in spring.windows(2).chain(autumn.windows(2)) {
            assert_eq!(pair[1] - pair[0], chrono::Duration::hours(1));
        }
        // Every quarter hour: never a pause longer than 15 minutes, 4 × 25 runs on the long day.
        let quarters = run_ticks(
            "0 */15 * * * *",
            Amsterdam,
            local(2026, 10, 25, 0, 0, 0) - chrono::Duration::seconds(1),
            local(2026, 10, 25, 23, 59, 59),
            late,
        );
        assert_eq!(quarters.len(), 100);
        assert!(
            quarters
                .windows(2)
                .all(|pair| pair[1] - pair[0] == chrono::Duration::minutes(15))
        );
    }

    #[test]
    fn utc_schedules_are_unchanged_and_local_ones_move_with_the_zone() {
        let cron = parse_cron("0 0 3 * * *").unwrap();
        let winter = at("2026-12-03T10:00:00Z");
        assert_eq!(
            next_occurrence(&cron, Tz::UTC, winter),
            Some(at("2026-12-04T03:00:00Z"))
        );
        assert_eq!(
            next_occurrence(&cron, Amsterdam, winter),
            Some(at("2026-12-04T02:00:00Z"))
        );
        let summer = at("2026-07-01T10:00:00Z");
        assert_eq!(
            next_occurrence(&cron, Amsterdam, summer),
            Some(at("2026-07-02T01:00:00Z"))
        );
    }

    #[test]
    fn a_tick_never_repeats_and_an_overslept_one_runs_once() {
        let every_second = parse_cron("* * * * * *").unwrap();
        let ran = at("2026-12-03T10:00:05Z");
        // Woke a little late: the very next second, not the one just run.
        assert_eq!(
            following_occurrence(
                &every_second,
                Tz::UTC,
                ran,
                ran + chrono::Duration::milliseconds(600)
            ),
            Some(at("2026-12-03T10:00:06Z"))
        );
        // The clock jumped an hour (a suspended VM): the 10:01 tick ran late, at 11:00:30, and
        // the next is 11:01, not the 59 overslept in between.
        let every_minute = parse_cron("0 * * * * *").unwrap();
        let ran = at("2026-12-03T10:01:00Z");
        let woke = at("2026-12-03T11:00:30Z");
        assert_eq!(
            following_occurrence(&every_minute, Tz::UTC, ran, woke),
            Some(at("2026-12-03T11:01:00Z"))
        );
        // A fraction after an occurrence is still after it.
        assert_eq!(
            next_occurrence(&every_minute, Tz::UTC, at("2026-12-03T10:00:00.400Z")),
            Some(at("2026-12-03T10:01:00Z"))
        );
    }

    #[test]
    fn started_inside_the_repeated_hour_nothing_runs_in_the_past() {
        // 02:10 CET, the second pass through 02:xx on 25 October 2026.
        let after = at("2026-10-25T01:10:00Z");
        let half_past_two = parse_cron("0 30 2 * * *").unwrap();
        // 02:30 CEST has passed; the fixed time already ran this local day.
        assert_eq!(
            next_occurrence(&half_past_two, Amsterdam, after),
            Some(local(2026, 10, 26, 2, 30, 0))
        );
        let quarters = parse_cron("0 */15 * * * *").unwrap();
        assert_eq!(
            next_occurrence(&quarters, Amsterdam, after),
            Some(at("2026-10-25T01:15:00Z"))
        );
    }

    #[test]
    fn six_field_expressions_parse_and_garbage_does_not() {
        assert!(parse_cron("*/10 * * * * *").is_ok());
        assert!(parse_cron("0 */15 * * * *").is_ok());
        assert!(parse_cron("61 * * * * *").is_err());
        assert!(parse_cron("every tuesday").is_err());
    }

    #[test]
    fn the_interval_is_the_longest_gap_between_occurrences() {
        let gap = |expression: &str, zone: Tz, from: &str| {
            longest_gap(&parse_cron(expression).unwrap(), zone, at(from)).map(|d| d.as_secs())
        };
        let utc = |expression: &str| gap(expression, Tz::UTC, "2026-12-03T10:00:07Z");
        assert_eq!(utc("0 */15 * * * *"), Some(15 * 60));
        assert_eq!(utc("0 17 3 * * *"), Some(86_400));
        assert_eq!(utc("* * * * * *"), Some(1));
        // Irregular: hourly from 9 to 17 on weekdays waits from Friday 17:00 to Monday 09:00.
        assert_eq!(utc("0 0 9-17 * * MON-FRI"), Some(64 * 3600));
        assert_eq!(utc("0 0 9,12 * * *"), Some(21 * 3600));
        // Fewer than two occurrences in the horizon: the gap between the next two.
        assert_eq!(utc("0 0 0 1 1 *"), Some(365 * 86_400));
        assert_eq!(utc("0 0 0 1 * *"), Some(31 * 86_400));
        // A local daily job across the autumn change: its longest day has 25 hours.
        assert_eq!(
            gap("0 0 3 * * *", Amsterdam, "2026-10-22T12:00:00Z"),
            Some(25 * 3600)
        );
    }
}
