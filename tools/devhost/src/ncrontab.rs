//! Six-field NCRONTAB schedules (`sec min hour day month day-of-week`), always UTC.
//!
//! Written here rather than taken from a cron crate because the Functions host's dialect differs
//! from Unix cron in ways that matter: seconds come first, and a date must match *both* the
//! day-of-month and the day-of-week fields (NCrontab ANDs them; Vixie cron ORs them).

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};
use std::fmt;

/// A parsed schedule; each field is the set of allowed values.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    seconds: Vec<bool>,
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    text: String,
}

/// Why a schedule was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad NCRONTAB schedule {schedule:?}: {reason}")]
pub struct ScheduleError {
    pub schedule: String,
    pub reason: String,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Schedule {
    /// Parses six whitespace-separated fields.
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let fail = |reason: String| ScheduleError {
            schedule: text.to_string(),
            reason,
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 6 {
            return Err(fail(format!(
                "expected 6 fields (seconds first), found {}",
                fields.len()
            )));
        }
        Ok(Schedule {
            seconds: parse_field(fields[0], 0, 59, &[]).map_err(fail)?,
            minutes: parse_field(fields[1], 0, 59, &[]).map_err(fail)?,
            hours: parse_field(fields[2], 0, 23, &[]).map_err(fail)?,
            days: parse_field(fields[3], 1, 31, &[]).map_err(fail)?,
            months: parse_field(fields[4], 1, 12, &MONTHS).map_err(fail)?,
            weekdays: parse_weekdays(fields[5]).map_err(fail)?,
            text: text.to_string(),
        })
    }

    /// The first occurrence strictly after `after`, to the second.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = after.with_nanosecond(0)? + Duration::seconds(1);
        let mut date = start.date_naive();
        let mut from = start.time();
        // Nine years covers the longest gap between matching dates (29 February around 2100).
        for _ in 0..(366 * 9) {
            if self.date_matches(date) {
                if let Some(time) = self.first_time_from(from) {
                    return Some(Utc.from_utc_datetime(&date.and_time(time)));
                }
            }
            date = date.succ_opt()?;
            from = NaiveTime::MIN;
        }
        None
    }

    fn date_matches(&self, date: NaiveDate) -> bool {
        self.days[date.day() as usize]
            && self.months[date.month() as usize]
            && self.weekdays[date.weekday().num_days_from_sunday() as usize]
    }

    /// The first allowed time of day at or after `from`.
    fn first_time_from(&self, from: NaiveTime) -> Option<NaiveTime> {
        for h in from.hour()..24 {
            if !self.hours[h as usize] {
                continue;
            }
            let m_start = if h == from.hour() { from.minute() } else { 0 };
            for m in m_start..60 {
                if !self.minutes[m as usize] {
                    continue;
                }
                let s_start = if h == from.hour() && m == from.minute() {
                    from.second()
                } else {
                    0
                };
                if let Some(s) = (s_start..60).find(|s| self.seconds[*s as usize]) {
                    return NaiveTime::from_hms_opt(h, m, s);
                }
            }
        }
        None
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.text)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Day of week accepts 0-6 (Sunday = 0), 7 as Sunday too, and SUN..SAT.
fn parse_weekdays(field: &str) -> Result<Vec<bool>, String> {
    let mut set = parse_field(field, 0, 7, &WEEKDAYS)?;
    if set[7] {
        set[0] = true;
    }
    set.truncate(7);
    Ok(set)
}

/// One field: `*`, `n`, `a-b`, with an optional `/step`, comma-separated. Names are 0- or
/// 1-based like the field they belong to.
fn parse_field(field: &str, min: u32, max: u32, names: &[&str]) -> Result<Vec<bool>, String> {
    let mut set = vec![false; max as usize + 1];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("bad step {s:?} in {field:?}"))?;
                if step == 0 {
                    return Err(format!("step 0 in {field:?}"));
                }
                (r, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, min, max, names)?, value(b, min, max, names)?)
        } else {
            let v = value(range, min, max, names)?;
            // `5/15` means from 5 to the end in steps of 15.
            (v, if item.contains('/') { max } else { v })
        };
        if lo > hi {
            return Err(format!("range {range:?} runs backwards"));
        }
        for v in (lo..=hi).step_by(step as usize) {
            set[v as usize] = true;
        }
    }
    Ok(set)
}

fn value(text: &str, min: u32, max: u32, names: &[&str]) -> Result<u32, String> {
    let upper = text.to_ascii_uppercase();
    let parsed = match names.iter().position(|n| *n == upper) {
        // Month names start at 1, weekday names at 0: `min` is exactly that offset.
        Some(i) => i as u32 + min,
        None => text
            .parse()
            .map_err(|_| format!("bad value {text:?} (allowed {min}-{max})"))?,
    };
    if parsed < min || parsed > max {
        return Err(format!("value {parsed} out of range {min}-{max}"));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn next(schedule: &str, after: &str) -> String {
        Schedule::parse(schedule)
            .unwrap()
            .next_after(at(after))
            .unwrap()
            .to_rfc3339()
    }

    #[test]
    fn seconds_come_first() {
        // The project's maintenance schedule: minute 7 of every hour.
        assert_eq!(
            next("0 7 * * * *", "2026-11-26T09:07:00Z"),
            "2026-11-26T10:07:00+00:00"
        );
        assert_eq!(
            next("0 7 * * * *", "2026-11-26T09:06:59.900Z"),
            "2026-11-26T09:07:00+00:00"
        );
        assert_eq!(
            next("*/10 * * * * *", "2026-11-26T09:07:05Z"),
            "2026-11-26T09:07:10+00:00"
        );
    }

    #[test]
    fn steps_ranges_and_lists() {
        assert_eq!(
            next("0 */5 * * * *", "2026-11-26T09:58:00Z"),
            "2026-11-26T10:00:00+00:00"
        );
        assert_eq!(
            next("30 0 9-17/4 * * *", "2026-11-26T13:00:30Z"),
            "2026-11-26T17:00:30+00:00"
        );
        assert_eq!(
            next("0 0 1,13 * * *", "2026-11-26T02:00:00Z"),
            "2026-11-26T13:00:00+00:00"
        );
        assert_eq!(
            next("5/20 * * * * *", "2026-11-26T00:00:26Z"),
            "2026-11-26T00:00:45+00:00"
        );
    }

    #[test]
    fn weekday_and_month_names_and_and_semantics() {
        // 2026-11-26 is a Thursday.
        assert_eq!(
            next("0 30 9 * * MON-FRI", "2026-11-27T10:00:00Z"),
            "2026-11-30T09:30:00+00:00"
        );
        assert_eq!(
            next("0 0 0 1 JAN *", "2026-11-26T00:00:00Z"),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 12 * * 0", "2026-11-26T00:00:00Z"),
            "2026-11-29T12:00:00+00:00"
        );
        assert_eq!(
            next("0 0 12 * * 7", "2026-11-26T00:00:00Z"),
            "2026-11-29T12:00:00+00:00"
        );
        // Day 13 that is also a Friday (AND, not OR): 2027-08-13.
        assert_eq!(
            next("0 0 0 13 * FRI", "2026-11-26T00:00:00Z"),
            "2027-08-13T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 0 29 2 *", "2026-11-26T00:00:00Z"),
            "2028-02-29T00:00:00+00:00"
        );
    }

    #[test]
    fn refuses_bad_schedules() {
        for bad in [
            "0 7 * * *",
            "0 7 * * * * *",
            "60 * * * * *",
            "* * 24 * * *",
            "* * * 0 * *",
            "*/0 * * * * *",
            "5-1 * * * * *",
            "x * * * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
