//! `cairnd`, the cairn daemon: syncs the folders in its configuration with trusted peers.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cairn_daemon::config::{Config, Home};
use clap::Parser;

/// The cairn daemon: watches folders and syncs them with trusted devices over libp2p.
#[derive(Parser)]
#[command(name = "cairnd", version)]
struct Args {
    /// Home directory for identity, index and state [default: $CAIRN_HOME or ~/.local/share/cairn].
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Configuration file [default: HOME/config.toml with --home or $CAIRN_HOME, else
    /// $XDG_CONFIG_HOME/cairn/config.toml].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print this device's id and exit.
    #[arg(long)]
    print_id: bool,
}

/// jemalloc, not glibc's malloc. glibc gave every allocating thread an arena of its own
/// and returned little freed memory (a 152 MiB heap peaked at 546 MiB resident), so the
/// daemon ran on one arena and called `malloc_trim` after each scan and pull. At 1,000,000
/// files that trim walked a heap of about 1 GiB holding the one arena's lock: 260-540 ms
/// (a C program reproduces it) in which every other thread that allocated waited, the
/// control API's answers among them (`/v1/status` peaked at 481 ms). jemalloc returns
/// freed pages from background threads a little at a time, one arena at a time.
/// mimalloc was measured too and kept more (ARCHITECTURE.md, Memory).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read once at start: purge on background threads; freed pages go
/// back to the system after a second, not jemalloc's default ten. Two settings keep the
/// data path off fresh pages (jemalloc zeroes a reused extent for `calloc` by handing its
/// pages to the kernel, so each reuse faults them in again; see [`cairn_daemon::read_buffer`]):
/// no dedicated arena for allocations of 8 MiB and more (it purges them at once, and every
/// 16 MiB chunk answer is one), and 256 cached 16-32 KiB buffers per thread, not 20
/// (yamux's frame bodies are 16 KiB and `calloc`ed; a transfer holds hundreds). Receiver
/// page faults for a 256 MiB first sync: ~130,000 before, ~30,000 with both and
/// `read_buffer`; the sync 1.8 s before, 1.2-1.4 s after (as with glibc's malloc).
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 115] = b"background_thread:true,narenas:2,dirty_decay_ms:1000,\
muzzy_decay_ms:0,oversize_threshold:0,tcache_nslots_large:256\0";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(log_filter(
            std::env::var("CAIRN_LOG").ok().as_deref(),
        )))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairnd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What the daemon logs: `CAIRN_LOG` (tracing's filter syntax), default `info`. The
/// version store polls iroh-blobs' collector every 200 ms and turns down each poll that
/// nobody asked for (versions.rs, `GcGate`); iroh-blobs logs every such turn at INFO ("abort
/// gc run"), five lines a second for as long as the daemon runs. That target is kept at
/// `warn` unless the filter names iroh_blobs itself.
fn log_filter(env: Option<&str>) -> String {
    const QUIET: &str = "iroh_blobs::store::gc=warn";
    match env.map(str::trim).filter(|e| !e.is_empty()) {
        Some(e) if e.contains("iroh_blobs") => e.to_string(),
        Some(e) => format!("{e},{QUIET}"),
        None => format!("info,{QUIET}"),
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let explicit_home =
        args.home.is_some() || std::env::var_os("CAIRN_HOME").is_some_and(|v| !v.is_empty());
    let home = Home::new(args.home.unwrap_or_else(cairn_daemon::paths::data_dir));
    std::fs::create_dir_all(&home.dir)
        .with_context(|| format!("creating {}", home.dir.display()))?;
    let key = cairn_daemon::identity::load_or_create(&home.identity())?;
    let device_id = key.public().to_peer_id().to_string();
    if args.print_id {
        println!("{device_id}");
        return Ok(());
    }
    // With an explicit home everything lives there; otherwise the config follows XDG.
    let config_path = args.config.unwrap_or_else(|| {
        if explicit_home {
            home.config()
        } else {
            cairn_daemon::paths::default_config()
        }
    });
    if let Some(parent) = config_path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let config = Config::load(&config_path)?;
    if !config_path.exists() {
        config.save(&config_path)?;
    }
    // The scanner hashes on rayon's threads: background work (priority.rs).
    let _ = rayon::ThreadPoolBuilder::new()
        .start_handler(|_| cairn_daemon::priority::lower_this_thread())
        .build_global();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let engine = cairn_daemon::engine::Engine::new(home.clone(), &config, config_path.clone(), key)?;
        let events = engine.events();
        let _api = cairn_daemon::control::serve(&config.control.listen, &home.control(), device_id, events.clone(), engine.status_feed())
            .with_context(|| format!("starting the control API on {}", config.control.listen))?;
        let stop = events.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            let _ = stop.send(cairn_daemon::engine::Event::Control(cairn_daemon::engine::ControlRequest::Shutdown));
        });
        engine.run().await;
        let _ = std::fs::remove_file(home.control());
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn the_collectors_idle_polls_stay_out_of_the_log_unless_asked_for() {
        assert_eq!(log_filter(None), "info,iroh_blobs::store::gc=warn");
        assert_eq!(log_filter(Some(" ")), "info,iroh_blobs::store::gc=warn");
        assert_eq!(
            log_filter(Some("debug,libp2p=warn")),
            "debug,libp2p=warn,iroh_blobs::store::gc=warn"
        );
        assert_eq!(log_filter(Some("iroh_blobs=debug")), "iroh_blobs=debug");
        // The result parses as a filter.
        for env in [None, Some("info,libp2p=warn")] {
            assert!(tracing_subscriber::EnvFilter::try_new(log_filter(env)).is_ok());
        }
    }
}
