//! Which kept versions a folder keeps: staggered thinning as Syncthing's, a maximum age and
//! a maximum size of what they hold. Pure: the time is passed in, nothing is read or
//! removed here (the daemon's pruning job does that with the answer).
//!
//! Staggered thinning keeps, for each path, at most one version per 30 s for the first
//! hour, per hour for the first day, per day for the first 30 days and per week after
//! that, up to the maximum age. As Syncthing's `staggered.go`: versions are walked oldest
//! first, and one is dropped when it is closer than its age bracket's step to the last
//! version kept before it.
//!
//! The size of what is kept counts each chunk once, however many versions share it (the
//! version store keeps it once). Over the maximum, the oldest versions go first (of any
//! path) until what the rest hold fits.

use std::collections::{BTreeMap, HashMap};

use crate::ChunkId;

const SECOND: i64 = 1_000_000_000;
const HOUR: i64 = 3600 * SECOND;
const DAY: i64 = 24 * HOUR;

/// (step, end of the age bracket) in ns: Syncthing's staggered intervals.
const BRACKETS: [(i64, i64); 3] = [(30 * SECOND, HOUR), (HOUR, DAY), (DAY, 30 * DAY)];
/// The step past the last bracket.
const WEEK: i64 = 7 * DAY;

/// A folder's rules for kept versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Thin out versions staggered (else every version is kept up to the limits).
    pub staggered: bool,
    /// Versions older than this go (ns; None: no limit).
    pub max_age_ns: Option<i64>,
    /// What the kept versions hold, each chunk counted once, stays under this (bytes;
    /// None: no limit).
    pub max_bytes: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            staggered: true,
            max_age_ns: Some(365 * DAY),
            max_bytes: None,
        }
    }
}

/// One kept version, as the pruning sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptVersion {
    pub path: String,
    /// When it was kept (ns since the epoch).
    pub kept_ns: i64,
    /// Its chunks and their lengths (for the size limit; may be empty without one).
    pub chunks: Vec<(ChunkId, u32)>,
}

