//! The `vellum` command. Thin: parsing and printing; the work lives in the crates.

mod bench;

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
    Serve(ServeArgs),
    /// Run a benchmark workload (w1, w2, w3, w4) and print its figures.
    Bench(bench::BenchArgs),
    /// A workload's part that runs in a child process (used by `bench w4`).
    #[command(hide = true)]
    BenchChild(bench::ChildArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    raise_open_file_limit();
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchChild(args) => bench::run_child(args),
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The data directory (created if missing).
    #[arg(long, default_value = "vellum-data")]
    data: std::path::PathBuf,
    /// The address to listen on (loopback only until access tokens exist).
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: std::net::SocketAddr,
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = vellum_server::Config {
        data_dir: args.data,
        listen: args.listen,
    };
    tokio::runtime::Runtime::new()?.block_on(vellum_server::serve(
        config,
        vellum_server::shutdown_signal(),
    ))
}

/// Channel files stay open in a cache of up to `open_files_max`; lift the soft limit
/// on open files to the hard limit so the default cache fits.
fn raise_open_file_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "could not raise the open-file limit");
    }
}
