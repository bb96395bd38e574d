//! The node's decisions, one rule per test; `core/tests/nodes.rs` runs many nodes
//! together over a lossy simulated network.

use super::*;
use crate::folder::FolderDoc;
use crate::scan::EntryKind;

const A: u8 = 1;
const B: u8 = 2;

fn dev(p: u8) -> DeviceId {
    DeviceId([p; 8])
}

fn node(me: u8, peers: &[u8]) -> (Node<u8>, Instant) {
    node_with(me, peers, FolderDoc::new(dev(me), 4).unwrap())
}

/// [`node`] whose folder "f" has `doc` (a restart: the document loaded from its shards).
fn node_with(me: u8, peers: &[u8], doc: FolderDoc) -> (Node<u8>, Instant) {
    let now = Instant::now();
    let mut n = Node::new(dev(me), format!("dev{me}"), TreeOptions::default());
    for p in peers {
        n.add_peer(*p, format!("dev{p}"), dev(*p));
    }
    let spec = FolderSpec {
        id: "f".into(),
        kind: FolderKind::SendReceive,
        paused: false,
        members: peers.to_vec(),
        rescan_interval: Duration::from_secs(3600),
        watcher_ok: true,
    };
    n.add_folder(now, spec, doc);
    (n, now)
}

fn drain(n: &mut Node<u8>) -> Vec<Action<u8>> {
    std::iter::from_fn(|| n.poll_action()).collect()
}

fn file(path: &str, content: u8) -> Unrecorded {
    Unrecorded {
        path: path.into(),
        change: LocalChange::Present {
            kind: EntryKind::File,
            content: Some(ContentId([content; 32])),
            size: 1,
            mtime_ns: 1,
            mode: 0o644,
            link_target: None,
        },
        previous: None,
    }
}

/// A scan of folder "f" found `path` with content `content`.
fn scanned(n: &mut Node<u8>, now: Instant, path: &str, content: u8) {
    n.handle_scan_done(
        now,
        "f",
        Ok(ScanDone {
            unrecorded: vec![file(path, content)],
            changed: 1,
            ..ScanDone::default()
        }),
    );
}

/// A pull that found the disk matching its tree.
fn planned_nothing() -> PullDone {
    PullDone {
        planned_nothing: true,
        ..PullDone::default()
    }
}

/// Finishes the start-up scan and pull so the folder is idle.
fn settle_start(n: &mut Node<u8>, now: Instant) {
    let a = drain(n);
    assert!(
        matches!(a.as_slice(), [Action::Scan { paths: None, .. }]),
        "{a:?}"
    );
    n.handle_scan_done(now, "f", Ok(ScanDone::default()));
    let a = drain(n);
    assert!(matches!(a.last(), Some(Action::Pull { .. })), "{a:?}");
    n.handle_pull_done(now, "f", planned_nothing());
    drain(n);
}

#[test]
fn a_new_folder_is_scanned_in_full_then_pulled_one_job_at_a_time() {
    let (mut n, now) = node(A, &[B]);
    let a = drain(&mut n);
    assert!(matches!(a.as_slice(), [Action::Scan { paths: None, .. }]));
    n.handle_fs_changed(now, "f", Some(vec!["x".into()]));
    assert!(drain(&mut n).is_empty(), "no second job while scanning");
    n.handle_scan_done(now, "f", Ok(ScanDone::default()));
    let a = drain(&mut n);
    assert!(
        matches!(a.as_slice(), [Action::Scan { paths: Some(p), .. }] if p.contains("x")),
        "the change seen while scanning is scanned next, alone: {a:?}"
    );
}

#[test]
fn a_scan_waiting_for_the_gap_between_scans_wakes_the_node_when_the_gap_ends() {
    let (mut n, now) = node(A, &[B]);
    settle_start(&mut n, now);
    n.handle_fs_changed(now, "f", Some(vec!["a".into()]));
    let a = drain(&mut n);
    assert!(matches!(a.as_slice(), [Action::Scan { .. }]), "{a:?}");
    let done = now + Duration::from_millis(240);
    n.handle_scan_done(done, "f", Ok(ScanDone::default()));
    drain(&mut n);
    assert_eq!(n.scan_wake_at(), None, "nothing to scan");
    // More of a copy arrives: its scan waits twice the last scan's 240 ms, and the node
    // says when that is over so the driver need not wait for its next tick.
    n.handle_fs_changed(done, "f", Some(vec!["b".into()]));
    let a = drain(&mut n);
    assert!(!a.iter().any(|a| matches!(a, Action::Scan { .. })), "{a:?}");
    let wake = done + Duration::from_millis(480);
    assert_eq!(n.scan_wake_at(), Some(wake));
    // A driver that was busy wakes it later; the scan starts then, and the wake is gone.
    let late = wake + Duration::from_millis(30);
    n.handle_timeout(late);
    let a = drain(&mut n);
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Scan { paths: Some(p), .. } if p.contains("b"))),
        "{a:?}"
    );
    assert_eq!(n.scan_wake_at(), None, "scanning");
}

