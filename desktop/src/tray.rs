//! The tray icon and its menu (StatusNotifierItem + dbusmenu over D-Bus, via `ksni`).
//! Every item either sends a [`Command`] to the worker or opens the status window; the
//! menu is rebuilt from the view-model whenever a new snapshot arrives.

use std::path::PathBuf;
use std::process::{Child, Command as Process};
use std::sync::mpsc;

use ksni::menu::{StandardItem, SubMenu};
use ksni::{Icon, MenuItem, ToolTip};

use crate::view::{Overall, TrayView, view};
use crate::worker::{Command, Snapshot, Worker};

/// Pages of the status window a menu item can open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    Status,
    Pair,
    Conflicts,
    History,
}

impl Page {
    pub fn name(self) -> &'static str {
        match self {
            Page::Status => "status",
            Page::Pair => "pair",
            Page::Conflicts => "conflicts",
            Page::History => "history",
        }
    }

    pub fn parse(s: &str) -> Option<Page> {
        [Page::Status, Page::Pair, Page::Conflicts, Page::History]
            .into_iter()
            .find(|p| p.name() == s)
    }
}

/// What the tray holds: the current view and the ways to act.
pub struct CairnTray {
    pub view: TrayView,
    pub worker: Worker,
    /// Arguments that point a child process at the same daemon (`--home ...`).
    pub home_args: Vec<String>,
    pub window: Option<Child>,
    pub quit: mpsc::Sender<()>,
}

impl CairnTray {
    pub fn refresh(&mut self, s: &Snapshot) {
        self.view = view(s.status.as_ref(), s.conflicts.as_deref());
    }

    /// Opens the status window on `page`, replacing one already open so it comes to the
    /// front on the page asked for.
    pub fn open_window(&mut self, page: Page) {
        if let Some(mut old) = self.window.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("cairn-tray"));
        match Process::new(exe)
            .args(&self.home_args)
            .args(["--window", "--page", page.name()])
            .spawn()
        {
            Ok(child) => self.window = Some(child),
            Err(e) => eprintln!("cairn-tray: cannot open the status window: {e}"),
        }
    }
}

/// Opens `path` in the desktop's file manager.
pub fn open_folder(path: &str) {
    if let Err(e) = Process::new("xdg-open").arg(path).spawn() {
        eprintln!("cairn-tray: cannot open {path}: {e}");
    }
}

fn item(
    label: impl Into<String>,
    activate: impl Fn(&mut CairnTray) + Send + 'static,
) -> MenuItem<CairnTray> {
    StandardItem {
        label: label.into(),
        activate: Box::new(activate),
        ..Default::default()
    }
    .into()
}

fn line(label: impl Into<String>) -> MenuItem<CairnTray> {
    StandardItem {
        label: label.into(),
        enabled: false,
        ..Default::default()
    }
    .into()
}

impl ksni::Tray for CairnTray {
    fn id(&self) -> String {
        "cairn".into()
    }

    fn title(&self) -> String {
        format!("cairn: {}", self.view.overall.words())
    }

    fn icon_name(&self) -> String {
        self.view.overall.icon().into()
    }

    fn icon_pixmap(&self) -> Vec<Icon> {
        [16, 22, 32, 48]
            .into_iter()
            .map(|size| {
                let p = crate::icon::pixmap(&self.view.overall, size);
                Icon {
                    width: p.size,
                    height: p.size,
                    data: p.argb,
                }
            })
            .collect()
    }

    fn status(&self) -> ksni::Status {
        match self.view.overall {
            Overall::Error(_) => ksni::Status::NeedsAttention,
            _ => ksni::Status::Active,
        }
    }

    fn tool_tip(&self) -> ToolTip {
        ToolTip {
            title: "cairn".into(),
            description: format!(
                "{}\n{} of {} devices online",
                self.view.overall.words(),
                self.view.peers_online,
                self.view.peers_total
            ),
            ..Default::default()
        }
    }

    /// A left click opens the status window.
    fn activate(&mut self, _x: i32, _y: i32) {
        self.open_window(Page::Status);
    }

    fn menu(&self) -> Vec<MenuItem<Self>> {
        let v = &self.view;
        let mut menu = vec![line(v.overall.words()), MenuItem::Separator];
        for f in &v.folders {
            let path = f.path.clone();
            menu.push(
                SubMenu {
                    label: format!("{} — {}", f.id, f.words),
                    submenu: vec![item("Open folder", move |_| open_folder(&path))],
                    ..Default::default()
                }
                .into(),
            );
        }
        if v.overall != Overall::DaemonDown {
            menu.push(line(format!(
                "{} of {} devices online",
                v.peers_online, v.peers_total
            )));
            menu.push(MenuItem::Separator);
            let resume = v.pause_label == "Resume";
            menu.push(item(v.pause_label, move |t| {
                t.worker.send(if resume {
                    Command::Resume
                } else {
                    Command::Pause
                })
            }));
        } else {
            menu.push(item("Start cairn", |t| t.worker.send(Command::StartDaemon)));
        }
        menu.push(item("Pair a new device…", |t| t.open_window(Page::Pair)));
        let conflicts = if v.conflicts > 0 {
            format!("Conflicts ({})…", v.conflicts)
        } else {
            "Conflicts…".into()
        };
        menu.push(item(conflicts, |t| t.open_window(Page::Conflicts)));
        menu.push(item("Versions…", |t| t.open_window(Page::History)));
        menu.push(item("Open status window", |t| t.open_window(Page::Status)));
        menu.push(MenuItem::Separator);
        menu.push(item("Quit tray", |t| {
            let _ = t.quit.send(());
        }));
        menu
    }
}
