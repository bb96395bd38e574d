//! The status window (egui): folders, devices, transfer rates, recent changes, pairing
//! and conflicts. It draws the worker's latest snapshot; clicks become [`Command`]s in
//! an outbox the app hands to the worker, so drawing never waits on the daemon.

use cairn_api::conflicts::Keep;
use cairn_api::time::UtcTime;
use eframe::egui::{self, Color32, RichText, Sense, Ui, Vec2};

use crate::tray::Page;
use crate::view::{Overall, bytes, view};
use crate::worker::{Command, Pairing, Snapshot, Worker};

/// Everything one frame draws from, and what it asks for.
#[derive(Debug)]
pub struct WindowState {
    pub snap: Snapshot,
    pub page: Page,
    /// The code the user is typing on the pair page.
    pub join_code: String,
    /// Commands clicked this frame, for the worker.
    pub outbox: Vec<Command>,
    /// Folders the user asked to open.
    pub open: Vec<String>,
    /// The Versions page's rewind: which folder, to when (as typed), exact or not.
    pub rewind_folder: String,
    pub rewind_at: String,
    pub rewind_exact: bool,
}

impl WindowState {
    pub fn new(page: Page) -> Self {
        WindowState {
            snap: Snapshot::default(),
            page,
            join_code: String::new(),
            outbox: Vec::new(),
            open: Vec::new(),
            rewind_folder: String::new(),
            rewind_at: String::new(),
            rewind_exact: false,
        }
    }
}

/// A coloured dot (egui's default fonts have no ●).
fn dot(ui: &mut Ui, rgb: [u8; 3]) {
    let (rect, _) = ui.allocate_exact_size(Vec2::splat(14.0), Sense::hover());
    ui.painter().circle_filled(
        rect.center(),
        6.0,
        Color32::from_rgb(rgb[0], rgb[1], rgb[2]),
    );
}

/// Draws the whole window into `ui`.
pub fn draw(ui: &mut Ui, st: &mut WindowState) {
    let v = view(st.snap.status.as_ref(), st.snap.conflicts.as_deref());
    ui.horizontal(|ui| {
        dot(ui, v.overall.rgb());
        ui.heading(v.overall.words());
    });
    if v.overall == Overall::DaemonDown {
        if let Some(why) = &st.snap.down {
            ui.weak(why);
        }
        if ui.button("Start cairn").clicked() {
            st.outbox.push(Command::StartDaemon);
        }
    } else {
        ui.horizontal(|ui| {
            ui.label(format!(
                "{} of {} devices online",
                v.peers_online, v.peers_total
            ));
            if ui.button(v.pause_label).clicked() {
                st.outbox.push(if v.pause_label == "Resume" {
                    Command::Resume
                } else {
                    Command::Pause
                });
            }
            if ui.button("Rescan").clicked() {
                st.outbox.push(Command::Rescan);
            }
        });
    }
    if let Some(m) = &st.snap.message {
        ui.label(RichText::new(m).italics());
    }
    ui.separator();
    ui.horizontal(|ui| {
        ui.selectable_value(&mut st.page, Page::Status, "Status");
        ui.selectable_value(&mut st.page, Page::Pair, "Pair a device");
        let conflicts = if v.conflicts > 0 {
            format!("Conflicts ({})", v.conflicts)
        } else {
            "Conflicts".into()
        };
        ui.selectable_value(&mut st.page, Page::Conflicts, conflicts);
        ui.selectable_value(&mut st.page, Page::History, "Versions");
    });
    ui.separator();
    egui::ScrollArea::vertical()
        .auto_shrink(false)
        .show(ui, |ui| match st.page {
            Page::Status => status_page(ui, st),
            Page::Pair => pair_page(ui, st),
            Page::Conflicts => conflicts_page(ui, st),
            Page::History => history_page(ui, st),
        });
}