#[test]
fn a_scan_that_stopped_at_its_budget_goes_on_at_once_with_the_same_scope() {
    let (mut n, now) = node(A, &[B]);
    settle_start(&mut n, now);
    n.handle_fs_changed(now, "f", Some(vec!["d".into()]));
    let a = drain(&mut n);
    assert!(
        matches!(a.as_slice(), [Action::Scan { paths: Some(_), .. }]),
        "{a:?}"
    );
    // A long scan: the next one would wait twice its length, unless it has more to read.
    let later = now + Duration::from_secs(30);
    n.handle_scan_done(
        later,
        "f",
        Ok(ScanDone {
            unrecorded: vec![file("d/x", 1)],
            changed: 1,
            more: true,
            ..ScanDone::default()
        }),
    );
    let a = drain(&mut n);
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Scan { paths: Some(p), .. } if p.contains("d"))),
        "the rest of d is scanned at once: {a:?}"
    );
    // The same from a full scan: a full one again.
    n.handle_scan_done(later, "f", Ok(ScanDone::default()));
    if drain(&mut n)
        .iter()
        .any(|a| matches!(a, Action::Pull { .. }))
    {
        n.handle_pull_done(later, "f", planned_nothing());
        drain(&mut n);
    }
    n.rescan(later, Some("f"));
    let a = drain(&mut n);
    assert!(
        matches!(a.as_slice(), [Action::Scan { paths: None, .. }]),
        "{a:?}"
    );
    n.handle_scan_done(
        later + Duration::from_secs(30),
        "f",
        Ok(ScanDone {
            more: true,
            ..ScanDone::default()
        }),
    );
    let a = drain(&mut n);
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Scan { paths: None, .. })),
        "{a:?}"
    );
}

#[test]
fn a_recorded_change_is_persisted_before_it_is_sent() {
    let (mut n, now) = node(A, &[B]);
    settle_start(&mut n, now);
    n.handle_connected(now, B);
    drain(&mut n);
    n.handle_meta_failed(now, B, "f");
    n.handle_fs_changed(now, "f", Some(vec!["x".into()]));
    drain(&mut n);
    scanned(&mut n, now, "x", 7);
    let a = drain(&mut n);
    let persist = a.iter().position(
        |a| matches!(a, Action::Persist { recorded, .. } if recorded == &["x".to_string()]),
    );
    let send = a
        .iter()
        .position(|a| matches!(a, Action::SendMeta { peer: B, .. }));
    assert!(persist.is_some() && send.is_some(), "{a:?}");
    assert!(persist < send, "persisted first: {a:?}");
}

#[test]
fn one_meta_request_in_flight_per_folder_and_peer() {
    let (mut n, now) = node(A, &[B]);
    settle_start(&mut n, now);
    n.handle_connected(now, B);
    let first = drain(&mut n);
    assert_eq!(
        first
            .iter()
            .filter(|a| matches!(a, Action::SendMeta { .. }))
            .count(),
        1
    );
    // A change while the request is out: nothing more is sent until it is answered.
    n.handle_fs_changed(now, "f", Some(vec!["x".into()]));
    drain(&mut n);
    scanned(&mut n, now, "x", 7);
    assert!(
        !drain(&mut n)
            .iter()
            .any(|a| matches!(a, Action::SendMeta { .. }))
    );
    // A lost request starts over with the peer.
    n.handle_meta_failed(now, B, "f");
    n.handle_fs_changed(now, "f", Some(vec!["y".into()]));
    drain(&mut n);
    scanned(&mut n, now, "y", 8);
    assert!(
        drain(&mut n)
            .iter()
            .any(|a| matches!(a, Action::SendMeta { .. }))
    );
}

