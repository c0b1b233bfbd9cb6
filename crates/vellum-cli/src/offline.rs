//! Offline commands on a data directory: `verify`, `stats`, `compact`. Each opens the
//! directory itself, so its exclusive lock keeps a running server (or another
//! command) out while it works.

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use vellum::{Options, Vellum, VerifyStep};

#[derive(Args)]
pub struct DataArgs {
    /// The data directory.
    #[arg(long, env = "VELLUM_DATA", default_value = "vellum-data")]
    data: PathBuf,
}

fn open(args: &DataArgs) -> anyhow::Result<Vellum> {
    anyhow::ensure!(
        args.data.is_dir(),
        "{} is not a data directory",
        args.data.display()
    );
    let options = Options {
        eviction: None,
        ..Options::default()
    };
    Vellum::open(&args.data, options).with_context(|| format!("opening {}", args.data.display()))
}

/// `vellum verify`: every checksum; damage listed; exits non-zero on any.
pub fn verify(args: DataArgs) -> anyhow::Result<std::process::ExitCode> {
    let store = open(&args)?;
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg} {pos} [{elapsed}]")
            .expect("a valid template"),
    );
    bar.set_message("channel files");
    let report = store.verify(&mut |step| match step {
        VerifyStep::ChannelFile | VerifyStep::StoreMessage => bar.inc(1),
        VerifyStep::StoreStart { messages } => {
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {msg} {pos}/{len} [{elapsed}]")
                    .expect("a valid template"),
            );
            bar.set_message("store messages");
            bar.set_position(0);
            bar.set_length(messages);
        }
    })?;
    bar.finish_and_clear();
    println!(
        "{} live channels, {} archived files, {} messages, {} store messages read",
        report.live_channels, report.archived_files, report.messages, report.store_messages
    );
    for d in &report.damage {
        println!(
            "damaged: {} at byte {}: {}",
            d.path.display(),
            d.offset,
            d.reason
        );
    }
    for l in &report.lost_ranges {
        println!(
            "set aside: {} bytes {}..{}: {}{}",
            l.path.display(),
            l.start,
            l.end,
            l.reason,
            l.saved_as
                .as_ref()
                .map(|p| format!(" (saved as {})", p.display()))
                .unwrap_or_default()
        );
    }
    let refs = &report.references;
    for id in &refs.dangling {
        println!("missing stored body: {id}");
    }
    for id in &refs.undercounted {
        println!("undercounted references: {id}");
    }
    if report.is_clean() {
        println!("clean");
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        println!("DAMAGED");
        Ok(std::process::ExitCode::from(2))
    }
}

/// `vellum stats`: engine and message-store figures as JSON.
pub fn stats(args: DataArgs) -> anyhow::Result<()> {
    let store = open(&args)?;
    let s = store.stats();
    let m = &s.message_store;
    let live = store.list(vellum::Scope::Live)?.count();
    let archived = store.list(vellum::Scope::Archived)?.count();
    let figures = serde_json::json!({
        "live_channels": live,
        "archived_channels": archived,
        "lost_ranges": s.lost_ranges,
        "store": {
            "messages": m.messages,
            "live_bytes": m.live_bytes,
            "file_bytes": m.file_bytes,
            "garbage_fraction": m.garbage_fraction,
            "segments": m.segments,
            "index_bytes": m.index_bytes,
        },
    });
    println!("{}", serde_json::to_string_pretty(&figures)?);
    Ok(())
}

/// `vellum compact`: compacts the message store until no segment is over the
/// garbage threshold.
pub fn compact(args: DataArgs) -> anyhow::Result<()> {
    let store = open(&args)?;
    let before = store.stats().message_store;
    let bar = ProgressBar::new_spinner();
    bar.set_message("compacting");
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    store.compact_message_store()?;
    bar.finish_and_clear();
    let after = store.stats().message_store;
    println!(
        "message store: {} → {} file bytes ({} live), {} → {} segments",
        before.file_bytes, after.file_bytes, after.live_bytes, before.segments, after.segments
    );
    Ok(())
}
