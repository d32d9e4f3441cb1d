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
