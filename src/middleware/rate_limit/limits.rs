//! What a limit is: a rate (GCRA: so many requests per period, with a burst) or a quota on a
//! calendar window (so many per UTC day or month), as written in the config and checked.
//!
//! Off the request path: parsed when a config is checked. On it: the calendar arithmetic that
//! says which window a moment falls in and when that window ends (`CalendarUnit::window`).

use crate::config::check::Checker;
use crate::config::source::KeyPath;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The most a quota may allow in one window (its count is kept in 32 bits locally).
pub(crate) const MAX_QUOTA: u64 = u32::MAX as u64;
/// The largest burst of a rate.
pub(crate) const MAX_BURST: u32 = 100_000_000;

/// A calendar window, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CalendarUnit {
    Day,
    Month,
}

/// One window of a calendar unit: its number and when it ends (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Days since 1970-01-01, or months since January 1970.
    pub(crate) index: u64,
    pub(crate) ends_at: u64,
}

impl CalendarUnit {
    pub(crate) fn label(self) -> &'static str {
        match self {
            CalendarUnit::Day => "day",
            CalendarUnit::Month => "month",
        }
    }

    /// The window `unix_seconds` falls in.
    pub(crate) fn window(self, unix_seconds: u64) -> Window {
        let day = unix_seconds / 86_400;
        match self {
            CalendarUnit::Day => Window {
                index: day,
                ends_at: (day + 1) * 86_400,
            },
            CalendarUnit::Month => {
                let (year, month, _) = civil_from_days(day as i64);
                let index = (year - 1970) as u64 * 12 + u64::from(month - 1);
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                let ends_at = days_from_civil(next_year, next_month, 1) as u64 * 86_400;
                Window { index, ends_at }
            }
        }
    }

    /// The nominal length of a window, for the `w` of `RateLimit-Policy`.
    pub(crate) fn nominal(self) -> Duration {
        match self {
            CalendarUnit::Day => Duration::from_secs(86_400),
            CalendarUnit::Month => Duration::from_secs(30 * 86_400),
        }
    }
}

/// (year, month 1..=12, day 1..=31) of a count of days since 1970-01-01 (proleptic
/// Gregorian; the algorithm of "chrono-Compatible Low-Level Date Algorithms").
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What a limit counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LimitKind {
    /// GCRA: `count` per `period`, at most `burst` at once.
    Rate {
        count: u32,
        period: Duration,
        burst: u32,
    },
    /// At most `limit` in each calendar window.
    Quota { limit: u64, unit: CalendarUnit },
}

/// One limit, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limit {
    /// Names it in headers, metrics and `explain`.
    pub(crate) name: Arc<str>,
    pub(crate) kind: LimitKind,
}

impl Limit {
    /// The time one request's share of a rate takes to come back.
    pub(crate) fn emission_interval(&self) -> Option<Duration> {
        match &self.kind {
            LimitKind::Rate { count, period, .. } => Some(*period / *count),
            LimitKind::Quota { .. } => None,
        }
    }

    /// `q` and `w` (seconds) of `RateLimit-Policy`: the count the limit allows per window.
    /// The header speaks in whole seconds, so a rate whose period is not (5/500ms, 2/1500ms)
    /// is advertised over the shortest whole-second window that allows a whole count at the
    /// same rate (`q=10;w=1`, `q=4;w=3`).
    pub(crate) fn quota_and_window(&self) -> (u64, u64) {
        match &self.kind {
            LimitKind::Rate { count, period, .. } => whole_second_window(*count, *period),
            LimitKind::Quota { limit, unit } => (*limit, unit.nominal().as_secs()),
        }
    }

    /// The count the limit allows in its own period (or window): `X-RateLimit-Limit`.
    pub(crate) fn count(&self) -> u64 {
        match &self.kind {
            LimitKind::Rate { count, .. } => u64::from(*count),
            LimitKind::Quota { limit, .. } => *limit,
        }
    }

    /// `20/s burst 40`, `1000000/month`.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            LimitKind::Rate {
                count,
                period,
                burst,
            } => {
                let per = describe_period(*period);
                if burst == count {
                    format!("{} {count}/{per}", self.name)
                } else {
                    format!("{} {count}/{per} burst {burst}", self.name)
                }
            }
            LimitKind::Quota { limit, unit } => {
                format!("{} {limit}/{} (UTC calendar)", self.name, unit.label())
            }
        }
    }

    /// Shorter windows first, calendar quotas last: a request refused for its rate is
    /// refused before it spends anything of a longer limit.
    fn order(&self) -> (u8, Duration) {
        match &self.kind {
            LimitKind::Rate { period, .. } => (0, *period),
            LimitKind::Quota { unit, .. } => (1, unit.nominal()),
        }
    }
}

fn describe_period(period: Duration) -> String {
    match period.as_secs() {
        1 if period.subsec_nanos() == 0 => String::from("s"),
        60 if period.subsec_nanos() == 0 => String::from("min"),
        3600 if period.subsec_nanos() == 0 => String::from("h"),
        86_400 if period.subsec_nanos() == 0 => String::from("day"),
        _ => format!("{period:?}"),
    }
}