#[test]
fn a_trusted_peer_offering_an_unknown_folder_is_remembered_and_a_stranger_is_not() {
    let (mut n, now) = node(A, &[B]);
    drain(&mut n);
    let req = MetaRequest {
        folder: "other".into(),
        message: None,
    }
    .encode();
    let answer = n.handle_meta_request(now, B, &req);
    assert!(matches!(
        MetaResponse::decode(&answer),
        Ok(MetaResponse::Denied)
    ));
    assert_eq!(
        n.offers().map(|o| o.folder.as_str()).collect::<Vec<_>>(),
        ["other"]
    );
    let stranger = 9;
    let req2 = MetaRequest {
        folder: "third".into(),
        message: None,
    }
    .encode();
    n.handle_meta_request(now, stranger, &req2);
    assert_eq!(n.offers().count(), 1);
    n.decline("other", B);
    n.handle_meta_request(now, B, &req);
    assert_eq!(n.offers().count(), 0, "a declined offer stays declined");
}

#[test]
fn offers_are_capped_per_peer_and_forgotten_when_not_repeated() {
    let (mut n, now) = node(A, &[B]);
    for i in 0..100 {
        let req = MetaRequest {
            folder: format!("made-up-{i}"),
            message: None,
        }
        .encode();
        n.handle_meta_request(now, B, &req);
    }
    assert_eq!(n.offers().count(), MAX_OFFERS_PER_PEER);
    n.handle_timeout(now + OFFER_TTL);
    assert_eq!(n.offers().count(), 0);
}

#[test]
fn malformed_meta_is_a_violation_and_repeated_ones_ban_the_peer() {
    let (mut n, now) = node(A, &[B]);
    drain(&mut n);
    let mut banned = None;
    for i in 0..crate::conduct::STRIKES {
        n.handle_meta_request(now + Duration::from_secs(i as u64), B, b"garbage");
        let a = drain(&mut n);
        assert!(
            a.iter()
                .any(|a| matches!(a, Action::Disconnect { peer: B }))
        );
        for x in a {
            if let Action::Violation {
                peer: Some(B),
                paired: true,
                kind: Violation::Malformed,
                banned_for,
                ..
            } = x
            {
                banned = banned_for;
            }
        }
    }
    assert!(banned.is_some(), "the third strike bans");
    n.handle_disconnected(B);
    n.handle_timeout(now + Duration::from_secs(10));
    assert!(
        !drain(&mut n)
            .iter()
            .any(|a| matches!(a, Action::Dial { .. })),
        "a banned peer is not redialled"
    );
}

#[test]
fn a_failed_pull_is_retried_after_its_back_off_and_not_before() {
    let (mut n, now) = node(A, &[B]);
    drain(&mut n);
    n.handle_scan_done(now, "f", Ok(ScanDone::default()));
    drain(&mut n);
    n.handle_pull_done(
        now,
        "f",
        PullDone {
            done: 0,
            failed: vec![PullFailure::Other("disk on fire".into())],
            ..PullDone::default()
        },
    );
    drain(&mut n);
    assert_eq!(n.folder("f").unwrap().state_word(), "error");
    n.handle_timeout(now + PULL_RETRY / 2);
    assert!(
        !drain(&mut n)
            .iter()
            .any(|a| matches!(a, Action::Pull { .. }))
    );
    n.handle_timeout(now + PULL_RETRY);
    assert!(
        drain(&mut n)
            .iter()
            .any(|a| matches!(a, Action::Pull { .. }))
    );
}

/// A pull that could not get version `content` of "x" from anyone.
fn x_missing(content: u8, held: bool) -> PullDone {
    PullDone {
        failed: vec![PullFailure::Unavailable],
        missing: vec![Missing {
            path: "x".into(),
            content: ContentId([content; 32]),
            held,
        }],
        ..PullDone::default()
    }
}

fn missing_own_version(all_connected: bool, held: bool) -> Vec<Action<u8>> {
    let (mut n, now) = node(A, &[B]);
    drain(&mut n);
    scanned(&mut n, now, "x", 7);
    if all_connected {
        n.handle_connected(now, B);
    }
    drain(&mut n);
    n.handle_pull_done(now, "f", x_missing(7, held));
    drain(&mut n)
}

