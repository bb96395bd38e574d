//! `cairn`, the command line of cairn. Every command except `scan` talks to the daemon's
//! control API; none holds logic the daemon owns.

mod commands;
mod daemon_cmd;
mod error;
mod format;
mod scan;

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_api::Client;
use cairn_api::conflicts::Keep;
use cairn_api::folders::FolderType;
use cairn_api::history::{HistoryQuery, RestoreRequest, RewindRequest};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::error::CliError;

/// Peer-to-peer folder sync: keep folders identical across your devices, with no server.
///
/// Start the daemon with `cairn up ~/Sync`, pair another device with `cairn pair`, share a
/// folder with `cairn share ~/Sync laptop`, and watch it with `cairn status`.
///
/// Exit codes: 0 success, 1 error, 2 usage error, 3 daemon not running, 4 pairing failed,
/// 5 no such folder, device or conflict.
#[derive(Parser)]
#[command(name = "cairn", version, propagate_version = true)]
struct Cli {
    /// The daemon's home directory [default: $CAIRN_HOME or ~/.local/share/cairn].
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum FolderKind {
    SendReceive,
    SendOnly,
    ReceiveOnly,
}

impl From<FolderKind> for FolderType {
    fn from(kind: FolderKind) -> Self {
        match kind {
            FolderKind::SendReceive => FolderType::SendReceive,
            FolderKind::SendOnly => FolderType::SendOnly,
            FolderKind::ReceiveOnly => FolderType::ReceiveOnly,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum KeepWhich {
    /// The version at the name; the conflict copy goes (it stays in history).
    Local,
    /// The conflict copy's version, moved to the name.
    Remote,
    /// Both: the conflict copy gets an ordinary name.
    Both,
}

impl From<KeepWhich> for Keep {
    fn from(keep: KeepWhich) -> Self {
        match keep {
            KeepWhich::Local => Keep::Local,
            KeepWhich::Remote => Keep::Remote,
            KeepWhich::Both => Keep::Both,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Start the daemon in the background (first run creates config and identity).
    Up {
        /// A folder to sync, added if it is new.
        folder: Option<PathBuf>,
    },
    /// Stop the daemon.
    Down,
    /// Print this device's id (its libp2p PeerId).
    Id,
    /// Pair with another device: without a code, print one and wait; with a code, join.
    Pair {
        /// The code the other device printed, e.g. 7-guitar-ginger.
        code: Option<String>,
    },
    /// Offer a folder to a paired device (by name or id); it accepts with `cairn accept`.
    Share {
        /// The folder: a path (added if new) or a folder id.
        folder: PathBuf,
        /// The device: its name or id (see `cairn peers`).
        device: String,
        /// How the folder syncs on this device.
        #[arg(long = "type", value_enum)]
        kind: Option<FolderKind>,
    },
    /// Accept a folder a paired device offered (see `cairn status`).
    Accept {
        /// The offered folder's id.
        folder: String,
        /// Where to put it [default: ~/<folder id>].
        path: Option<PathBuf>,
        /// How the folder syncs on this device.
        #[arg(long = "type", value_enum)]
        kind: Option<FolderKind>,
    },
    /// Decline a folder a paired device offered; its later offers of it are not shown
    /// (`cairn accept` still takes it).
    Decline {
        /// The offered folder's id.
        folder: String,
    },
    /// Folders, peers, sync state, errors and offers.
    Status,
    /// Paired devices and whether they are online.
    Peers,
    /// Synced folders.
    Folders,
    /// Conflict copies, with both versions' device and time.
    Conflicts,
    /// Resolve a conflict; the resolution syncs to every device.
    Resolve {
        /// The conflict copy, or the file it conflicts with (folder-relative).
        path: String,
        /// Which version to keep.
        #[arg(long, value_enum)]
        keep: KeepWhich,
    },
    /// Every version of the folder's files the group knows of, newest first, with the
    /// devices that hold each (online or not).
    History {
        /// Only versions of this path, or of everything under it (folder-relative).
        path: Option<String>,
        /// Only this folder (id).
        #[arg(long)]
        folder: Option<String>,
        /// Only files that are deleted now.
        #[arg(long)]
        deleted: bool,
        /// Drop the versions the folders' rules no longer keep now (they are also dropped
        /// hourly), and say what that freed.
        #[arg(long, conflicts_with_all = ["path", "folder", "deleted"])]
        prune: bool,
    },
    /// Put a version back, from whichever device holds it; or rewind a folder (or a
    /// directory of it) to a moment with --at. It syncs to every device, and what it
    /// replaces is kept in history.
    #[command(disable_version_flag = true)]
    Restore {
        /// The path (folder-relative), as `cairn history` shows it; with --at, the
        /// directory to rewind (the whole folder if left out).
        #[arg(required_unless_present = "at")]
        path: Option<String>,
        /// Which version: its id or a unique prefix [default: the newest before the
        /// current one].
        #[arg(long, conflicts_with = "at")]
        version: Option<String>,
        /// Put it here instead (folder-relative), leaving the file at PATH alone.
        #[arg(long, value_name = "PATH", conflicts_with = "at")]
        to: Option<String>,
        /// The folder (id): needed with --at, and when several have versions of PATH.
        #[arg(long, required_if_eq("at", "*"))]
        folder: Option<String>,
        /// Rewind to this moment: `2026-12-04 15:30` (UTC), `2026-12-04T15:30:00Z`,
        /// `@UNIX_SECONDS`, or a time ago (`90s`, `10m`, `2h`, `3d`). Files created since
        /// stay (see --exact).
        #[arg(long, value_name = "TIME", requires = "folder")]
        at: Option<String>,
        /// With --at: also remove what was created since (it goes to history).
        #[arg(long, requires = "at")]
        exact: bool,
        /// With --at: only list what would change.
        #[arg(long, requires = "at")]
        dry_run: bool,
    },
    /// Pause syncing a folder (or all).
    Pause {
        /// Folder id or path; all folders if omitted.
        folder: Option<String>,
    },
    /// Resume syncing a folder (or all).
    Resume {
        /// Folder id or path; all folders if omitted.
        folder: Option<String>,
    },
    /// Show or edit a folder's .cairnignore (gitignore syntax).
    Ignore {
        /// Folder id or path.
        folder: String,
        /// A pattern to add (or, with --remove, to remove).
        pattern: Option<String>,
        /// Remove the pattern instead of adding it.
        #[arg(long, requires = "pattern")]
        remove: bool,
    },
    /// Index a folder now and report what it holds and what changed since the last scan.
    ///
    /// Works without a daemon. The first scan reads every file; later scans read only files
    /// whose size, times, inode or permissions changed. `.cairnignore` paths are left out.
    Scan(scan::ScanArgs),
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Install the systemd user unit that starts the daemon at login.
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
}

#[derive(Subcommand)]
enum ServiceAction {
    /// Write ~/.config/systemd/user/cairnd.service.
    Install,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let explicit_home =
        cli.home.is_some() || std::env::var_os("CAIRN_HOME").is_some_and(|v| !v.is_empty());
    let home = cli.home.clone().unwrap_or_else(cairn_api::paths::data_dir);
    let json = cli.json;
    let result = run(cli.command, &home, explicit_home, json);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "error": e.message, "exit_code": e.code })
                );
            }
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

fn run(
    command: Command,
    home: &std::path::Path,
    explicit_home: bool,
    json: bool,
) -> Result<(), CliError> {
    let connect = || Client::connect(home).map_err(CliError::from);
    match command {
        Command::Up { folder } => daemon_cmd::up(home, explicit_home, folder.as_deref(), json),
        Command::Down => daemon_cmd::down(home, json),
        Command::Id => daemon_cmd::id(home, explicit_home, json),
        Command::Pair { code: None } => commands::pair_invite(&connect()?, json),
        Command::Pair { code: Some(code) } => commands::pair_join(&connect()?, &code, json),
        Command::Share {
            folder,
            device,
            kind,
        } => commands::share(
            &connect()?,
            &folder,
            &device,
            kind.map(FolderType::from),
            json,
        ),
        Command::Accept { folder, path, kind } => commands::accept(
            &connect()?,
            &folder,
            path.as_deref(),
            kind.map(FolderType::from),
            json,
        ),
        Command::Decline { folder } => commands::decline(&connect()?, &folder, json),
        Command::Status => commands::status(&connect()?, json),
        Command::Peers => commands::peers(&connect()?, json),
        Command::Folders => commands::folders(&connect()?, json),
        Command::Conflicts => commands::conflicts(&connect()?, json),
        Command::Resolve { path, keep } => commands::resolve(&connect()?, &path, keep.into(), json),
        Command::History { prune: true, .. } => commands::prune(&connect()?, json),
        Command::History {
            path,
            folder,
            deleted,
            ..
        } => commands::history(
            &connect()?,
            &HistoryQuery {
                folder,
                path,
                deleted,
            },
            json,
        ),
        Command::Restore {
            path,
            folder: Some(folder),
            at: Some(at),
            exact,
            dry_run,
            ..
        } => {
            let at_ns = cairn_api::time::parse_when(&at, cairn_api::time::now_ns())
                .map_err(CliError::usage)?;
            commands::rewind(
                &connect()?,
                &RewindRequest {
                    folder,
                    at_ns,
                    under: path,
                    exact,
                    dry_run,
                },
                json,
            )
        }
        Command::Restore {
            path,
            version,
            to,
            folder,
            ..
        } => commands::restore(
            &connect()?,
            &RestoreRequest {
                folder,
                path: path.unwrap_or_default(),
                version,
                to,
            },
            json,
        ),
        Command::Pause { folder } => commands::pause(&connect()?, folder.as_deref(), true, json),
        Command::Resume { folder } => commands::pause(&connect()?, folder.as_deref(), false, json),
        Command::Ignore {
            folder,
            pattern,
            remove,
        } => commands::ignore(&connect()?, &folder, pattern.as_deref(), remove, json),
        Command::Scan(mut args) => {
            if args.index.is_none() && explicit_home {
                args.index = Some(home.join("index.redb"));
            }
            scan::run(args, json).map_err(|e| CliError::other(format!("{e:#}")))
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "cairn", &mut std::io::stdout());
            Ok(())
        }
        Command::Service {
            action: ServiceAction::Install,
        } => daemon_cmd::service_install(home, explicit_home, json),
    }
}
