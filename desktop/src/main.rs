//! `cairn-tray`: the desktop tray app. A tray icon whose look says the state, a menu to
//! pause, pair, resolve conflicts and open folders, a status window, and notifications
//! when a conflict appears or a device pairs. It only talks to the daemon's control API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use clap::{Parser, Subcommand};
use ksni::blocking::TrayMethods;

use cairn_desktop::tray::{CairnTray, Page};
use cairn_desktop::view::{Notifier, view};
use cairn_desktop::worker::Worker;
use cairn_desktop::{notify, window};

/// The cairn tray icon and status window.
#[derive(Parser)]
#[command(name = "cairn-tray", version)]
struct Cli {
    /// The daemon's home directory [default: $CAIRN_HOME or ~/.local/share/cairn].
    #[arg(long, global = true)]
    home: Option<PathBuf>,
    /// Open only the status window (no tray icon).
    #[arg(long)]
    window: bool,
    /// The page the status window opens on: status, pair, conflicts or history.
    #[arg(long, default_value = "status", value_parser = parse_page)]
    page: Page,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the tray at login: write ~/.config/autostart/cairn-tray.desktop.
    Install,
}

fn parse_page(s: &str) -> Result<Page, String> {
    Page::parse(s).ok_or_else(|| format!("no page {s:?}; pages: status, pair, conflicts, history"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let explicit_home =
        cli.home.is_some() || std::env::var_os("CAIRN_HOME").is_some_and(|v| !v.is_empty());
    let home = cli.home.clone().unwrap_or_else(cairn_api::paths::data_dir);
    let home_args = cairn_api::launch::home_args(&home, explicit_home);
    let result = match cli.command {
        Some(Cmd::Install) => install(&home_args),
        None if cli.window => run_window(home, explicit_home, cli.page),
        None => run_tray(home, explicit_home, home_args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-tray: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_window(home: PathBuf, explicit_home: bool, page: Page) -> Result<(), String> {
    window::run(
        |ctx| Worker::spawn(home, explicit_home, move |_| ctx.request_repaint()),
        page,
    )
    .map_err(|e| format!("cannot open the status window: {e}"))
}

/// True when a tray host (StatusNotifierWatcher) is on the session bus.
fn tray_host_present(bus: &zbus::blocking::Connection) -> bool {
    bus.call_method(
        Some("org.freedesktop.DBus"),
        "/org/freedesktop/DBus",
        Some("org.freedesktop.DBus"),
        "NameHasOwner",
        &("org.kde.StatusNotifierWatcher",),
    )
    .ok()
    .and_then(|r| r.body().deserialize::<bool>().ok())
    .unwrap_or(false)
}

fn run_tray(home: PathBuf, explicit_home: bool, home_args: Vec<String>) -> Result<(), String> {
    let bus = match zbus::blocking::Connection::session() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cairn-tray: no D-Bus session bus ({e}); showing the status window only");
            return run_window(home, explicit_home, Page::Status);
        }
    };
    let handle: Arc<OnceLock<ksni::blocking::Handle<CairnTray>>> = Arc::new(OnceLock::new());
    let notifier = Mutex::new(Notifier::default());
    let for_worker = handle.clone();
    let notify_bus = bus.clone();
    let worker = Worker::spawn(home.clone(), explicit_home, move |snap| {
        if let Some(h) = for_worker.get() {
            let snap = snap.clone();
            h.update(move |t: &mut CairnTray| t.refresh(&snap));
        }
        let notices = notifier
            .lock()
            .map(|mut n| n.observe(snap.status.as_ref(), snap.conflicts.as_deref()))
            .unwrap_or_default();
        for n in notices {
            if let Err(e) = notify::show(&notify_bus, &n) {
                eprintln!("cairn-tray: notification {:?} not shown: {e}", n.summary);
            }
        }
    });
    let (quit_tx, quit_rx) = mpsc::channel();
    let tray = CairnTray {
        view: view(None, None),
        worker: worker.clone(),
        home_args,
        window: None,
        quit: quit_tx,
    };
    // Stay on the bus even with no tray host yet: one may start later, and the menu can
    // be driven over dbusmenu meanwhile.
    let h = match tray.assume_sni_available(true).spawn() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("cairn-tray: cannot show a tray icon ({e}); showing the status window only");
            return run_window(home, explicit_home, Page::Status);
        }
    };
    let _ = handle.set(h.clone());
    h.update(|t: &mut CairnTray| t.refresh(&worker.snapshot()));
    if !tray_host_present(&bus) {
        eprintln!(
            "cairn-tray: no system tray on this desktop (StatusNotifierWatcher); opening the status window"
        );
        h.update(|t: &mut CairnTray| t.open_window(Page::Status));
    }
    let _ = quit_rx.recv();
    h.update(|t: &mut CairnTray| {
        if let Some(mut w) = t.window.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    });
    h.shutdown().wait();
    Ok(())
}

/// Writes the XDG autostart entry that starts the tray at login.
fn install(home_args: &[String]) -> Result<(), String> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or("neither XDG_CONFIG_HOME nor HOME is set")?;
    let dir = config.join("autostart");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let args: Vec<String> = home_args.iter().map(|a| shell_quote(a)).collect();
    let entry = format!(
        "[Desktop Entry]\nType=Application\nName=cairn\nComment=Peer-to-peer folder sync: tray icon\nExec={} {}\nIcon=emblem-synchronizing\nTerminal=false\nX-GNOME-Autostart-enabled=true\n",
        shell_quote(&exe.display().to_string()),
        args.join(" ")
    );
    let path = dir.join("cairn-tray.desktop");
    std::fs::write(&path, entry.replace(" \n", "\n"))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "wrote {}; the tray starts at your next login",
        path.display()
    );
    Ok(())
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-=".contains(c))
    {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}