#[test]
fn an_own_version_nobody_has_is_dropped_only_when_every_member_is_connected() {
    let dropped = |a: &[Action<u8>]| {
        a.iter()
            .any(|a| matches!(a, Action::VersionUnavailable { .. }))
    };
    assert!(dropped(&missing_own_version(true, false)));
    assert!(
        !dropped(&missing_own_version(false, false)),
        "an absent member may have it"
    );
    assert!(
        !dropped(&missing_own_version(true, true)),
        "this device still has the bytes"
    );
}

/// A restore of a version another device said it held, which no device can provide when
/// the pull asks (it was pruned meanwhile, say): the file goes back to the value the
/// restore replaced, written again by this device, not to a tombstone that would delete it.
#[test]
fn a_restored_version_nobody_has_goes_back_to_what_it_replaced_not_to_a_deletion() {
    let (mut n, now) = node(A, &[B]);
    drain(&mut n);
    scanned(&mut n, now, "x", 7);
    let restore = file("x", 9).change;
    assert!(n.record_requested(now, "f", &[("x".into(), restore, Some(ContentId([7; 32])))]));
    n.handle_connected(now, B);
    drain(&mut n);
    let lost = |n: &mut Node<u8>, content: u8| {
        n.handle_pull_done(now, "f", x_missing(content, false));
        drain(n)
    };
    let actions = lost(&mut n, 9);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::VersionUnavailable { .. })),
        "{actions:?}"
    );
    let values = n.folder("f").unwrap().doc.values("x");
    let [v] = values.as_slice() else {
        panic!("{values:?}")
    };
    assert!(!v.deleted, "the restore turned into a deletion: {v:?}");
    assert_eq!(v.content, Some(ContentId([7; 32])));
    assert_eq!((v.device, v.replaces), (dev(A), Some(ContentId([9; 32]))));
    // Once: if the value put back is lost as well, it is dropped as any other.
    lost(&mut n, 7);
    let values = n.folder("f").unwrap().doc.values("x");
    assert!(values.len() == 1 && values[0].deleted, "{values:?}");
}

/// A restore is asked for, then the daemon restarts before its version arrives, and no
/// device can provide it: after the restart the file still goes back to the value the
/// restore replaced (the requested versions are stored, `Action::SaveRequested`, before
/// the document's change), not to a deletion. Once the folder is in sync, the stored list
/// is cleared.
#[test]
fn a_restore_that_cannot_come_after_a_restart_is_still_undone() {
    let (mut n, now) = node(A, &[B]);
    scanned(&mut n, now, "x", 7);
    drain(&mut n);
    let restore = file("x", 9).change;
    assert!(n.record_requested(now, "f", &[("x".into(), restore, Some(ContentId([7; 32])))]));
    let (mut shards, mut stored) = (BTreeMap::new(), None);
    for (i, a) in drain(&mut n).into_iter().enumerate() {
        match a {
            Action::SaveRequested { requested, .. } => stored = Some((i, requested)),
            Action::Persist { shards: s, .. } => {
                assert!(
                    stored.as_ref().is_some_and(|(at, _)| *at < i),
                    "stored after the doc"
                );
                shards.extend(s);
            }
            _ => {}
        }
    }
    let (_, stored) = stored.expect("the requested version was not stored");
    assert_eq!(stored.len(), 1);
    let saved: Vec<Vec<u8>> = shards.into_values().collect();
    for restored in [true, false] {
        // The restart: a new node from what was stored.
        let (mut n, now) = node_with(A, &[B], FolderDoc::load(dev(A), &saved).unwrap());
        if restored {
            n.restore_requested(now, "f", stored.clone());
        }
        n.handle_connected(now, B);
        drain(&mut n);
        n.handle_pull_done(now, "f", x_missing(9, false));
        drain(&mut n);
        let values = n.folder("f").unwrap().doc.values("x");
        let [v] = values.as_slice() else {
            panic!("{values:?}")
        };
        if restored {
            assert!(!v.deleted, "the restore turned into a deletion: {v:?}");
            assert_eq!(v.content, Some(ContentId([7; 32])));
        } else {
            assert!(
                v.deleted,
                "without the stored list it is dropped as any other: {v:?}"
            );
        }
    }
    // In sync: the stored list is cleared.
    n.handle_pull_done(now, "f", planned_nothing());
    let cleared = drain(&mut n)
        .into_iter()
        .any(|a| matches!(a, Action::SaveRequested { requested, .. } if requested.is_empty()));
    assert!(cleared, "the stored requested versions were not cleared");
}

