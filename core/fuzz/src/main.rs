//! AFL++ harness of cairn-core's fuzz targets ([`cairn_core::fuzz_targets`]).
//!
//! - `cairn-fuzz TARGET`: fuzz one target, under `cargo afl fuzz` (persistent mode).
//! - `cairn-fuzz --list`: the targets' names.
//! - `cairn-fuzz --corpus DIR`: write each target's seeds (real encodings) to `DIR/TARGET/`.
//! - `cairn-fuzz --replay TARGET FILE...`: run one target on saved inputs, outside AFL (a
//!   crash prints its panic message and backtrace).
//!
//! Built with `cargo afl build --release`; `bench/fuzz.sh` does all of it.

use std::path::Path;
use std::process::ExitCode;

use cairn_core::fuzz_targets::{TARGETS, Target, seeds};

fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

fn usage() -> ExitCode {
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    eprintln!(
        "usage: cairn-fuzz TARGET | --list | --corpus DIR | --replay TARGET FILE...\n\
         targets: {}",
        names.join(" ")
    );
    ExitCode::from(2)
}

fn write_corpus(dir: &Path) -> std::io::Result<()> {
    for (name, _) in TARGETS {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub)?;
        for (i, seed) in seeds(name).iter().enumerate() {
            std::fs::write(sub.join(format!("seed-{i:02}")), seed)?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["--list"] => {
            for (name, _) in TARGETS {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        ["--corpus", dir] => match write_corpus(Path::new(dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cairn-fuzz: writing the corpus to {dir}: {e}");
                ExitCode::FAILURE
            }
        },
        ["--replay", name, files @ ..] => {
            let Some(t) = target(name) else {
                return usage();
            };
            for file in files {
                match std::fs::read(file) {
                    Ok(data) => {
                        println!("{name} {file} ({} bytes)", data.len());
                        t(&data);
                    }
                    Err(e) => {
                        eprintln!("cairn-fuzz: {file}: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        [name] => match target(name) {
            Some(t) => {
                afl::fuzz!(|data: &[u8]| t(data));
                ExitCode::SUCCESS
            }
            None => usage(),
        },
        _ => usage(),
    }
}