fn status_page(ui: &mut Ui, st: &mut WindowState) {
    let Some(status) = st.snap.status.clone() else {
        ui.label("The daemon is not running, so there is nothing to show yet.");
        return;
    };
    ui.strong("Folders");
    if status.folders.is_empty() {
        ui.label("No folders yet. Add one with `cairn up <folder>` or accept a share.");
    }
    let items = view(Some(&status), None).folders;
    egui::Grid::new("folders")
        .striped(true)
        .num_columns(6)
        .show(ui, |ui| {
            for (f, item) in status.folders.iter().zip(items) {
                ui.label(&f.id);
                ui.label(item.words);
                ui.label(format!(
                    "{} file{}, {}",
                    f.files,
                    if f.files == 1 { "" } else { "s" },
                    bytes(f.bytes)
                ));
                ui.label(if f.rate_bytes_per_s > 0 {
                    format!("{}/s", bytes(f.rate_bytes_per_s))
                } else {
                    String::new()
                });
                ui.monospace(&item.path);
                if ui.button("Open folder").clicked() {
                    st.open.push(item.path.clone());
                }
                ui.end_row();
            }
        });
    ui.add_space(8.0);
    ui.strong("Devices");
    if status.peers.is_empty() {
        ui.label("No paired device. Use \"Pair a device\".");
    }
    egui::Grid::new("peers").striped(true).show(ui, |ui| {
        for p in &status.peers {
            ui.horizontal(|ui| {
                dot(
                    ui,
                    if p.connected {
                        [40, 170, 80]
                    } else {
                        [150, 150, 150]
                    },
                );
                ui.label(&p.name);
            });
            ui.label(if p.connected { "online" } else { "offline" });
            ui.monospace(p.id.chars().take(16).collect::<String>());
            ui.end_row();
        }
    });
    ui.add_space(8.0);
    ui.strong("Recent changes");
    if status.recent.is_empty() {
        ui.label("Nothing changed since the daemon started.");
    }
    egui::Grid::new("recent").striped(true).show(ui, |ui| {
        for r in status.recent.iter().take(50) {
            ui.label(ago(r.at));
            ui.label(&r.folder);
            ui.label(&r.path);
            ui.label(format!(
                "{} ({})",
                r.change,
                if r.origin == "local" {
                    "here"
                } else {
                    "from a peer"
                }
            ));
            ui.end_row();
        }
    });
}

fn ago(at: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match now.saturating_sub(at) {
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s => format!("{} h ago", s / 3600),
    }
}

fn pair_page(ui: &mut Ui, st: &mut WindowState) {
    ui.label("Pair this device with another one: show a code here and type it there, or type the other device's code here.");
    ui.add_space(6.0);
    match &st.snap.pairing {
        Pairing::Waiting { code, expires_in_s } => {
            ui.label("On the other device, enter this code (or run `cairn pair <code>`):");
            ui.label(RichText::new(code).size(28.0).monospace().strong());
            ui.weak(format!(
                "Valid for {} more minutes, for one attempt. Waiting…",
                expires_in_s.div_ceil(60)
            ));
        }
        Pairing::Starting => {
            ui.label("Asking the daemon for a code…");
        }
        Pairing::Joining => {
            ui.label("Joining… (the other device must be online)");
        }
        Pairing::Paired { name } => {
            ui.label(RichText::new(format!("Paired with {name}.")).strong());
        }
        Pairing::Failed(e) => {
            ui.colored_label(
                Color32::from_rgb(210, 45, 45),
                format!("Pairing failed: {e}"),
            );
        }
        Pairing::Idle => {}
    }
    let busy = matches!(
        st.snap.pairing,
        Pairing::Waiting { .. } | Pairing::Starting | Pairing::Joining
    );
    let up = st.snap.status.is_some();
    ui.add_space(6.0);
    if ui
        .add_enabled(up && !busy, egui::Button::new("Show a code"))
        .clicked()
    {
        st.outbox.push(Command::Invite);
    }
    ui.add_space(6.0);
    ui.horizontal(|ui| {
        ui.label("Code from the other device:");
        ui.text_edit_singleline(&mut st.join_code);
        let ready = up && !busy && !st.join_code.trim().is_empty();
        if ui.add_enabled(ready, egui::Button::new("Join")).clicked() {
            st.outbox
                .push(Command::Join(st.join_code.trim().to_string()));
        }
    });
}

fn conflicts_page(ui: &mut Ui, st: &mut WindowState) {
    let list = st.snap.conflicts.clone().unwrap_or_default();
    if list.is_empty() {
        ui.label("No conflicts.");
        return;
    }
    for c in &list {
        ui.group(|ui| {
            ui.strong(format!("{} (folder {})", c.original, c.folder));
            ui.label(format!(
                "At the name: from {}. Conflict copy {}: from {}.",
                c.original_device.as_deref().unwrap_or("?"),
                c.copy,
                c.copy_device
            ));
            ui.horizontal(|ui| {
                for (label, keep) in [
                    ("Keep local", Keep::Local),
                    ("Keep remote", Keep::Remote),
                    ("Keep both", Keep::Both),
                ] {
                    if ui.button(label).clicked() {
                        st.outbox.push(Command::Resolve {
                            path: c.copy.clone(),
                            keep,
                        });
                    }
                }
            });
        });
    }
}

