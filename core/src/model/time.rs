//! Time as the core sees it: Unix seconds, given by the shell's clock.
//! The core never reads a clock; it only formats and compares numbers.

/// Unix seconds as RFC 3339 in UTC, to the second (`2026-12-01T12:00:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The date part of [`rfc3339`] (`2026-12-01`).
pub fn date_only(secs: u64) -> String {
    let (y, m, d) = civil_from_days(secs / 86_400);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Unix seconds as an RFC 5322 date in UTC (`Tue, 01 Dec 2026 12:00:00 +0000`),
/// for a message's `Date:` header.
pub fn rfc5322(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[m as usize - 1],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day):
/// Howard Hinnant's `civil_from_days`, for non-negative days.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_126_400), "2026-12-01T12:00:00Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(date_only(1_796_126_400), "2026-12-01");
        assert_eq!(rfc5322(1_796_126_400), "Tue, 01 Dec 2026 12:00:00 +0000");
        assert_eq!(rfc5322(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    }

    #[test]
    fn every_day_follows_the_previous_one() {
        // Walk 400 years (one whole Gregorian cycle) a day at a time: the
        // dates must be strictly increasing and each month must end on its
        // real length, leap years included.
        let mut prev = (1969, 12, 31);
        for day in 0..146_097u64 {
            let (y, m, d) = civil_from_days(day);
            let next_ok =
                (y, m, d) > prev && (d == prev.2 + 1 && m == prev.1 && y == prev.0 || d == 1);
            assert!(next_ok, "{prev:?} -> {:?}", (y, m, d));
            let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
            let len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            assert!(d <= len[m as usize - 1]);
            prev = (y, m, d);
        }
    }
}
