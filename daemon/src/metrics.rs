//! Counters of what the daemon does, rendered in Prometheus text format on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters per peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCounters {
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub chunks_received: u64,
    pub chunks_sent: u64,
}

/// All of the daemon's counters.
#[derive(Default)]
pub struct Metrics {
    peers: Mutex<BTreeMap<String, PeerCounters>>,
    violations: Mutex<BTreeMap<(String, &'static str), u64>>,
    pub peers_connected: AtomicU64,
    pub remote_manifests: AtomicU64,
    pub dedup_hits: AtomicU64,
    pub dedup_bytes: AtomicU64,
    pub delta_chunks: AtomicU64,
    pub direct_write_bytes: AtomicU64,
    pub delta_saved_bytes: AtomicU64,
    pub delta_signature_bytes: AtomicU64,
    pub scan_files: AtomicU64,
    pub scan_bytes: AtomicU64,
    pub pull_files: AtomicU64,
    pub pull_bytes: AtomicU64,
    pub meta_bytes_sent: AtomicU64,
    pub meta_bytes_received: AtomicU64,
    pub pull_queue: AtomicU64,
    pub watcher_fallbacks: AtomicU64,
    pub versions_unavailable: AtomicU64,
    pub versions_preserved: AtomicU64,
    pub hole_punches: AtomicU64,
    pub hole_punch_failures: AtomicU64,
    /// How long each turn of the event loop took (handling one event and scheduling).
    pub loop_stall: Histogram,
}

/// A Prometheus histogram of durations in seconds, with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each of [`Histogram::BOUNDS`], and in all (last).
    counts: [AtomicU64; 10],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Upper bounds of the buckets, in seconds.
    pub const BOUNDS: [f64; 9] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 2.0];

    /// Records one duration.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let bucket = Self::BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(Self::BOUNDS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(
            out,
            "# HELP {name} {help}
# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (i, bound) in Self::BOUNDS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[Self::BOUNDS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

impl Metrics {
    /// Updates the counters of `peer`.
    pub fn peer(&self, peer: &str, update: impl FnOnce(&mut PeerCounters)) {
        if let Ok(mut peers) = self.peers.lock() {
            update(peers.entry(peer.to_string()).or_default());
        }
    }

    /// Counts a protocol violation of `kind` by `peer` (a trusted peer's id, or
    /// `unpaired` for every stranger together: strangers get no series of their own).
    pub fn violation(&self, peer: &str, kind: &'static str) {
        if let Ok(mut v) = self.violations.lock() {
            *v.entry((peer.to_string(), kind)).or_default() += 1;
        }
    }

    /// Violations counted for `peer`, of every kind.
    pub fn violations_of(&self, peer: &str) -> u64 {
        self.violations
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|((p, _), _)| p == peer)
                    .map(|(_, n)| n)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Forgets the series of `peer` (unpaired).
    pub fn forget_peer(&self, peer: &str) {
        if let Ok(mut p) = self.peers.lock() {
            p.remove(peer);
        }
        if let Ok(mut v) = self.violations.lock() {
            v.retain(|(p, _), _| p != peer);
        }
    }