/// "Rewind folder to…": a folder and a moment, a dry run's list, then the rewind.
fn rewind_section(ui: &mut Ui, st: &mut WindowState) {
    let folders: Vec<String> = st
        .snap
        .status
        .as_ref()
        .map(|s| s.folders.iter().map(|f| f.id.clone()).collect())
        .unwrap_or_default();
    if folders.is_empty() {
        return;
    }
    if !folders.contains(&st.rewind_folder) {
        st.rewind_folder = folders[0].clone();
    }
    ui.heading("Rewind folder to…");
    ui.horizontal(|ui| {
        egui::ComboBox::from_id_salt("rewind-folder")
            .selected_text(st.rewind_folder.clone())
            .show_ui(ui, |ui| {
                for f in &folders {
                    ui.selectable_value(&mut st.rewind_folder, f.clone(), f);
                }
            });
        ui.label("to");
        ui.add(
            egui::TextEdit::singleline(&mut st.rewind_at)
                .hint_text("2026-12-04 15:30 (UTC), or 2h ago as 2h")
                .desired_width(220.0),
        );
        ui.checkbox(&mut st.rewind_exact, "also remove files created since");
    });
    let at = cairn_api::time::parse_when(&st.rewind_at, cairn_api::time::now_ns());
    if let Err(why) = &at
        && !st.rewind_at.trim().is_empty()
    {
        ui.weak(why);
    }
    if ui
        .add_enabled(at.is_ok(), egui::Button::new("Preview the rewind"))
        .clicked()
        && let Ok(at_ns) = at
    {
        st.outbox.push(Command::Rewind {
            folder: st.rewind_folder.clone(),
            at_ns,
            exact: st.rewind_exact,
            dry_run: true,
        });
    }
    let Some(preview) = st.snap.rewind_preview.clone() else {
        return;
    };
    let changing: Vec<_> = preview
        .steps
        .iter()
        .filter(|s| s.action != "keep")
        .collect();
    let unavailable = preview.steps.iter().filter(|s| !s.available).count();
    ui.label(format!(
        "Rewinding {} to {} changes {} path{} ({} to fetch from other devices){}:",
        preview.folder,
        kept_at(preview.at_ns),
        changing.len(),
        if changing.len() == 1 { "" } else { "s" },
        bytes(preview.bytes_to_fetch),
        if unavailable > 0 {
            format!("; {unavailable} held by no connected device")
        } else {
            String::new()
        }
    ));
    egui::Grid::new("rewind-steps")
        .striped(true)
        .num_columns(3)
        .show(ui, |ui| {
            for s in preview.steps.iter().take(200) {
                ui.label(&s.action);
                ui.label(&s.path);
                ui.label(if s.content.is_some() {
                    bytes(s.size)
                } else {
                    String::new()
                });
                ui.end_row();
            }
        });
    if preview.steps.len() > 200 {
        ui.weak(format!("… and {} more", preview.steps.len() - 200));
    }
    let exact = preview.steps.iter().any(|s| s.action == "remove");
    if ui
        .add_enabled(
            !changing.is_empty() && unavailable == 0,
            egui::Button::new(format!("Rewind {}", preview.folder)),
        )
        .clicked()
    {
        st.outbox.push(Command::Rewind {
            folder: preview.folder.clone(),
            at_ns: preview.at_ns,
            exact,
            dry_run: false,
        });
    }
    ui.separator();
}

fn history_page(ui: &mut Ui, st: &mut WindowState) {
    rewind_section(ui, st);
    let Some(list) = st.snap.history.clone() else {
        ui.label("Asking the daemon for kept versions…");
        return;
    };
    ui.label(
        "Every earlier version the group knows of, and the devices that hold it. Restoring \
         puts it back on every device (fetched from a device that holds it) and keeps the \
         version it replaces.",
    );
    if list.is_empty() {
        ui.label("No earlier versions yet.");
        return;
    }
    egui::Grid::new("history")
        .striped(true)
        .num_columns(6)
        .show(ui, |ui| {
            for v in &list {
                let id = &v.content;
                ui.label(&v.path);
                ui.label(format!("folder {}", v.folder));
                ui.label(kept_at(v.kept_ns));
                ui.label(bytes(v.size));
                ui.label(cairn_api::history::held_by(&v.holders));
                let button = ui.add_enabled(
                    v.available || v.holders.iter().any(|h| h.online),
                    egui::Button::new(format!("Restore {}", id.get(..8).unwrap_or(id))),
                );
                if button.clicked() {
                    st.outbox.push(Command::Restore {
                        folder: v.folder.clone(),
                        path: v.path.clone(),
                        version: id.clone(),
                    });
                }
                ui.end_row();
            }
        });
}

