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

/// Now, in ns since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// A moment as `cairn restore --at` takes it, in ns since the epoch: `2026-12-04 15:30`
/// or `2026-12-04 15:30:05` (UTC), the same with `T` and an optional `Z`,
/// `@UNIX_SECONDS`, or a time ago (`90s`, `10m`, `2h`, `3d`).
pub fn parse_when(text: &str, now_ns: i64) -> Result<i64, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "cannot read the time {text:?}: give `2026-12-04 15:30` (UTC), \
             `2026-12-04T15:30:00Z`, `@UNIX_SECONDS` or a time ago such as `10m`"
        )
    };
    if let Some(secs) = t.strip_prefix('@') {
        let s: i64 = secs.parse().map_err(|_| bad())?;
        return s.checked_mul(1_000_000_000).ok_or_else(bad);
    }
    if let Some(unit) = t.chars().last().filter(|c| "smhd".contains(*c))
        && let Ok(n) = t[..t.len() - 1].parse::<i64>()
    {
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => 86_400,
        };
        return n
            .checked_mul(secs * 1_000_000_000)
            .map(|ago| now_ns - ago)
            .ok_or_else(bad);
    }
    let t = t.trim_end_matches('Z').replace('T', " ");
    let (date, time) = t.split_once(' ').unwrap_or((&t, "00:00:00"));
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let h: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let ([y, mo, da], [hh, mi, ss]) = (
        <[i64; 3]>::try_from(d).map_err(|_| bad())?,
        match h.as_slice() {
            [a, b] => [*a, *b, 0],
            [a, b, c] => [*a, *b, *c],
            _ => return Err(bad()),
        },
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || hh > 23 || mi > 59 || ss > 60 {
        return Err(bad());
    }
    // Howard Hinnant's days_from_civil (the inverse of UtcTime::from_ns).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok((days * 86_400 + hh * 3600 + mi * 60 + ss) * 1_000_000_000)
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
    /// `--at` times: calendar times read back as the calendar shows them, every second of
    /// many years; times ago from now; nonsense refused.
    #[test]
    fn rewind_times_parse_back_to_the_calendar() {
        let mut ns: i64 = 0;
        while ns < 4_102_444_800 * 1_000_000_000 {
            let t = UtcTime::from_ns(ns);
            let text = format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year, t.month, t.day, t.hour, t.minute, t.second
            );
            assert_eq!(parse_when(&text, 0), Ok(ns), "{text}");
            let iso = format!("{}Z", text.replace(' ', "T"));
            assert_eq!(parse_when(&iso, 0), Ok(ns), "{iso}");
            ns += 3_601_000_000_000 * 7 + 1_000_000_000;
        }
        assert_eq!(
            parse_when("2026-12-04 15:30", 0),
            parse_when("2026-12-04T15:30:00Z", 0)
        );
        let now = 1_800_000_000 * 1_000_000_000;
        assert_eq!(parse_when("10m", now), Ok(now - 600 * 1_000_000_000));
        assert_eq!(parse_when("3d", now), Ok(now - 3 * 86_400 * 1_000_000_000));
        assert_eq!(
            parse_when("@1700000000", now),
            Ok(1_700_000_000 * 1_000_000_000)
        );
        for bad in [
            "yesterday",
            "2026-13-01 00:00",
            "2026-12-04 25:00",
            "10x",
            "",
            "@x",
        ] {
            assert!(parse_when(bad, now).is_err(), "{bad}");
        }
    }
}