/// The versions to drop (indices into `versions`), given the time `now_ns`.
pub fn to_drop(now_ns: i64, versions: &[KeptVersion], rules: &Retention) -> Vec<usize> {
    let mut drop = vec![false; versions.len()];
    // Age and thinning, path by path, oldest first.
    let mut by_path: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, v) in versions.iter().enumerate() {
        by_path.entry(&v.path).or_default().push(i);
    }
    for idx in by_path.values_mut() {
        idx.sort_by_key(|&i| versions[i].kept_ns);
        let mut last_kept: Option<i64> = None;
        for &i in idx.iter() {
            let age = now_ns.saturating_sub(versions[i].kept_ns).max(0);
            if rules.max_age_ns.is_some_and(|max| age > max) {
                drop[i] = true;
                continue;
            }
            if rules.staggered {
                let step = BRACKETS
                    .iter()
                    .find(|(_, end)| age < *end)
                    .map_or(WEEK, |(step, _)| *step);
                if last_kept.is_some_and(|t| versions[i].kept_ns - t < step) {
                    drop[i] = true;
                    continue;
                }
            }
            last_kept = Some(versions[i].kept_ns);
        }
    }
    // Size: the oldest of what is left go until the rest fits.
    if let Some(max) = rules.max_bytes {
        let mut refs: HashMap<ChunkId, (u32, u32)> = HashMap::new();
        for (i, v) in versions.iter().enumerate() {
            if !drop[i] {
                for (id, len) in &v.chunks {
                    refs.entry(*id).or_insert((0, *len)).0 += 1;
                }
            }
        }
        let mut total: u64 = refs.values().map(|(_, len)| *len as u64).sum();
        let mut oldest: Vec<usize> = (0..versions.len()).filter(|&i| !drop[i]).collect();
        oldest.sort_by_key(|&i| (versions[i].kept_ns, i));
        for i in oldest {
            if total <= max {
                break;
            }
            drop[i] = true;
            for (id, _) in &versions[i].chunks {
                if let Some((n, len)) = refs.get_mut(id) {
                    *n -= 1;
                    if *n == 0 {
                        total -= *len as u64;
                        refs.remove(id);
                    }
                }
            }
        }
    }
    (0..versions.len()).filter(|&i| drop[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(path: &str, kept_ns: i64, chunks: &[(u8, u32)]) -> KeptVersion {
        KeptVersion {
            path: path.into(),
            kept_ns,
            chunks: chunks
                .iter()
                .map(|(b, l)| (ChunkId([*b; 32]), *l))
                .collect(),
        }
    }

    const NOW: i64 = 1_800_000_000 * SECOND;

    fn rules(staggered: bool, max_age_days: Option<i64>, max_bytes: Option<u64>) -> Retention {
        Retention {
            staggered,
            max_age_ns: max_age_days.map(|d| d * DAY),
            max_bytes,
        }
    }

    #[test]
    fn within_the_first_hour_one_version_per_30_seconds_stays() {
        // Kept 100, 90, 80, ... 10 s ago: walking oldest first, each within 30 s of the
        // last one kept goes.
        let versions: Vec<_> = (1..=10)
            .map(|k| v("a", NOW - k * 10 * SECOND, &[]))
            .collect();
        let dropped = to_drop(NOW, &versions, &rules(true, None, None));
        let kept: Vec<i64> = (0..versions.len())
            .filter(|i| !dropped.contains(i))
            .map(|i| (NOW - versions[i].kept_ns) / SECOND)
            .collect();
        assert_eq!(kept, [10, 40, 70, 100]);
    }

    #[test]
    fn older_brackets_keep_one_per_hour_day_and_week() {
        let mut versions = Vec::new();
        // Every 10 minutes between 2 and 4 hours ago: one per hour stays.
        for m in (120..=240).step_by(10) {
            versions.push(v("a", NOW - m * 60 * SECOND, &[]));
        }
        // Every 6 hours between 2 and 4 days ago: one per day stays.
        for h in (48..=96).step_by(6) {
            versions.push(v("b", NOW - h * HOUR, &[]));
        }
        // Every 2 days between 40 and 60 days ago: one per week stays.
        for d in (40..=60).step_by(2) {
            versions.push(v("c", NOW - d * DAY, &[]));
        }
        let dropped = to_drop(NOW, &versions, &rules(true, None, None));
        let kept = |p: &str| -> Vec<i64> {
            let mut t: Vec<i64> = (0..versions.len())
                .filter(|i| versions[*i].path == p && !dropped.contains(i))
                .map(|i| versions[i].kept_ns)
                .collect();
            t.sort();
            t.windows(2).map(|w| w[1] - w[0]).collect()
        };
        assert!(kept("a").iter().all(|gap| *gap >= HOUR), "{:?}", kept("a"));
        assert_eq!(kept("a").len(), 2, "4h, 3h, 2h ago");
        assert!(kept("b").iter().all(|gap| *gap >= DAY));
        assert_eq!(kept("b").len(), 2, "96h, 72h, 48h ago");
        assert!(kept("c").iter().all(|gap| *gap >= WEEK));
        assert_eq!(kept("c").len(), 2, "60, 52, 44 days ago");
    }

    #[test]
    fn versions_past_the_maximum_age_go_and_without_thinning_all_others_stay() {
        let versions = vec![
            v("a", NOW - 31 * DAY, &[]),
            v("a", NOW - 29 * DAY, &[]),
            v("a", NOW - 29 * DAY + SECOND, &[]),
            v("b", NOW - 400 * DAY, &[]),
        ];
        assert_eq!(
            to_drop(NOW, &versions, &rules(false, Some(30), None)),
            [0, 3]
        );
        assert!(to_drop(NOW, &versions, &rules(false, None, None)).is_empty());
    }

    #[test]
    fn over_the_size_limit_the_oldest_go_and_shared_chunks_count_once() {
        // Three versions of one file sharing chunk 1 (100 bytes), each with its own
        // 10-byte chunk: 130 bytes held in all.
        let versions = vec![
            v("a", NOW - 3 * HOUR, &[(1, 100), (2, 10)]),
            v("a", NOW - 2 * HOUR, &[(1, 100), (3, 10)]),
            v("a", NOW - HOUR, &[(1, 100), (4, 10)]),
        ];
        let r = |max| rules(false, None, Some(max));
        assert!(to_drop(NOW, &versions, &r(130)).is_empty());
        // Dropping the oldest frees only its own 10 bytes.
        assert_eq!(to_drop(NOW, &versions, &r(120)), [0]);
        assert_eq!(to_drop(NOW, &versions, &r(111)), [0, 1]);
        // Down to the last version, and under its size, everything goes.
        assert_eq!(to_drop(NOW, &versions, &r(50)), [0, 1, 2]);
    }

    #[test]
    fn a_clock_behind_the_versions_drops_nothing_for_age() {
        let versions = vec![v("a", NOW + HOUR, &[]), v("a", NOW + 2 * HOUR, &[])];
        assert!(to_drop(NOW, &versions, &rules(true, Some(1), None)).is_empty());
    }
}
