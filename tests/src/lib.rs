//! Shared helpers for cairn's end-to-end tests: find (and if needed build) the real
//! binaries, and run them in isolated homes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Path of a workspace binary (`cairn`, `cairnd`, `cairn-tray`), built once per test run.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        // Cargo sets these for the test binary; passed on, they reached build scripts that
        // watch them (ring's watches CARGO_MANIFEST_DIR), so this build and the one that
        // built the tests undid each other: ring, libp2p and the daemon were compiled again
        // each time the tests of another package ran (about 40 s each).
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if [
                "CARGO_MANIFEST_",
                "CARGO_PKG_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
            ]
            .iter()
            .any(|p| key.starts_with(p))
            {
                command.env_remove(key.as_ref());
            }
        }
        let status = command
            .args([
                "build",
                "--quiet",
                "--bins",
                "-p",
                "cairn-cli",
                "-p",
                "cairn-daemon",
                "-p",
                "cairn-desktop",
            ])
            .current_dir(workspace_root())
            .status()
            .map_err(|e| format!("cannot run cargo build: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("cargo build failed: {status}"))
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    target_dir().join(name)
}

/// Whether this process may run commands as user `uid` (it needs root and `setpriv`).
pub fn can_run_as(uid: u32) -> bool {
    Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args(["--clear-groups", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Fails the test with the command's stderr unless it exited successfully.
#[track_caller]
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The profile directory the tests run from (`target/debug`).
fn target_dir() -> PathBuf {
    // The test binary lives in target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Set on every daemon and CLI a test starts (and by `.ci/run`): the daemon dials nothing
/// outside loopback and private space, whatever its configuration names (the default one
/// names the public DHT's bootstrap nodes).
pub const PRIVATE_NETWORK_ONLY: (&str, &str) = ("CAIRN_PRIVATE_NETWORK_ONLY", "1");

/// A `cairn` command whose state lives under `home` only.
pub fn cairn(home: &Path) -> Command {
    let mut cmd = Command::new(bin("cairn"));
    cmd.env("CAIRN_HOME", home)
        .env_remove("XDG_DATA_HOME")
        .env(PRIVATE_NETWORK_ONLY.0, PRIVATE_NETWORK_ONLY.1);
    cmd
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no rand crate.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A running `cairnd`, killed (by PID) when dropped.
pub struct Daemon {
    pub name: String,
    pub home: PathBuf,
    pub folder: PathBuf,
    pub peer_id: String,
    pub port: u16,
    /// Run as this user id (through `setpriv`) instead of the test's own.
    run_as: Option<u32>,
    /// Extra environment of the process (tuning knobs a test turns).
    env: Vec<(String, String)>,
    child: Option<std::process::Child>,
}

/// How a daemon is named in another's config.
#[derive(Clone)]
pub struct PeerRef {
    pub name: String,
    pub peer_id: String,
    pub port: u16,
}

/// What one daemon should be configured with.
pub struct DaemonSpec {
    pub name: String,
    pub home: PathBuf,
    pub folder: PathBuf,
    pub port: u16,
    pub peer_id: String,
    pub run_as: Option<u32>,
    pub env: Vec<(String, String)>,
    /// Lines appended to the shared folder's table in the config (e.g. its
    /// `[folders.versions]`).
    pub folder_toml: String,
}

impl DaemonSpec {
    /// Creates the home and identity of a daemon under `base/name`.
    pub fn new(base: &Path, name: &str) -> Self {
        let home = base.join(format!("{name}-home"));
        let folder = base.join(format!("{name}-folder"));
        std::fs::create_dir_all(&home).expect("home");
        std::fs::create_dir_all(&folder).expect("folder");
        let out = Command::new(bin("cairnd"))
            .arg("--home")
            .arg(&home)
            .arg("--print-id")
            .output()
            .expect("cairnd runs");
        assert!(
            out.status.success(),
            "cairnd --print-id: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let peer_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        DaemonSpec {
            name: name.into(),
            home,
            folder,
            port: free_port(),
            peer_id,
            run_as: None,
            env: Vec::new(),
            folder_toml: String::new(),
        }
    }

    /// Runs the daemon as user `uid` (needs root and `setpriv`); its home and folder are
    /// handed to that user, and the binary is copied beside them (the build directory may
    /// not be readable by other users).
    pub fn as_user(mut self, uid: u32) -> Self {
        let exe = self.home.with_file_name(format!("cairnd-{uid}"));
        std::fs::copy(bin("cairnd"), &exe).expect("copy cairnd");
        for dir in [&self.home, &self.folder, &exe] {
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{uid}"))
                .arg(dir)
                .status()
                .expect("chown runs");
            assert!(status.success(), "chown {}", dir.display());
        }
        self.run_as = Some(uid);
        self
    }

    /// Keeps every version the shared folder keeps (no thinning, no age limit), so a test
    /// that counts versions counts what sync kept, not what retention dropped.
    pub fn keeping_all_versions(mut self) -> Self {
        self.folder_toml += "[folders.versions]\nstaggered = false\nmax_age_days = 0\n";
        self
    }

    /// Sets `key` in the daemon's environment.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Writes a config trusting `peers` and sharing folder `shared` with them, then starts.
    pub fn peer(&self) -> PeerRef {
        PeerRef {
            name: self.name.clone(),
            peer_id: self.peer_id.clone(),
            port: self.port,
        }
    }

    pub fn start(self, peers: &[PeerRef]) -> Daemon {
        self.start_with(peers, &[])
    }

    /// Like `start`, with Kademlia bootstrap peers; a peer with port 0 gets no address.
    pub fn start_with(self, peers: &[PeerRef], bootstrap: &[String]) -> Daemon {
        let boot: Vec<String> = bootstrap.iter().map(|b| format!("\"{b}\"")).collect();
        let mut toml = format!(
            "[network]\nlisten = [\"/ip4/127.0.0.1/tcp/{}\"]\nmdns = false\nbootstrap = [{}]\ndht_server = true\n\n[control]\nlisten = \"127.0.0.1:0\"\n\n",
            self.port,
            boot.join(", ")
        );
        for p in peers {
            let addrs = if p.port == 0 {
                String::new()
            } else {
                format!("\"/ip4/127.0.0.1/tcp/{}\"", p.port)
            };
            toml += &format!(
                "[[peers]]\nid = \"{}\"\nname = \"{}\"\naddresses = [{addrs}]\n\n",
                p.peer_id, p.name
            );
        }
        let ids: Vec<String> = peers.iter().map(|p| format!("\"{}\"", p.peer_id)).collect();
        toml += &format!(
            "[[folders]]\nid = \"shared\"\npath = \"{}\"\npeers = [{}]\n{}",
            self.folder.display(),
            ids.join(", "),
            self.folder_toml
        );
        std::fs::write(self.home.join("config.toml"), toml).expect("config");
        let mut d = Daemon {
            name: self.name,
            home: self.home,
            folder: self.folder,
            peer_id: self.peer_id,
            port: self.port,
            run_as: self.run_as,
            env: self.env,
            child: None,
        };
        d.restart();
        d
    }
}

impl Daemon {
    /// How this daemon is named in another's config.
    pub fn peer(&self) -> PeerRef {
        PeerRef {
            name: self.name.clone(),
            peer_id: self.peer_id.clone(),
            port: self.port,
        }
    }

    /// Starts (or starts again) the process.
    pub fn restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.home.join("control.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.join("cairnd.log"))
            .expect("log file");
        let mut command = match self.run_as {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    // Dies with the test even if the test is killed before its Drop.
                    .args(["--pdeathsig", "KILL"])
                    .arg(self.home.with_file_name(format!("cairnd-{uid}")));
                c
            }
            None => Command::new(bin("cairnd")),
        };
        let child = command
            .arg("--home")
            .arg(&self.home)
            .env(
                "CAIRN_LOG",
                std::env::var("CAIRN_TEST_LOG").unwrap_or_else(|_| "info,libp2p=warn".into()),
            )
            .env(PRIVATE_NETWORK_ONLY.0, PRIVATE_NETWORK_ONLY.1)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cairnd starts");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !self.home.join("control.json").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not start: {}",
                self.name,
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// SIGKILL, by PID.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("cairnd.log")).unwrap_or_default()
    }

    /// GET a control API path, returning the body.
    pub fn get(&self, path: &str) -> String {
        http(&self.home, "GET", path)
    }

    /// The status as JSON.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/v1/status")).unwrap_or(serde_json::Value::Null)
    }

    /// The value of a Prometheus metric line (exact name with labels).
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics");
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.1 request to the control API of the daemon in `home`.
pub fn http(home: &Path, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.join("control.json")).unwrap_or_default(),
    )
    .unwrap_or(serde_json::Value::Null);
    let (Some(addr), Some(token)) = (info["address"].as_str(), info["token"].as_str()) else {
        return String::new();
    };
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return String::new();
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Polls `check` every 50 ms until it is true or `secs` pass; returns whether it became true.
pub fn wait_until(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    check()
}

/// Writes `len` random bytes (from the kernel) to `path`.
pub fn random_file(path: &Path, len: u64) {
    use std::io::Read;
    let mut src = std::fs::File::open("/dev/urandom")
        .expect("urandom")
        .take(len);
    let mut dst = std::fs::File::create(path).expect("create");
    std::io::copy(&mut src, &mut dst).expect("write random file");
}

/// Starts `names.len()` daemons that all trust each other and share folder `shared`.
pub fn mesh(base: &Path, names: &[&str]) -> Vec<Daemon> {
    mesh_with(base, names, |s| s)
}

/// Like [`mesh`], each daemon's spec first passed through `tune`.
pub fn mesh_with(
    base: &Path,
    names: &[&str],
    tune: impl Fn(DaemonSpec) -> DaemonSpec,
) -> Vec<Daemon> {
    let specs: Vec<DaemonSpec> = names
        .iter()
        .map(|n| tune(DaemonSpec::new(base, n)))
        .collect();
    let refs: Vec<PeerRef> = specs.iter().map(DaemonSpec::peer).collect();
    let daemons: Vec<Daemon> = specs
        .into_iter()
        .map(|s| {
            let others: Vec<PeerRef> = refs
                .iter()
                .filter(|r| r.peer_id != s.peer_id)
                .cloned()
                .collect();
            s.start(&others)
        })
        .collect();
    for d in &daemons {
        let n = names.len() - 1;
        let all = wait_until(30, || {
            d.status()["peers"]
                .as_array()
                .is_some_and(|p| p.iter().filter(|p| p["connected"] == true).count() == n)
        });
        assert!(
            all,
            "{} did not connect to every peer:\n{}",
            d.name,
            d.log()
        );
    }
    daemons
}

/// Kills (by PID, SIGKILL) the daemon whose `control.json` is in `home`, if one is running:
/// for tests that start daemons through `cairn up`.
pub fn kill_daemon_of(home: &Path) {
    if let Ok(text) = std::fs::read_to_string(home.join("control.json"))
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        && let Some(pid) = v["pid"].as_u64()
    {
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
}

/// The code a running `cairn --json pair` printed on its first line.
pub fn read_pair_code(inviter: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(inviter.stdout.as_mut().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("read the inviter's first line");
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("first line is not JSON: {line:?}"));
    v["code"].as_str().expect("a code").to_string()
}

/// Runs `ip ARGS` (network namespaces, links, addresses, routes): Err says what failed
/// (without root, creating a namespace fails, and namespace tests are skipped).
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `cmd` inside network namespace `ns`, with `stdin` written to it when given, and
/// returns its stdout; panics with its stderr when it fails.
pub fn netns_exec(ns: &str, cmd: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} in {ns}: {} (nft comes with the nftables package: .ci/deps installs it)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A device driven only through the `cairn` CLI (its daemon started with `cairn up`), run
/// inside network namespace `netns` when one is given. Its daemon is killed by PID on drop.
pub struct CliDevice {
    pub home: PathBuf,
    pub folder: PathBuf,
    pub netns: Option<String>,
}

impl CliDevice {
    /// Creates `base/name-home` with `config` as its config.toml, and `base/name-folder`.
    pub fn create(base: &Path, name: &str, config: &str, netns: Option<&str>) -> Self {
        let home = base.join(format!("{name}-home"));
        let folder = base.join(format!("{name}-folder"));
        std::fs::create_dir_all(&home).expect("home");
        std::fs::create_dir_all(&folder).expect("folder");
        std::fs::write(home.join("config.toml"), config).expect("config");
        CliDevice {
            home,
            folder,
            netns: netns.map(str::to_string),
        }
    }

    /// `cairn --home HOME`, inside the namespace if there is one.
    pub fn cmd(&self) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("cairn"));
                c
            }
            None => Command::new(bin("cairn")),
        };
        c.arg("--home")
            .arg(&self.home)
            .env(
                "CAIRN_LOG",
                std::env::var("CAIRN_TEST_LOG").unwrap_or_else(|_| "info,libp2p=warn".into()),
            )
            .env(PRIVATE_NETWORK_ONLY.0, PRIVATE_NETWORK_ONLY.1);
        c
    }

    pub fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd().args(args).output().expect("cairn runs")
    }

    /// Runs with --json, expects success, parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        self.json_with(self.cmd(), args)
    }

    /// [`Device::json`] with `cmd`, a [`Device::cmd`] the caller changed (its
    /// environment, say).
    pub fn json_with(&self, mut cmd: Command, args: &[&str]) -> serde_json::Value {
        let out = cmd.arg("--json").args(args).output().expect("cairn runs");
        assert!(
            out.status.success(),
            "cairn {args:?}{} failed ({:?}): {}{}",
            self.netns
                .as_ref()
                .map(|ns| format!(" in {ns}"))
                .unwrap_or_default(),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "cairn {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Starts `cairn --json ARGS` with stdout and stderr piped.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.cmd()
            .arg("--json")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("cairn starts")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("cairnd.log")).unwrap_or_default()
    }
}

/// Writes `name` in `from`'s folder and waits up to `secs` for it to arrive, byte for
/// byte, in `to`'s; returns how long it took (panics with both logs if it did not).
pub fn syncs(
    from: &CliDevice,
    to: &CliDevice,
    name: &str,
    bytes: &[u8],
    secs: u64,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    std::fs::write(from.folder.join(name), bytes).unwrap();
    let arrived = wait_until(secs, || {
        std::fs::read(to.folder.join(name)).ok().as_deref() == Some(bytes)
    });
    assert!(
        arrived,
        "{name} did not arrive:\nfrom: {}\nto: {}",
        from.log(),
        to.log()
    );
    started.elapsed()
}

impl Drop for CliDevice {
    fn drop(&mut self) {
        // The daemon, by the PID it wrote, if a test left it running.
        kill_daemon_of(&self.home);
    }
}