/// One entry of a `limits` list as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitFile {
    /// Default: made from the limit (`20-per-s`, `1000000-per-month`).
    name: Option<String>,
    /// `N/unit`: `20/s`, `100/min`, `5000/h`, `100000/day`, or `N/<duration>` (`5/10s`).
    rate: Option<String>,
    /// Requests allowed at once. Default: the rate's N.
    burst: Option<u32>,
    /// `N/day` or `N/month`: a quota on UTC calendar windows.
    quota: Option<String>,
}

/// Check a `limits` list at `path`; the limits come back ordered for checking (shorter
/// windows first).
pub(crate) fn check_limits(
    files: &[LimitFile],
    path: &KeyPath,
    checker: &mut Checker<'_>,
) -> Option<Vec<Limit>> {
    let mut limits: Vec<Limit> = Vec::with_capacity(files.len());
    let mut ok = true;
    for (index, file) in files.iter().enumerate() {
        let at = path.index(index);
        match check_limit(file, &at, checker) {
            Some(limit) => {
                if limits.iter().any(|other| other.name == limit.name) {
                    checker.report(
                        &at.key("name"),
                        format!(
                            "two limits are called `{}`: give each its own name",
                            limit.name
                        ),
                    );
                    ok = false;
                } else {
                    limits.push(limit);
                }
            }
            None => ok = false,
        }
    }
    if !ok {
        return None;
    }
    limits.sort_by_key(Limit::order);
    Some(limits)
}

fn check_limit(file: &LimitFile, at: &KeyPath, checker: &mut Checker<'_>) -> Option<Limit> {
    let kind = match (&file.rate, &file.quota) {
        (Some(rate), None) => {
            let (count, period) = match parse_rate(rate) {
                Ok(parsed) => parsed,
                Err(message) => {
                    checker.report(&at.key("rate"), message);
                    return None;
                }
            };
            let burst = file.burst.unwrap_or(count);
            if burst == 0 || burst > MAX_BURST {
                checker.report(
                    &at.key("burst"),
                    format!("{burst} is out of range: must be between 1 and {MAX_BURST}"),
                );
                return None;
            }
            LimitKind::Rate {
                count,
                period,
                burst,
            }
        }
        (None, Some(quota)) => {
            if file.burst.is_some() {
                checker.report(
                    &at.key("burst"),
                    "a quota has no burst: it allows its whole count in each window",
                );
                return None;
            }
            match parse_quota(quota) {
                Ok((limit, unit)) => LimitKind::Quota { limit, unit },
                Err(message) => {
                    checker.report(&at.key("quota"), message);
                    return None;
                }
            }
        }
        (None, None) => {
            checker.report(
                at,
                "a limit needs `rate` (like 20/s) or `quota` (like 1000000/month)",
            );
            return None;
        }
        (Some(_), Some(_)) => {
            checker.report(at, "a limit is a `rate` or a `quota`, not both");
            return None;
        }
    };
    let name = match &file.name {
        Some(name) => {
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid {
                checker.report(
                    &at.key("name"),
                    format!(
                        "{name:?} is not a limit name: letters, digits, `-`, `_`, `.` (64 at most)"
                    ),
                );
                return None;
            }
            name.clone()
        }
        None => match &kind {
            LimitKind::Rate { count, period, .. } => {
                format!(
                    "{count}-per-{}",
                    describe_period(*period).replace(['.', 'µ'], "_")
                )
            }
            LimitKind::Quota { limit, unit } => format!("{limit}-per-{}", unit.label()),
        },
    };
    Some(Limit {
        name: Arc::from(name),
        kind,
    })
}

/// `count` per `period` as a whole count per whole seconds at exactly the same rate: `w` is
/// the smallest number of seconds in which the rate allows a whole number of requests.
fn whole_second_window(count: u32, period: Duration) -> (u64, u64) {
    if period.subsec_nanos() == 0 {
        return (u64::from(count), period.as_secs());
    }
    const NANOS: u128 = 1_000_000_000;
    let (count, period) = (u128::from(count), period.as_nanos());
    // `w` seconds allow w * count * 1e9 / period requests: a whole number when `w` is a
    // multiple of period / gcd(count * 1e9, period).
    let window = period / gcd(count * NANOS, period);
    let quota = window * count * NANOS / period;
    // Both are at most count * 1e9 and period / 1 ns (under a year): they fit.
    (
        u64::try_from(quota).unwrap_or(u64::MAX),
        u64::try_from(window).unwrap_or(u64::MAX),
    )
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `20/s`, `100/min`, `5000/h`, `100000/day`, `5/10s` → (count, period).
pub(crate) fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let usage = || {
        format!(
            "{text:?} is not a rate: expected N/s, N/min, N/h, N/day or N/<duration> (like 20/s or \
             5/10s)"
        )
    };
    let (count, per) = text.split_once('/').ok_or_else(usage)?;
    let count: u32 = count.trim().parse().map_err(|_| usage())?;
    if count == 0 {
        return Err(format!(
            "{text:?} allows nothing: the count must be at least 1"
        ));
    }
    let period = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        "month" => {
            return Err(format!(
            "{text:?}: a month is a calendar window; write it as a quota (`quota: {count}/month`)"
        ))
        }
        other => crate::config::units::parse_duration(other).map_err(|_| usage())?,
    };
    if period.is_zero() || period > Duration::from_secs(366 * 86_400) {
        return Err(format!(
            "{text:?}: the period must be longer than 0s and at most a year"
        ));
    }
    if period / count < Duration::from_nanos(1) {
        return Err(format!("{text:?} is more than one request per nanosecond"));
    }
    Ok((count, period))
}

