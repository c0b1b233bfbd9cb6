//! The `vellum` command. Thin: parsing and printing; the work lives in the crates.

mod bench;
mod client;
mod cryptpad;
mod offline;
mod serve;

use clap::{Parser, Subcommand};

/// Many small buffers are allocated on one thread and freed on another (writers and
/// the commit thread); mimalloc handles that without the lock contention of glibc's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "vellum", version, about = "Vellum: a durable message store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API on a data directory (default: ./vellum-data on 127.0.0.1:8787).
    Serve(serve::ServeArgs),
    /// Channel operations against a running server.
    Channel(client::ChannelArgs),
    /// Read and check every record of a data directory (offline); exits 2 on damage.
    Verify(offline::DataArgs),
    /// Figures of a data directory (offline), as JSON.
    Stats(offline::DataArgs),
    /// Compact a data directory's message store (offline).
    Compact(offline::DataArgs),
    /// Import another store's data (offline).
    #[command(subcommand)]
    Import(Import),
    /// Export to another store's layout (offline).
    #[command(subcommand)]
    Export(Export),
    /// Run a benchmark workload (w1 … w5) and print its figures.
    Bench(bench::BenchArgs),
    /// A workload's part that runs in a child process (used by `bench w4`).
    #[command(hide = true)]
    BenchChild(bench::ChildArgs),
}

#[derive(Subcommand)]
enum Import {
    /// A CryptPad datastore (channel logs, metadata logs, archive), lossless.
    Cryptpad(cryptpad::ImportArgs),
}

#[derive(Subcommand)]
enum Export {
    /// CryptPad's layout, byte-identical to what was imported.
    Cryptpad(cryptpad::ExportArgs),
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    init_logs();
    raise_open_file_limit();
    let done = match Cli::parse().command {
        Command::Serve(args) => serve::run(args),
        Command::Channel(args) => client::run(args),
        Command::Verify(args) => return offline::verify(args),
        Command::Stats(args) => offline::stats(args),
        Command::Compact(args) => offline::compact(args),
        Command::Import(Import::Cryptpad(args)) => cryptpad::import(args),
        Command::Export(Export::Cryptpad(args)) => cryptpad::export(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchChild(args) => bench::run_child(args),
    };
    done.map(|()| std::process::ExitCode::SUCCESS)
}

/// Logs to standard error, filtered by `RUST_LOG` (default `info`); one JSON object
/// per event with `VELLUM_LOG_FORMAT=json`, for log collectors.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("VELLUM_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
}

/// Channel and segment files stay open in caches of up to `open_files_max` and
/// `open_segments_max`; lift the soft limit on open files to the hard limit so the
/// default caches fit.
fn raise_open_file_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "could not raise the open-file limit");
    }
}
