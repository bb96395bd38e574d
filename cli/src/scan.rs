//! `cairn scan`: index a folder and report it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context;
use cairn_core::scan::ChangeKind;
use cairn_daemon::index::Index;
use cairn_daemon::scanner::{ScanProgress, ScanReport, scan_folder};
use indicatif::{ProgressBar, ProgressStyle};

use crate::format;

/// How many changes the human-readable report lists before summarising.
const LISTED_CHANGES: usize = 50;

#[derive(clap::Args)]
pub struct ScanArgs {
    /// The folder to scan.
    folder: PathBuf,
    /// List every change instead of the first 50.
    #[arg(long)]
    all: bool,
    /// Index database to use [default: $CAIRN_HOME/index.redb or ~/.local/share/cairn/index.redb].
    #[arg(long, value_name = "FILE")]
    pub index: Option<PathBuf>,
}

pub fn run(args: ScanArgs, json: bool) -> anyhow::Result<()> {
    let index_path = args.index.unwrap_or_else(cairn_daemon::paths::index_path);
    let index = Index::open(&index_path)?;
    let folder = cairn_daemon::folders::folder_for_root(&index, &args.folder)?;

    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message("walking");
        bar
    });
    let bar = Mutex::new(bar);
    let on_progress = |p: &ScanProgress| {
        if let Ok(guard) = bar.lock()
            && let Some(bar) = guard.as_ref()
        {
            if p.walk_done {
                bar.set_length(p.to_read_bytes);
                bar.set_position(p.read_bytes);
                bar.set_message(format!("{}/{} files", p.read_files, p.to_read_files));
            } else {
                bar.set_message(format!("walking: {} paths", p.walked));
                bar.tick();
            }
        }
    };
    let report = scan_folder(&index, &folder, &on_progress)
        .with_context(|| format!("scanning {}", args.folder.display()))?;
    if let Ok(mut guard) = bar.lock()
        && let Some(bar) = guard.take()
    {
        bar.finish_and_clear();
    }

    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, args.all);
    }
    Ok(())
}

fn print_report(r: &ScanReport, all: bool) {
    let t = &r.totals;
    println!(
        "Scanned {} (folder {}) in {:.2} s",
        r.root.display(),
        r.folder,
        r.seconds
    );
    println!(
        "  files     {} ({} dirs, {} symlinks)",
        format::count(t.files),
        format::count(t.dirs),
        format::count(t.symlinks)
    );
    println!("  bytes     {}", format::bytes(t.bytes));
    println!(
        "  chunks    {} ({} unique, {})",
        format::count(t.chunks),
        format::count(t.unique_chunks),
        format::bytes(t.unique_bytes)
    );
    println!(
        "  dedup     {:.2}x (saves {})",
        r.dedup_ratio,
        format::bytes(t.bytes.saturating_sub(t.unique_bytes))
    );
    println!(
        "  read      {} files, {} at {:.0} MiB/s",
        format::count(r.read_files),
        format::bytes(r.read_bytes),
        r.read_mib_per_s
    );
    if r.changes.is_empty() {
        println!("  changes   none");
    } else {
        println!(
            "  changes   {} added, {} modified, {} deleted",
            r.added, r.modified, r.deleted
        );
        let limit = if all { usize::MAX } else { LISTED_CHANGES };
        for c in r.changes.iter().take(limit) {
            let mark = match c.change {
                ChangeKind::Added => '+',
                ChangeKind::Modified => '~',
                ChangeKind::Deleted => '-',
            };
            println!("    {mark} {}", c.path);
        }
        if r.changes.len() > limit {
            println!(
                "    ... and {} more (--all or --json lists them)",
                r.changes.len() - limit
            );
        }
    }
    if !r.issues.is_empty() {
        println!(
            "  skipped   {} paths (they keep their last indexed state):",
            r.issues.len()
        );
        for i in &r.issues {
            let path = if i.path.is_empty() { "." } else { &i.path };
            println!("    ! {path}: {}", i.problem);
        }
    }
}