/// The one device said to hold a restored version sends wrong chunks for it and is cut
/// off: the restore is undone (the file stays as it was, and syncs so), not left waiting
/// on the liar for ever. Without the violation, a disconnected member may have it.
#[test]
fn a_restore_whose_holder_lied_is_undone_not_left_waiting() {
    for lied in [true, false] {
        let (mut n, now) = node(A, &[B]);
        drain(&mut n);
        scanned(&mut n, now, "x", 7);
        n.handle_connected(now, B);
        let restore = file("x", 9).change;
        n.record_requested(now, "f", &[("x".into(), restore, Some(ContentId([7; 32])))]);
        drain(&mut n);
        let later = now + Duration::from_secs(1);
        if lied {
            n.handle_violation(later, B, Violation::BadChunk, "chunk does not match its id");
        }
        n.handle_disconnected(B);
        drain(&mut n);
        n.handle_pull_done(later, "f", x_missing(9, false));
        drain(&mut n);
        let f = n.folder("f").unwrap();
        let values = f.doc.values("x");
        let current = values.iter().map(|v| v.content).collect::<Vec<_>>();
        if lied {
            assert_eq!(current, [Some(ContentId([7; 32]))], "{values:?}");
            assert!(f.waiting.is_empty(), "{:?}", f.waiting);
        } else {
            assert_eq!(current, [Some(ContentId([9; 32]))], "{values:?}");
            assert_eq!(f.waiting.len(), 1, "an absent member may have it");
        }
    }
}

#[test]
fn a_paused_folder_neither_scans_nor_syncs_but_runs_a_queued_restore() {
    let (mut n, now) = node(A, &[B]);
    settle_start(&mut n, now);
    n.set_paused(now, "f", true);
    n.handle_connected(now, B);
    n.handle_fs_changed(now, "f", None);
    assert!(drain(&mut n).is_empty());
    n.queue_restore(now, "f");
    assert!(matches!(drain(&mut n).as_slice(), [Action::Restore { .. }]));
    n.handle_restore_done(now, "f", true);
    n.set_paused(now, "f", false);
    let a = drain(&mut n);
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Scan { paths: None, .. })),
        "{a:?}"
    );
    assert!(
        a.iter().any(|a| matches!(a, Action::SendMeta { .. })),
        "{a:?}"
    );
}

#[test]
fn a_rescan_is_due_after_the_interval_and_every_few_seconds_without_a_watcher() {
    let (mut n, now) = node(A, &[B]);
    settle_start(&mut n, now);
    n.handle_timeout(now + FALLBACK_RESCAN);
    assert!(
        !drain(&mut n)
            .iter()
            .any(|a| matches!(a, Action::Scan { .. }))
    );
    n.handle_watcher_failed(now + FALLBACK_RESCAN, "f");
    let a = drain(&mut n);
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Scan { paths: None, .. }))
    );
    n.handle_scan_done(now + FALLBACK_RESCAN, "f", Ok(ScanDone::default()));
    drain(&mut n);
    n.handle_timeout(now + 2 * FALLBACK_RESCAN + Duration::from_secs(1));
    assert!(
        drain(&mut n)
            .iter()
            .any(|a| matches!(a, Action::Scan { paths: None, .. }))
    );
}

/// Found by `core/tests/nodes.rs` (seed 1050088998): a meta request lost while the
/// connection stayed up (a stream reset, a timeout) left both devices idle with different
/// documents until the next local change or reconnect; one device waited forever for a
/// conflict copy the other had never heard of.
#[test]
fn a_lost_meta_round_is_started_again_while_the_peer_stays_connected() {
    let (mut n, now) = node(A, &[B]);
    settle_start(&mut n, now);
    n.handle_connected(now, B);
    assert!(
        drain(&mut n)
            .iter()
            .any(|a| matches!(a, Action::SendMeta { .. }))
    );
    n.handle_meta_failed(now, B, "f");
    assert!(
        !drain(&mut n)
            .iter()
            .any(|a| matches!(a, Action::SendMeta { .. }))
    );
    n.handle_timeout(now + META_RETRY);
    assert!(
        drain(&mut n)
            .iter()
            .any(|a| matches!(a, Action::SendMeta { peer: B, .. })),
        "the round starts again"
    );
    // After a disconnect, the reconnect starts it instead.
    n.handle_meta_failed(now, B, "f");
    n.handle_disconnected(B);
    n.handle_timeout(now + 2 * META_RETRY);
    assert!(
        !drain(&mut n)
            .iter()
            .any(|a| matches!(a, Action::SendMeta { .. }))
    );
}