    /// The counters of `peer`.
    pub fn peer_counters(&self, peer: &str) -> PeerCounters {
        self.peers
            .lock()
            .ok()
            .and_then(|p| p.get(peer).copied())
            .unwrap_or_default()
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let peers = self.peers.lock().map(|p| p.clone()).unwrap_or_default();
        type Field = fn(&PeerCounters) -> u64;
        let per_peer: [(&str, &str, Field); 4] = [
            (
                "cairn_bytes_received_total",
                "Chunk bytes received from a peer.",
                |c| c.bytes_received,
            ),
            (
                "cairn_bytes_sent_total",
                "Chunk bytes sent to a peer.",
                |c| c.bytes_sent,
            ),
            (
                "cairn_chunks_received_total",
                "Chunks received from a peer.",
                |c| c.chunks_received,
            ),
            ("cairn_chunks_sent_total", "Chunks sent to a peer.", |c| {
                c.chunks_sent
            }),
        ];
        for (name, help, f) in per_peer {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (peer, c) in &peers {
                let _ = writeln!(out, "{name}{{peer=\"{peer}\"}} {}", f(c));
            }
        }
        let name = "cairn_protocol_violations_total";
        let _ = writeln!(
            out,
            "# HELP {name} Protocol violations, by peer (`unpaired` for all strangers) and kind.\n# TYPE {name} counter"
        );
        let violations = self
            .violations
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        for ((peer, kind), n) in &violations {
            let _ = writeln!(out, "{name}{{peer=\"{peer}\",kind=\"{kind}\"}} {n}");
        }
        let plain: [(&str, &str, &str, &AtomicU64); 20] = [
            (
                "cairn_versions_unavailable_total",
                "counter",
                "Versions this device authored but no longer has, dropped from the folder (nobody can ever provide them).",
                &self.versions_unavailable,
            ),
            (
                "cairn_hole_punches_total",
                "counter",
                "Relayed connections upgraded to direct ones by hole punching (DCUtR).",
                &self.hole_punches,
            ),
            (
                "cairn_hole_punch_failures_total",
                "counter",
                "Hole punching attempts that failed (the connection stays relayed).",
                &self.hole_punch_failures,
            ),
            (
                "cairn_versions_preserved_total",
                "counter",
                "Local versions kept in history by the puller because no other copy was on this device.",
                &self.versions_preserved,
            ),
            (
                "cairn_peers_connected",
                "gauge",
                "Trusted peers connected now.",
                &self.peers_connected,
            ),
            (
                "cairn_remote_manifests",
                "gauge",
                "Manifests learnt from peers and kept in the index (removed when every folder is in sync).",
                &self.remote_manifests,
            ),
            (
                "cairn_dedup_hits_total",
                "counter",
                "Chunks taken from local files instead of the network.",
                &self.dedup_hits,
            ),
            (
                "cairn_dedup_bytes_total",
                "counter",
                "Bytes taken from local files instead of the network.",
                &self.dedup_bytes,
            ),
            (
                "cairn_direct_write_bytes_total",
                "counter",
                "Pulled bytes written past the page cache (O_DIRECT).",
                &self.direct_write_bytes,
            ),
            (
                "cairn_delta_chunks_total",
                "counter",
                "Chunks received as a delta from a local base instead of whole.",
                &self.delta_chunks,
            ),
            (
                "cairn_delta_saved_bytes_total",
                "counter",
                "Chunk bytes not sent thanks to deltas (chunk size minus signature and delta).",
                &self.delta_saved_bytes,
            ),
            (
                "cairn_delta_signature_bytes_total",
                "counter",
                "Bytes of base signatures sent in delta requests, whether or not a delta came back.",
                &self.delta_signature_bytes,
            ),
            (
                "cairn_scan_files_total",
                "counter",
                "Files read by scans.",
                &self.scan_files,
            ),
            (
                "cairn_scan_bytes_total",
                "counter",
                "Bytes read by scans.",
                &self.scan_bytes,
            ),
            (
                "cairn_pull_files_total",
                "counter",
                "Files written from peers' changes.",
                &self.pull_files,
            ),
            (
                "cairn_pull_bytes_total",
                "counter",
                "Bytes written from peers' changes.",
                &self.pull_bytes,
            ),
            (
                "cairn_meta_bytes_sent_total",
                "counter",
                "Folder metadata sync bytes sent.",
                &self.meta_bytes_sent,
            ),
            (
                "cairn_meta_bytes_received_total",
                "counter",
                "Folder metadata sync bytes received.",
                &self.meta_bytes_received,
            ),
            (
                "cairn_pull_queue_depth",
                "gauge",
                "Actions waiting in the current pull plan.",
                &self.pull_queue,
            ),
            (
                "cairn_watcher_fallbacks_total",
                "counter",
                "Times the watcher failed and periodic rescans took over.",
                &self.watcher_fallbacks,
            ),
        ];
        for (name, kind, help, c) in plain {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                get(c)
            );
        }
        self.loop_stall.render(
            &mut out,
            "cairn_loop_stall_seconds",
            "How long each turn of the event loop took: the longest the daemon kept the network and control API waiting.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_stall_histogram_is_cumulative() {
        let m = Metrics::default();
        for ms in [0, 3, 3, 40, 3000] {
            m.loop_stall.observe(std::time::Duration::from_millis(ms));
        }
        let text = m.render();
        assert!(text.contains("# TYPE cairn_loop_stall_seconds histogram"));
        assert!(text.contains("cairn_loop_stall_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("cairn_loop_stall_seconds_bucket{le=\"0.005\"} 3\n"));
        assert!(text.contains("cairn_loop_stall_seconds_bucket{le=\"0.05\"} 4\n"));
        assert!(text.contains("cairn_loop_stall_seconds_bucket{le=\"+Inf\"} 5\n"));
        assert!(text.contains("cairn_loop_stall_seconds_count 5\n"));
        assert!(
            text.contains("cairn_loop_stall_seconds_sum 3.046\n"),
            "{text}"
        );
    }

    #[test]
    fn renders_prometheus_text_with_peer_labels() {
        let m = Metrics::default();
        m.peer("12D3Koo", |c| c.bytes_received += 42);
        Metrics::add(&m.dedup_hits, 3);
        let text = m.render();
        assert!(
            text.contains("cairn_bytes_received_total{peer=\"12D3Koo\"} 42"),
            "{text}"
        );
        assert!(text.contains("# TYPE cairn_dedup_hits_total counter\ncairn_dedup_hits_total 3"));
    }

    #[test]
    fn violations_are_labelled_by_peer_and_kind_and_forgotten_with_the_peer() {
        let m = Metrics::default();
        m.violation("12D3Koo", "bad_chunk");
        m.violation("12D3Koo", "bad_chunk");
        m.violation("unpaired", "malformed");
        let text = m.render();
        assert!(
            text.contains("cairn_protocol_violations_total{peer=\"12D3Koo\",kind=\"bad_chunk\"} 2"),
            "{text}"
        );
        assert_eq!(m.violations_of("12D3Koo"), 2);
        m.forget_peer("12D3Koo");
        assert_eq!(m.violations_of("12D3Koo"), 0);
        assert_eq!(m.violations_of("unpaired"), 1);
    }
}
