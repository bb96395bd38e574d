//! Calendar times for the timestamps the API carries (`kept_ns`, `copy_mtime_ns`), so
//! clients show them without linking cairn-core.

/// A UTC calendar time, for messages people read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcTime {
    /// The year, e.g. 2026.
    pub year: i64,
    /// 1-12.
    pub month: i64,
    /// 1-31.
    pub day: i64,
    /// 0-23.
    pub hour: i64,
    /// 0-59.
    pub minute: i64,
    /// 0-59.
    pub second: i64,
}

impl UtcTime {
    /// The calendar time of `ns` nanoseconds since the Unix epoch (Howard Hinnant's
    /// civil_from_days; the same arithmetic as cairn-core's conflict copy names, which a
    /// test in the CLI holds it to).
    pub fn from_ns(ns: i64) -> Self {
        let secs = ns.div_euclid(1_000_000_000);
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        UtcTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanoseconds_become_utc_calendar_times() {
        assert_eq!(
            UtcTime::from_ns(0),
            UtcTime {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0
            }
        );
        let t = UtcTime::from_ns(1_764_483_720_000_000_000);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute),
            (2025, 11, 30, 6, 22)
        );
        let leap = UtcTime::from_ns(951_782_400 * 1_000_000_000); // 2000-02-29
        assert_eq!((leap.year, leap.month, leap.day), (2000, 2, 29));
        let before = UtcTime::from_ns(-1);
        assert_eq!((before.year, before.hour, before.second), (1969, 23, 59));
    }
}
