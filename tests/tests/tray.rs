//! `cairn-tray` end to end: a real daemon, the real tray binary on a private X server
//! (Xvfb) and D-Bus session bus. The menu is read and pressed over dbusmenu exactly as a
//! desktop's tray host does; the daemon's own state must change; the status window is
//! captured as a PNG under `target/`; a pairing must raise a desktop notification, seen by
//! a notification server this test puts on the bus.
//!
//! Needs Xvfb, dbus-daemon, busctl, xdotool and ImageMagick: `.ci/deps` installs them.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use cairn_tests::{
    DaemonSpec, PRIVATE_NETWORK_ONLY, assert_success, bin, free_port, wait_until, workspace_root,
};
use serde_json::Value;

fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed; the tray test needs Xvfb, D-Bus, xdotool and ImageMagick: run .ci/deps"
    );
}

/// A private X server and session bus, stopped by PID when dropped.
struct Desktop {
    display: String,
    bus: String,
    xvfb: Child,
    dbus: Child,
}

impl Desktop {
    fn start() -> Desktop {
        for tool in [
            "Xvfb",
            "dbus-daemon",
            "busctl",
            "xdotool",
            "import",
            "convert",
        ] {
            require(tool);
        }
        // A display number nobody uses.
        let n = (100 + std::process::id() % 800..)
            .take(200)
            .find(|n| !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists())
            .expect("a free X display");
        let display = format!(":{n}");
        let xvfb = Command::new("Xvfb")
            .args([&display, "-screen", "0", "1024x768x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb starts");
        assert!(
            wait_until(20, || Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()),
            "Xvfb did not come up"
        );
        let mut dbus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon starts");
        let mut bus = String::new();
        BufReader::new(dbus.stdout.take().unwrap())
            .read_line(&mut bus)
            .expect("bus address");
        Desktop {
            display,
            bus: bus.trim().to_string(),
            xvfb,
            dbus,
        }
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("DISPLAY", &self.display)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus);
        c
    }