/// `1000000/month`, `5000/day`.
pub(crate) fn parse_quota(text: &str) -> Result<(u64, CalendarUnit), String> {
    let usage =
        || format!("{text:?} is not a quota: expected N/day or N/month (like 1000000/month)");
    let (count, per) = text.split_once('/').ok_or_else(usage)?;
    let limit: u64 = count.trim().parse().map_err(|_| usage())?;
    if limit == 0 || limit > MAX_QUOTA {
        return Err(format!(
            "{text:?}: the count must be between 1 and {MAX_QUOTA}"
        ));
    }
    let unit = match per.trim() {
        "day" | "d" => CalendarUnit::Day,
        "month" => CalendarUnit::Month,
        _ => return Err(usage()),
    };
    Ok((limit, unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_second_windows_keep_the_rate_exactly() {
        assert_eq!(whole_second_window(5, Duration::from_millis(500)), (10, 1));
        assert_eq!(whole_second_window(1, Duration::from_millis(250)), (4, 1));
        assert_eq!(whole_second_window(2, Duration::from_millis(1500)), (4, 3));
        assert_eq!(
            whole_second_window(7, Duration::from_millis(1001)),
            (1000, 143)
        );
        assert_eq!(whole_second_window(3, Duration::from_secs(60)), (3, 60));
        for (count, millis) in [(1u32, 1u64), (9, 333), (1000, 10), (13, 86_399_999)] {
            let (quota, window) = whole_second_window(count, Duration::from_millis(millis));
            assert!(window >= 1);
            // quota / window == count / period, in whole numbers.
            assert_eq!(
                u128::from(quota) * u128::from(millis),
                u128::from(count) * u128::from(window) * 1000,
                "{count}/{millis}ms"
            );
        }
    }

    #[test]
    fn rates_and_quotas_parse() {
        assert_eq!(parse_rate("20/s"), Ok((20, Duration::from_secs(1))));
        assert_eq!(
            parse_rate("100000/day"),
            Ok((100_000, Duration::from_secs(86_400)))
        );
        assert_eq!(parse_rate("5/10s"), Ok((5, Duration::from_secs(10))));
        assert_eq!(parse_rate("100 / min"), Ok((100, Duration::from_secs(60))));
        for bad in [
            "20",
            "0/s",
            "x/s",
            "20/fortnight",
            "20/0s",
            "1/month",
            "-1/s",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_quota("1000000/month"),
            Ok((1_000_000, CalendarUnit::Month))
        );
        assert!(parse_quota("5/week").is_err());
        assert!(parse_quota("0/day").is_err());
        assert!(parse_quota("99999999999/day").is_err());
    }

    proptest::proptest! {
        /// A window ends after the moment it holds, the next second after its end is the next
        /// window, and its last second is still its own.
        #[test]
        fn windows_tile_time(t in 0u64..8_000_000_000) {
            for unit in [CalendarUnit::Day, CalendarUnit::Month] {
                let window = unit.window(t);
                proptest::prop_assert!(window.ends_at > t);
                proptest::prop_assert!(window.ends_at - t <= 31 * 86_400);
                proptest::prop_assert_eq!(unit.window(window.ends_at - 1).index, window.index);
                proptest::prop_assert_eq!(unit.window(window.ends_at).index, window.index + 1);
            }
        }
    }

    #[test]
    fn calendar_windows_are_utc_days_and_months() {
        // 2024-02-29T12:00:00Z: a leap day.
        let t = 1_709_208_000;
        let day = CalendarUnit::Day.window(t);
        assert_eq!(day.ends_at, 1_709_251_200, "2024-03-01T00:00:00Z");
        let month = CalendarUnit::Month.window(t);
        assert_eq!(month.index, (2024 - 1970) * 12 + 1);
        assert_eq!(month.ends_at, 1_709_251_200, "the month ends with the day");
        // 2026-12-31T23:59:59Z ends on 2027-01-01, the next month's window is another.
        let last = CalendarUnit::Month.window(1_798_761_599);
        assert_eq!(last.ends_at, 1_798_761_600);
        assert_eq!(
            CalendarUnit::Month.window(1_798_761_600).index,
            last.index + 1
        );
        for days in [-800_000i64, -1, 0, 59, 19_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