/// `2026-11-30 06:22 UTC`.
fn kept_at(ns: i64) -> String {
    let t = UtcTime::from_ns(ns);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute
    )
}

/// The eframe app: the worker plus the window state.
pub struct StatusWindow {
    pub worker: Worker,
    pub state: WindowState,
}

impl eframe::App for StatusWindow {
    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        self.state.snap = self.worker.snapshot();
        egui::Frame::central_panel(ui.style()).show(ui, |ui| draw(ui, &mut self.state));
        // The group's history is read from every folder's change log: only while shown.
        self.worker.show_history(self.state.page == Page::History);
        for c in self.state.outbox.drain(..) {
            self.worker.send(c);
        }
        for path in self.state.open.drain(..) {
            crate::tray::open_folder(&path);
        }
    }
}

/// Runs the status window until it is closed.
pub fn run(worker_for: impl FnOnce(egui::Context) -> Worker, page: Page) -> eframe::Result {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("cairn")
            .with_app_id("cairn")
            .with_inner_size([760.0, 520.0]),
        ..Default::default()
    };
    eframe::run_native(
        "cairn",
        options,
        Box::new(move |cc| {
            let worker = worker_for(cc.egui_ctx.clone());
            Ok(Box::new(StatusWindow {
                worker,
                state: WindowState::new(page),
            }))
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_api::conflicts::Conflict;
    use cairn_api::history::Version;
    use cairn_api::status::{FolderStatus, PeerStatus, RecentChange, Status};
    use egui_kittest::Harness;
    use egui_kittest::kittest::Queryable;

    fn up_status(paused: bool) -> Status {
        Status {
            device_id: "d".into(),
            device_name: "desk".into(),
            folders: vec![FolderStatus {
                id: "docs".into(),
                path: "/home/me/docs".into(),
                state: if paused { "paused" } else { "idle" }.into(),
                in_sync: true,
                files: 3,
                bytes: 12_500_000,
                ..FolderStatus::default()
            }],
            peers: vec![PeerStatus {
                id: "12D3KooWabc".into(),
                name: "laptop".into(),
                connected: true,
                ..PeerStatus::default()
            }],
            recent: vec![RecentChange {
                at: 0,
                folder: "docs".into(),
                path: "notes.txt".into(),
                change: "modified".into(),
                origin: "local".into(),
            }],
            ..Status::default()
        }
    }

    fn harness(state: WindowState) -> Harness<'static, WindowState> {
        Harness::new_ui_state(|ui, st: &mut WindowState| draw(ui, st), state)
    }

    #[test]
    fn daemon_down_offers_to_start_it() {
        let mut st = WindowState::new(Page::Status);
        st.snap.down = Some("the daemon is not running".into());
        let mut h = harness(st);
        h.get_by_label("cairn is not running");
        h.get_by_label("Start cairn").click();
        h.run();
        assert_eq!(h.state().outbox, vec![Command::StartDaemon]);
    }

    #[test]
    fn status_shows_folders_devices_and_recent_changes_and_pauses() {
        let mut st = WindowState::new(Page::Status);
        st.snap.status = Some(up_status(false));
        st.snap.conflicts = Some(vec![]);
        let mut h = harness(st);
        h.get_by_label("Up to date");
        h.get_by_label("/home/me/docs");
        h.get_by_label("3 files, 12.5 MB");
        h.get_by_label("laptop");
        h.get_by_label("notes.txt");
        h.get_by_label("1 of 1 devices online");
        h.get_by_label("Pause").click();
        h.run();
        assert_eq!(h.state().outbox, vec![Command::Pause]);
        h.state_mut().outbox.clear();
        h.state_mut().snap.status = Some(up_status(true));
        h.run();
        h.get_by_label("Resume").click();
        h.run();
        assert_eq!(h.state().outbox, vec![Command::Resume]);
    }

    #[test]
    fn pairing_shows_the_code_and_joins_with_a_typed_one() {
        let mut st = WindowState::new(Page::Pair);
        st.snap.status = Some(up_status(false));
        let mut h = harness(st);
        h.get_by_label("Show a code").click();
        h.run();
        assert_eq!(h.state().outbox, vec![Command::Invite]);
        h.state_mut().outbox.clear();
        h.state_mut().join_code = " 7-guitar-ginger ".into();
        h.run();
        h.get_by_label("Join").click();
        h.run();
        assert_eq!(
            h.state().outbox,
            vec![Command::Join("7-guitar-ginger".into())]
        );
        h.state_mut().snap.pairing = Pairing::Waiting {
            code: "12-apple-river".into(),
            expires_in_s: 600,
        };
        h.run();
        h.get_by_label("12-apple-river");
    }

    #[test]
    fn conflicts_resolve_as_the_cli_does() {
        let mut st = WindowState::new(Page::Conflicts);
        st.snap.status = Some(up_status(false));
        st.snap.conflicts = Some(vec![Conflict {
            folder: "docs".into(),
            original: "a.txt".into(),
            copy: "a.sync-conflict-20261122-101010-ABCD.txt".into(),
            copy_device: "laptop".into(),
            original_device: Some("desk".into()),
            ..Conflict::default()
        }]);
        let mut h = harness(st);
        h.get_by_label("Conflicts (1)");
        h.get_by_label("Keep both").click();
        h.run();
        assert_eq!(
            h.state().outbox,
            vec![Command::Resolve {
                path: "a.sync-conflict-20261122-101010-ABCD.txt".into(),
                keep: Keep::Both
            }]
        );
    }

    #[test]
    fn versions_are_listed_and_restored_as_the_cli_does() {
        let mut st = WindowState::new(Page::History);
        st.snap.status = Some(up_status(false));
        let id = "619e7b5eb7".to_string() + &"0".repeat(54);
        st.snap.history = Some(vec![
            Version {
                folder: "docs".into(),
                path: "plan.txt".into(),
                kept_ns: 1_764_483_720_000_000_000,
                content: id.clone(),
                size: 25,
                available: true,
                ..Version::default()
            },
            Version {
                folder: "docs".into(),
                path: "gone.txt".into(),
                kept_ns: 1_764_483_000_000_000_000,
                content: "ab".repeat(32),
                size: 7,
                available: false,
                ..Version::default()
            },
        ]);
        let mut h = harness(st);
        h.get_by_label("plan.txt");
        h.get_by_label("gone.txt");
        h.get_by_label("2025-11-30 06:22 UTC");
        h.get_by_label("Restore abababab").click();
        h.run();
        assert!(
            h.state().outbox.is_empty(),
            "a version whose bytes are gone restored"
        );
        h.get_by_label("Restore 619e7b5e").click();
        h.run();
        assert_eq!(
            h.state().outbox,
            vec![Command::Restore {
                folder: "docs".into(),
                path: "plan.txt".into(),
                version: id
            }]
        );
    }

    #[test]
    fn a_rewind_is_previewed_then_carried_out_as_the_cli_does() {
        let mut st = WindowState::new(Page::History);
        st.snap.status = Some(up_status(false));
        st.snap.history = Some(Vec::new());
        let mut h = harness(st);
        h.run();
        // Nothing parses yet: no preview.
        h.get_by_label("Preview the rewind").click();
        h.run();
        assert!(h.state().outbox.is_empty(), "previewed without a time");
        h.state_mut().rewind_at = "2026-12-04 15:30".into();
        h.run();
        h.get_by_label("Preview the rewind").click();
        h.run();
        let at_ns = cairn_api::time::parse_when("2026-12-04T15:30:00Z", 0).unwrap();
        assert_eq!(
            std::mem::take(&mut h.state_mut().outbox),
            vec![Command::Rewind {
                folder: "docs".into(),
                at_ns,
                exact: false,
                dry_run: true,
            }]
        );
        // The daemon's dry run is listed; the rewind button carries it out.
        h.state_mut().snap.rewind_preview = Some(cairn_api::history::Rewound {
            folder: "docs".into(),
            at_ns,
            dry_run: true,
            steps: vec![
                cairn_api::history::RewindStep {
                    path: "photos/a.jpg".into(),
                    action: "recreate".into(),
                    content: Some("ab".repeat(32)),
                    size: 2048,
                    available: true,
                },
                cairn_api::history::RewindStep {
                    path: "new.txt".into(),
                    action: "keep".into(),
                    content: None,
                    size: 0,
                    available: true,
                },
            ],
            bytes_to_fetch: 2048,
            note: None,
        });
        h.run();
        h.get_by_label("photos/a.jpg");
        h.get_by_label("Rewind docs").click();
        h.run();
        assert_eq!(
            h.state().outbox,
            vec![Command::Rewind {
                folder: "docs".into(),
                at_ns,
                exact: false,
                dry_run: false,
            }]
        );
    }
}