    /// `busctl --json=short ...` on the private bus.
    fn busctl(&self, args: &[&str]) -> Value {
        let out = self
            .cmd("busctl")
            .arg(format!("--address={}", self.bus))
            .arg("--json=short")
            .args(args)
            .output()
            .expect("busctl runs");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        for c in [&mut self.xvfb, &mut self.dbus] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The tray process and whatever it started (its status window), killed as one
/// process group by PID when dropped.
struct Tray(Child);

impl Drop for Tray {
    fn drop(&mut self) {
        // procps' kill reads `-KILL -PID` as two signals: the group needs `-s KILL -- -PID`.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A desktop notification server (`org.freedesktop.Notifications`) on the test's bus that
/// records what it is asked to show, as a desktop's notification daemon would receive it.
struct Notifications(Arc<Mutex<Vec<String>>>);

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Notifications {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        _app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        _hints: HashMap<String, zbus::zvariant::OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut shown = self.0.lock().unwrap();
        shown.push(format!("{summary}: {body}"));
        shown.len() as u32
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["body".into()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "cairn-test".into(),
            "cairn".into(),
            "0".into(),
            "1.2".into(),
        )
    }

    fn close_notification(&self, _id: u32) {}
}

/// Starts the notification server on `bus`; keep the connection alive while it is needed.
fn notification_server(bus: &str) -> (zbus::blocking::Connection, Arc<Mutex<Vec<String>>>) {
    let shown = Arc::new(Mutex::new(Vec::new()));
    let connection = zbus::blocking::connection::Builder::address(bus)
        .unwrap()
        .name("org.freedesktop.Notifications")
        .unwrap()
        .serve_at(
            "/org/freedesktop/Notifications",
            Notifications(shown.clone()),
        )
        .unwrap()
        .build()
        .expect("the notification server joins the bus");
    (connection, shown)
}

/// A daemon started with `cairn up`, killed by the PID in its control.json when dropped.
struct Background(PathBuf);

impl Drop for Background {
    fn drop(&mut self) {
        cairn_tests::kill_daemon_of(&self.0);
    }
}

/// The bus name of the tray's StatusNotifierItem, once it is on the bus.
fn item_name(d: &Desktop) -> Option<String> {
    let names = d.busctl(&[
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "ListNames",
    ]);
    names["data"][0]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find(|n| n.starts_with("org.kde.StatusNotifierItem-"))
        .map(str::to_string)
}

fn icon_name(d: &Desktop, item: &str) -> String {
    d.busctl(&[
        "get-property",
        item,
        "/StatusNotifierItem",
        "org.kde.StatusNotifierItem",
        "IconName",
    ])["data"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Every (id, label, enabled) of the tray's menu, depth first, as a tray host sees it.
fn menu(d: &Desktop, item: &str) -> Vec<(i64, String, bool)> {
    fn walk(node: &Value, out: &mut Vec<(i64, String, bool)>) {
        let (Some(id), props) = (node[0].as_i64(), &node[1]) else {
            return;
        };
        if let Some(label) = props["label"]["data"].as_str() {
            let enabled = props["enabled"]["data"].as_bool().unwrap_or(true);
            out.push((id, label.to_string(), enabled));
        }
        for child in node[2].as_array().into_iter().flatten() {
            walk(&child["data"], out);
        }
    }
    let layout = d.busctl(&[
        "call",
        item,
        "/MenuBar",
        "com.canonical.dbusmenu",
        "GetLayout",
        "iias",
        "--",
        "0",
        "-1",
        "0",
    ]);
    let mut out = Vec::new();
    walk(&layout["data"][1], &mut out);
    out
}

/// Presses the menu item labelled `label`, as a tray host does on a click.
fn click(d: &Desktop, item: &str, label: &str) {
    let items = menu(d, item);
    let (id, _, enabled) = items
        .iter()
        .find(|(_, l, _)| l == label)
        .unwrap_or_else(|| panic!("no menu item {label:?} in {items:?}"));
    assert!(enabled, "{label:?} is disabled");
    let out = d
        .cmd("busctl")
        .arg(format!("--address={}", d.bus))
        .args([
            "call",
            item,
            "/MenuBar",
            "com.canonical.dbusmenu",
            "Event",
            "isvu",
            &id.to_string(),
            "clicked",
            "s",
            "",
            "0",
        ])
        .output()
        .unwrap();
    assert_success(&out);
}

fn folder_state(daemon: &cairn_tests::Daemon) -> String {
    daemon.status()["folders"][0]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn artifact_dir() -> PathBuf {
    let dir = workspace_root().join("target/tray-e2e");
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn tray_pauses_and_resumes_the_daemon_shows_its_window_and_notifies_a_pairing() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = DaemonSpec::new(tmp.path(), "alpha").start(&[]);
    fs::write(daemon.folder.join("hello.txt"), b"hello").unwrap();
    let desktop = Desktop::start();
    let (_server, shown) = notification_server(&desktop.bus);
    let mut cmd = desktop.cmd(bin("cairn-tray").to_str().unwrap());
    cmd.arg("--home")
        .arg(&daemon.home)
        .stdout(Stdio::null())
        .stderr(fs::File::create(tmp.path().join("tray.log")).unwrap());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let _tray = Tray(cmd.spawn().expect("cairn-tray starts"));
    let tray_log = || fs::read_to_string(tmp.path().join("tray.log")).unwrap_or_default();

    // The item appears on the bus and its icon says the daemon's state.
    let mut item = None;
    assert!(
        wait_until(30, || {
            item = item_name(&desktop);
            item.is_some()
        }),
        "no StatusNotifierItem on the bus; tray log: {}",
        tray_log()
    );
    let item = item.unwrap();
    assert!(
        wait_until(20, || icon_name(&desktop, &item) == "emblem-default"),
        "icon {:?}, menu {:?}",
        icon_name(&desktop, &item),
        menu(&desktop, &item)
    );
    let wanted = [
        "Up to date",
        "shared — up to date",
        "Open folder",
        "0 of 0 devices online",
        "Pause",
        "Pair a new device…",
        "Conflicts…",
        "Versions…",
        "Open status window",
        "Quit tray",
    ];
    // The icon can say "up to date" a poll before the folder's first pull has said it is
    // in sync (the menu then reads "waiting for peers"; seen once under a full test run).
    wait_until(20, || {
        let labels: Vec<String> = menu(&desktop, &item).into_iter().map(|m| m.1).collect();
        wanted.iter().all(|w| labels.iter().any(|l| l == w))
    });
    let labels: Vec<String> = menu(&desktop, &item).into_iter().map(|m| m.1).collect();
    for expected in wanted {
        assert!(
            labels.iter().any(|l| l == expected),
            "{expected:?} missing from {labels:?}"
        );
    }

    // Pause through the tray's own menu: the daemon pauses, the tray follows.
    click(&desktop, &item, "Pause");
    assert!(
        wait_until(20, || folder_state(&daemon) == "paused"),
        "daemon not paused: {}",
        daemon.status()
    );
    assert!(
        wait_until(20, || icon_name(&desktop, &item) == "media-playback-pause"
            && menu(&desktop, &item).iter().any(|m| m.1 == "Resume")),
        "tray did not show the pause: {:?}",
        menu(&desktop, &item)
    );
    click(&desktop, &item, "Resume");
    assert!(
        wait_until(20, || folder_state(&daemon) != "paused"),
        "daemon not resumed: {}",
        daemon.status()
    );
    assert!(wait_until(20, || icon_name(&desktop, &item) == "emblem-default"));

    // No tray host on this bus, so the tray opened its status window: capture it.
    let mut window = String::new();
    assert!(
        wait_until(30, || {
            let out = desktop
                .cmd("xdotool")
                .args(["search", "--name", "^cairn$"])
                .output()
                .unwrap();
            window = String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            !window.is_empty()
        }),
        "no status window; tray log: {}",
        tray_log()
    );
    let shot = artifact_dir().join("status-window.png");
    let mut stats = Vec::new();
    // The first frames may still be blank: retry until the window has content.
    let drawn = wait_until(30, || {
        let ok = desktop
            .cmd("import")
            .args(["-window", &window])
            .arg(&shot)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return false;
        }
        let out = desktop
            .cmd("convert")
            .arg(&shot)
            .args(["-format", "%w %h %k %[fx:standard_deviation]", "info:"])
            .output()
            .unwrap();
        stats = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|v| v.parse::<f64>().ok())
            .collect();
        stats.len() == 4 && stats[2] >= 50.0 && stats[3] > 0.02
    });
    assert!(
        drawn,
        "status window looks blank: width, height, colours, deviation = {stats:?}"
    );
    assert!(
        stats[0] >= 600.0 && stats[1] >= 400.0,
        "window too small: {stats:?}"
    );

    // Pair another device with this one (by the CLI): the tray raises a notification.
    let beta_home = tmp.path().join("beta-home");
    fs::create_dir_all(&beta_home).unwrap();
    fs::write(
        beta_home.join("config.toml"),
        format!(
            "[device]\nname = \"beta\"\n\n[network]\nlisten = [\"/ip4/127.0.0.1/tcp/{}\"]\nmdns = false\nbootstrap = [\"/ip4/127.0.0.1/tcp/{}/p2p/{}\"]\n\n[control]\nlisten = \"127.0.0.1:0\"\n",
            free_port(),
            daemon.port,
            daemon.peer_id
        ),
    )
    .unwrap();
    let beta = |args: &[&str]| {
        Command::new(bin("cairn"))
            .env(PRIVATE_NETWORK_ONLY.0, PRIVATE_NETWORK_ONLY.1)
            .arg("--home")
            .arg(&beta_home)
            .arg("--json")
            .args(args)
            .output()
            .unwrap()
    };
    assert!(beta(&["up"]).status.success());
    let _beta_daemon = Background(beta_home.clone());
    let mut invite = Command::new(bin("cairn"))
        .env(PRIVATE_NETWORK_ONLY.0, PRIVATE_NETWORK_ONLY.1)
        .arg("--home")
        .arg(&daemon.home)
        .args(["--json", "pair"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let code = cairn_tests::read_pair_code(&mut invite);
    let joined = beta(&["pair", &code]);
    let _ = invite.wait();
    assert!(
        joined.status.success(),
        "pairing failed: {}",
        String::from_utf8_lossy(&joined.stderr)
    );
    let notified = wait_until(20, || {
        shown
            .lock()
            .unwrap()
            .iter()
            .any(|n| n.starts_with("Paired with beta"))
    });
    assert!(
        notified,
        "no pairing notification; shown: {:?}\ntray log: {}",
        shown.lock().unwrap(),
        tray_log()
    );
    assert!(
        wait_until(20, || menu(&desktop, &item)
            .iter()
            .any(|m| m.1 == "1 of 1 devices online")),
        "{:?}",
        menu(&desktop, &item)
    );

    // "Quit tray" ends the tray (and its window).
    click(&desktop, &item, "Quit tray");
    assert!(
        wait_until(20, || item_name(&desktop).is_none()),
        "the tray did not quit"
    );
}

#[test]
fn install_writes_an_autostart_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin("cairn-tray"))
        .env(PRIVATE_NETWORK_ONLY.0, PRIVATE_NETWORK_ONLY.1)
        .args(["--home"])
        .arg(tmp.path().join("my home"))
        .arg("install")
        .env("XDG_CONFIG_HOME", tmp.path().join("config"))
        .output()
        .unwrap();
    assert_success(&out);
    let entry = fs::read_to_string(tmp.path().join("config/autostart/cairn-tray.desktop")).unwrap();
    assert!(entry.starts_with("[Desktop Entry]\n"), "{entry}");
    let exec = entry.lines().find(|l| l.starts_with("Exec=")).unwrap();
    assert!(exec.contains("cairn-tray"), "{exec}");
    assert!(
        exec.contains("--home \""),
        "home with a space is quoted: {exec}"
    );
}
