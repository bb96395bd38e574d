//! The status window (egui): folders, devices, transfer rates, recent changes, pairing
//! and conflicts. It draws the worker's latest snapshot; clicks become [`Command`]s in
//! an outbox the app hands to the worker, so drawing never waits on the daemon.

use eframe::egui::{self, Color32, RichText, Sense, Ui, Vec2};
use serde_json::Value;

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
}

impl WindowState {
    pub fn new(page: Page) -> Self {
        WindowState {
            snap: Snapshot::default(),
            page,
            join_code: String::new(),
            outbox: Vec::new(),
            open: Vec::new(),
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

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// Draws the whole window into `ui`.
pub fn draw(ui: &mut Ui, st: &mut WindowState) {
    let v = view(st.snap.status.as_ref(), st.snap.conflicts.as_ref());
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
    let folders = status["folders"].as_array().cloned().unwrap_or_default();
    if folders.is_empty() {
        ui.label("No folders yet. Add one with `cairn up <folder>` or accept a share.");
    }
    let items = view(Some(&status), None).folders;
    egui::Grid::new("folders")
        .striped(true)
        .num_columns(6)
        .show(ui, |ui| {
            for (f, item) in folders.iter().zip(items) {
                ui.label(text(f, "id"));
                ui.label(item.words);
                let files = f["files"].as_u64().unwrap_or(0);
                ui.label(format!(
                    "{files} file{}, {}",
                    if files == 1 { "" } else { "s" },
                    bytes(f["bytes"].as_u64().unwrap_or(0))
                ));
                let rate = f["rate_bytes_per_s"].as_u64().unwrap_or(0);
                ui.label(if rate > 0 {
                    format!("{}/s", bytes(rate))
                } else {
                    String::new()
                });
                ui.monospace(text(f, "path"));
                if ui.button("Open folder").clicked() {
                    st.open.push(text(f, "path").to_string());
                }
                ui.end_row();
            }
        });
    ui.add_space(8.0);
    ui.strong("Devices");
    let peers = status["peers"].as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        ui.label("No paired device. Use \"Pair a device\".");
    }
    egui::Grid::new("peers").striped(true).show(ui, |ui| {
        for p in &peers {
            let online = p["connected"] == true;
            ui.horizontal(|ui| {
                dot(
                    ui,
                    if online {
                        [40, 170, 80]
                    } else {
                        [150, 150, 150]
                    },
                );
                ui.label(text(p, "name"));
            });
            ui.label(if online { "online" } else { "offline" });
            ui.monospace(text(p, "id").chars().take(16).collect::<String>());
            ui.end_row();
        }
    });
    ui.add_space(8.0);
    ui.strong("Recent changes");
    let recent = status["recent"].as_array().cloned().unwrap_or_default();
    if recent.is_empty() {
        ui.label("Nothing changed since the daemon started.");
    }
    egui::Grid::new("recent").striped(true).show(ui, |ui| {
        for r in recent.iter().take(50) {
            ui.label(ago(r["at"].as_u64().unwrap_or(0)));
            ui.label(text(r, "folder"));
            ui.label(text(r, "path"));
            ui.label(format!(
                "{} ({})",
                text(r, "change"),
                if text(r, "origin") == "local" {
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
    let list = st
        .snap
        .conflicts
        .as_ref()
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        ui.label("No conflicts.");
        return;
    }
    for c in &list {
        ui.group(|ui| {
            ui.strong(format!(
                "{} (folder {})",
                text(c, "original"),
                text(c, "folder")
            ));
            ui.label(format!(
                "At the name: from {}. Conflict copy {}: from {}.",
                c["original_device"].as_str().unwrap_or("?"),
                text(c, "copy"),
                text(c, "copy_device")
            ));
            ui.horizontal(|ui| {
                for (label, keep) in [
                    ("Keep local", "local"),
                    ("Keep remote", "remote"),
                    ("Keep both", "both"),
                ] {
                    if ui.button(label).clicked() {
                        st.outbox.push(Command::Resolve {
                            path: text(c, "copy").to_string(),
                            keep: keep.into(),
                        });
                    }
                }
            });
        });
    }
}

fn history_page(ui: &mut Ui, st: &mut WindowState) {
    let Some(list) = st.snap.history.as_ref().and_then(Value::as_array).cloned() else {
        ui.label("Asking the daemon for kept versions…");
        return;
    };
    ui.label(
        "When another device replaces or deletes a file, the version this device had is \
         kept here. Restoring puts it back on every device and keeps the version it replaces.",
    );
    if list.is_empty() {
        ui.label("No kept versions yet.");
        return;
    }
    egui::Grid::new("history")
        .striped(true)
        .num_columns(5)
        .show(ui, |ui| {
            for v in &list {
                let id = text(v, "content");
                ui.label(text(v, "path"));
                ui.label(format!("folder {}", text(v, "folder")));
                ui.label(kept_at(v["kept_ns"].as_i64().unwrap_or(0)));
                ui.label(bytes(v["size"].as_u64().unwrap_or(0)));
                let available = v["available"] == true;
                let button = ui.add_enabled(
                    available,
                    egui::Button::new(format!("Restore {}", id.get(..8).unwrap_or(id))),
                );
                if button.clicked() {
                    st.outbox.push(Command::Restore {
                        folder: text(v, "folder").to_string(),
                        path: text(v, "path").to_string(),
                        version: id.to_string(),
                    });
                }
                ui.end_row();
            }
        });
}

/// `2026-11-30 06:22 UTC`.
fn kept_at(ns: i64) -> String {
    let t = cairn_core::folder::tree::UtcTime::from_ns(ns);
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
    use egui_kittest::Harness;
    use egui_kittest::kittest::Queryable;
    use serde_json::json;

    fn up_status(paused: bool) -> Value {
        json!({
            "device_id": "d", "device_name": "desk", "offers": [],
            "folders": [{ "id": "docs", "path": "/home/me/docs", "state": if paused { "paused" } else { "idle" },
                          "in_sync": true, "files": 3, "bytes": 12_500_000, "pull_bytes_total": 0,
                          "pull_bytes_done": 0, "rate_bytes_per_s": 0, "last_error": null }],
            "peers": [{ "id": "12D3KooWabc", "name": "laptop", "connected": true }],
            "recent": [{ "at": 0, "folder": "docs", "path": "notes.txt", "change": "modified", "origin": "local" }]
        })
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
        st.snap.conflicts = Some(json!([]));
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
        st.snap.conflicts = Some(json!([{ "folder": "docs", "original": "a.txt",
            "copy": "a.sync-conflict-20261122-101010-ABCD.txt", "copy_device": "laptop",
            "original_device": "desk" }]));
        let mut h = harness(st);
        h.get_by_label("Conflicts (1)");
        h.get_by_label("Keep both").click();
        h.run();
        assert_eq!(
            h.state().outbox,
            vec![Command::Resolve {
                path: "a.sync-conflict-20261122-101010-ABCD.txt".into(),
                keep: "both".into()
            }]
        );
    }

    #[test]
    fn versions_are_listed_and_restored_as_the_cli_does() {
        let mut st = WindowState::new(Page::History);
        st.snap.status = Some(up_status(false));
        let id = "619e7b5eb7".to_string() + &"0".repeat(54);
        st.snap.history = Some(json!([
            { "folder": "docs", "path": "plan.txt", "kept_ns": 1_764_483_720_000_000_000i64,
              "content": id, "size": 25, "available": true },
            { "folder": "docs", "path": "gone.txt", "kept_ns": 1_764_483_000_000_000_000i64,
              "content": "ab".repeat(32), "size": 7, "available": false }
        ]));
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
}
