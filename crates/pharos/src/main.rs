//! `pharos`: the binary. CLI, configuration, wiring of the roles, shutdown.

// A binary has no public API: `pub` inside it only means "visible across modules".
#![allow(unreachable_pub)]

mod canary;
mod config;
mod serve;
mod server;
mod stores;
mod telemetry;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

// The ingest path allocates per item (prost messages); glibc's malloc showed as a fifth of the
// CPU in profiles of the ingest benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (its index in the `mi_option_t` enum of the mimalloc 3 that
/// `libmimalloc-sys` builds; a test checks it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the process before mimalloc returns it to the system.
/// mimalloc's default (1 s) is shorter than the stores' flush cycles, so the memory of each
/// cycle's head went back to the system and was faulted in again (zeroed page by page) in the
/// next: a tenth of the CPU of log ingest (docs/adr/0002-allocator-purge-delay.md).
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Sets the purge delay, unless `MIMALLOC_PURGE_DELAY` in the environment says otherwise.
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: `mi_option_set` stores a number in mimalloc's table of options, which mimalloc
    // reads atomically; any value is valid for this option. Called first thing in `main`.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

#[derive(Parser)]
#[command(name = "pharos", version, about = "OpenTelemetry-native observability in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs every role in one process: receivers, queue, processors, API.
    Serve {
        /// The YAML configuration file (see `pharos config default`).
        #[arg(long, env = "PHAROS_CONFIG")]
        config: Option<PathBuf>,
        /// Overrides one configuration key, e.g. `--set queue.fsync=interval` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Shorthand for `--set data_dir=DIR`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Writes known telemetry to a running Pharos, reads it back and reports what is missing,
    /// late or wrong (docs/canary.md).
    Canary(Box<canary::CanaryArgs>),
    /// Write-ahead log tools.
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Checks a configuration file and names each bad key by its path, with the reason.
    Check { file: PathBuf },
    /// Prints the full default configuration, with comments.
    Default,
}

#[derive(Subcommand)]
enum WalCommand {
    /// Shows partitions, offsets, segments, sizes and record counts of a WAL directory.
    Inspect {
        dir: PathBuf,
        /// Prints JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, mut sets, data_dir } => {
            if let Some(dir) = data_dir {
                sets.insert(0, format!("data_dir={}", dir.display()));
            }
            let config::Loaded { config, warnings } =
                match config::load(config.as_deref(), std::env::vars(), &sets) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("pharos: invalid configuration:\n{e}");
                        return ExitCode::from(2);
                    }
                };
            telemetry::init_logging(&config.log);
            for warning in warnings {
                tracing::warn!("{warning}");
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("pharos: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve::serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "pharos stopped with an error");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config { command: ConfigCommand::Default } => {
            print!("{}", config::DEFAULT_YAML);
            ExitCode::SUCCESS
        }
        Command::Config { command: ConfigCommand::Check { file } } => match config::check_file(&file) {
            Ok(issues) if issues.is_empty() => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Ok(issues) => {
                for issue in issues {
                    println!("{}: {issue}", file.display());
                }
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("pharos: {e}");
                ExitCode::from(2)
            }
        },
        Command::Wal { command: WalCommand::Inspect { dir, json } } => wal_inspect(&dir, json),
        Command::Canary(args) => canary::main(*args),
    }
}

fn wal_inspect(dir: &std::path::Path, json: bool) -> ExitCode {
    let report = match pharos_queue::wal::inspect(dir, u32::MAX) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pharos: cannot inspect {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("a report serializes"));
        return ExitCode::SUCCESS;
    }
    if report.partitions.is_empty() {
        println!("{}: no partitions", dir.display());
    }
    for p in &report.partitions {
        let committed: Vec<String> = p.committed.iter().map(|(g, o)| format!("{g}={o}")).collect();
        let records: u64 = p.segments.iter().map(|s| s.records).sum();
        let bytes: u64 = p.segments.iter().map(|s| s.bytes).sum();
        println!(
            "partition {:>4}  end offset {:>10}  committed {}  segments {}  records {}  bytes {}",
            p.partition,
            p.end_offset,
            if committed.is_empty() { "-".to_string() } else { committed.join(",") },
            p.segments.len(),
            records,
            bytes
        );
        for s in &p.segments {
            println!(
                "    {}  base {:>10}  records {:>8}  bytes {:>10}{}",
                s.file,
                s.base_offset,
                s.records,
                s.bytes,
                s.damage.as_ref().map(|d| format!("  DAMAGED: {d}")).unwrap_or_default()
            );
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option index is mimalloc's `purge_delay`: its default (1000 ms in mimalloc 3, which
    /// no neighbouring option has) before, and what was set after.
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads of mimalloc's option table.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        let neighbours = || unsafe {
            (
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY - 1),
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY + 1),
            )
        };
        let before = neighbours();
        assert_eq!(get(), 1000, "mimalloc's default purge delay");
        tune_allocator();
        assert_eq!(get(), PURGE_DELAY_MS);
        assert_eq!(neighbours(), before, "no other option changed");
    }
}
