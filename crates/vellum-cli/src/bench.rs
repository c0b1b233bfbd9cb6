//! `vellum bench <workload>`.

use clap::{Args, ValueEnum};
use std::path::PathBuf;
use vellum_bench::BenchOptions;

#[derive(Clone, Copy, ValueEnum)]
pub enum Workload {
    /// Collab appends: 1,000 channels, 1,000,000 appends, Fsync.
    W1,
    /// Store writes: 1,000,000 writes of 1 KiB, 256 in flight, Fsync; reads.
    W2,
    /// Churn: 1 GiB of 4 KiB messages, a random 2/3 removed, compaction settles.
    W3,
    /// Recovery: 1,000,000 messages published to 2 of 1,000 channels; clean and crash reopens.
    W4,
    /// Server: HTTP appends from 64 keep-alive clients; 1,000 WebSocket subscribers.
    W5,
    /// Soak: a bounded mixed workload through the server for `--seconds`; fails if the
    /// server's memory or open files grow (judged from 120 s up).
    Soak,
}

#[derive(Args)]
pub struct BenchArgs {
    workload: Workload,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
    /// Scale every count (smoke runs use e.g. 0.01; the figures that count are at 1).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Directory in which to make the benchmark's temporary data directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// `soak` only: how long to run.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.scale > 0.0 && args.scale.is_finite(),
        "--scale must be positive"
    );
    let options = BenchOptions {
        scale: args.scale,
        dir: args.dir,
    };
    let report = match args.workload {
        Workload::W1 => serde_json::to_value(vellum_bench::w1::run(&options)?)?,
        Workload::W2 => serde_json::to_value(vellum_bench::w2::run(&options)?)?,
        Workload::W3 => serde_json::to_value(vellum_bench::w3::run(&options)?)?,
        Workload::W4 => {
            let exe = std::env::current_exe()?;
            serde_json::to_value(vellum_bench::w4::run(&options, &exe)?)?
        }
        Workload::W5 => {
            let exe = std::env::current_exe()?;
            serde_json::to_value(vellum_bench::w5::run(&options, &exe)?)?
        }
        Workload::Soak => {
            let exe = std::env::current_exe()?;
            let duration = std::time::Duration::from_secs(args.seconds);
            serde_json::to_value(vellum_bench::soak::run(&options, &exe, duration)?)?
        }
    };
    if args.json {
        println!("{report}");
    } else {
        for (name, value) in report.as_object().expect("a report is an object") {
            println!("{name:>18}  {value}");
        }
    }
    Ok(())
}

/// The part of a workload that runs in a child process (w4 writes, then aborts).
#[derive(Args)]
pub struct ChildArgs {
    phase: ChildPhase,
    #[arg(long)]
    scale: f64,
    /// The data directory itself.
    #[arg(long)]
    dir: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum ChildPhase {
    W4Fill,
    W4Abort,
}

pub fn run_child(args: ChildArgs) -> anyhow::Result<()> {
    let options = BenchOptions {
        scale: args.scale,
        dir: Some(args.dir),
    };
    let phase = match args.phase {
        ChildPhase::W4Fill => vellum_bench::w4::Phase::Fill,
        ChildPhase::W4Abort => vellum_bench::w4::Phase::Abort,
    };
    vellum_bench::w4::child(phase, &options)
}