/// A node whose folder has `paths` scanned (windows of 4 paths), with the pass's first
/// pull waiting to be taken.
fn windowed(paths: &[String]) -> (Node<u8>, Instant) {
    let (mut n, now) = node(A, &[B]);
    n.set_pull_window(4);
    drain(&mut n);
    n.handle_scan_done(
        now,
        "f",
        Ok(ScanDone {
            unrecorded: paths.iter().map(|p| file(p, 1)).collect(),
            changed: paths.len(),
            ..ScanDone::default()
        }),
    );
    (n, now)
}

/// Takes the one pull the node asks for: its scope and window.
fn pull_of(n: &mut Node<u8>) -> (BTreeSet<String>, Option<PathRange>) {
    let a = drain(n);
    match a
        .into_iter()
        .rev()
        .find(|a| matches!(a, Action::Pull { .. }))
    {
        Some(Action::Pull { scope, window, .. }) => (scope.expect("a window has a scope"), window),
        other => panic!("expected a pull, got {other:?}"),
    }
}

#[test]
fn a_large_folder_is_pulled_window_by_window_and_in_sync_only_after_the_last() {
    let paths: Vec<String> = (0..40).map(|i| format!("d{}/f{i:02}", i % 3)).collect();
    let (mut n, now) = windowed(&paths);
    let mut covered = BTreeSet::new();
    let mut windows = Vec::new();
    loop {
        let (scope, window) = pull_of(&mut n);
        let window = window.expect("the whole folder is due: a pass");
        for p in &paths {
            if window.contains(p) {
                assert!(scope.contains(p), "{p} in {window:?} but not in its scope");
            }
        }
        covered.extend(scope);
        windows.push(window);
        assert!(!n.folder("f").unwrap().in_sync);
        n.handle_pull_done(now, "f", planned_nothing());
        if n.folder("f").unwrap().in_sync {
            break;
        }
    }
    assert!(windows.len() > 2, "40 paths in windows of 4: {windows:?}");
    for p in &paths {
        assert!(covered.contains(p), "{p} was never planned");
        assert_eq!(windows.iter().filter(|w| w.contains(p)).count(), 1);
    }
    assert!(n.folder("f").unwrap().pass.is_empty());
}

#[test]
fn a_local_path_a_window_did_not_cover_is_planned_next() {
    let paths: Vec<String> = (0..40).map(|i| format!("f{i:02}")).collect();
    let (mut n, now) = windowed(&paths);
    let (_, window) = pull_of(&mut n);
    assert!(window.is_some());
    n.handle_pull_done(
        now,
        "f",
        PullDone {
            planned_nothing: true,
            stray: vec!["not-recorded".into()],
            ..PullDone::default()
        },
    );
    let (scope, _) = pull_of(&mut n);
    assert!(scope.contains("not-recorded"), "{scope:?}");
}

#[test]
fn a_full_scan_during_a_pass_goes_on_from_the_next_window_and_wraps_around() {
    let paths: Vec<String> = (0..40).map(|i| format!("f{i:02}")).collect();
    let (mut n, now) = windowed(&paths);
    let (_, first) = pull_of(&mut n);
    n.handle_pull_done(now, "f", planned_nothing());
    let (_, second) = pull_of(&mut n);
    let second = second.unwrap();
    let total = n.folder("f").unwrap().pass.len() + 2;
    // A full scan while the second window is pulled: the whole folder is due again.
    n.rescan(now, Some("f"));
    n.handle_pull_done(now, "f", planned_nothing());
    let a = drain(&mut n);
    assert!(
        matches!(a.as_slice(), [Action::Scan { paths: None, .. }]),
        "{a:?}"
    );
    n.handle_scan_done(now, "f", Ok(ScanDone::default()));
    let mut order = Vec::new();
    loop {
        let (_, w) = pull_of(&mut n);
        order.push(w.unwrap());
        n.handle_pull_done(now, "f", planned_nothing());
        if n.folder("f").unwrap().in_sync {
            break;
        }
    }
    assert_eq!(order.len(), total, "a whole pass again: {order:?}");
    assert_ne!(order[0], first.unwrap(), "not from the start again");
    assert_eq!(
        order.last(),
        Some(&second),
        "wraps around to where the scan came"
    );
}
