//! `vellum import cryptpad` and `vellum export cryptpad`: a CryptPad datastore into a
//! data directory and back, offline (the directory's lock keeps a server out while
//! they run). The work is the engine's `vellum::cryptpad`; this draws its progress.

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use vellum::cryptpad::{
    ExportProgress, ImportPhase, ImportProgress, SkippedFiles, export_cryptpad, import_cryptpad,
};
use vellum::{Options, Vellum};

#[derive(Args)]
pub struct ImportArgs {
    /// The CryptPad datastore: its shard directories of `<id>.ndjson` channel logs.
    datastore: PathBuf,
    /// CryptPad's archive tree (`<archivePath>/datastore`); its channels become archived ones.
    #[arg(long)]
    archive: Option<PathBuf>,
    /// The data directory to import into (created if missing).
    #[arg(long, env = "VELLUM_DATA", default_value = "vellum-data")]
    data: PathBuf,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Where to write the live channels in CryptPad's layout (absent or empty).
    out: PathBuf,
    /// Where to write the archived channels and pre-trim copies (absent or empty).
    #[arg(long)]
    archive: Option<PathBuf>,
    /// The data directory to export.
    #[arg(long, env = "VELLUM_DATA", default_value = "vellum-data")]
    data: PathBuf,
}

/// No background eviction: it could archive an expired channel halfway through.
fn options() -> Options {
    Options {
        eviction: None,
        ..Options::default()
    }
}

/// `vellum import cryptpad`: checks everything first (nothing changes on a refusal),
/// then imports channel by channel; run again after an interruption, it resumes.
pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let store = Vellum::open(&args.data, options())
        .with_context(|| format!("opening {}", args.data.display()))?;
    let bar = ProgressBar::new_spinner().with_style(style("{spinner} checking {msg} [{elapsed}]"));
    let importing = style("{bar:40} {bytes}/{total_bytes} {msg} [{elapsed}, {eta} left]");
    let progress = |at: ImportProgress| {
        if at.phase == ImportPhase::Importing && bar.length().is_none() {
            bar.set_style(importing.clone());
            bar.set_length(at.bytes_total);
        }
        bar.set_position(at.bytes);
        bar.set_message(format!("{} channels", at.channels));
    };
    let report = import_cryptpad(&store, &args.datastore, args.archive.as_deref(), &progress)
        .with_context(|| format!("importing {}", args.datastore.display()))?;
    bar.finish_and_clear();
    println!(
        "imported {} live channels, {} archived, {} pre-trim copies ({} already there); \
         {} messages ({} in the message store, {} keyed by content hash), {} metadata lines, {} bytes",
        report.channels,
        report.archived,
        report.trim_copies,
        report.already_imported,
        report.messages,
        report.stored_messages,
        report.keyed_by_hash,
        report.metadata_lines,
        report.bytes
    );
    print_skipped(&report.skipped);
    store.close();
    Ok(())
}

/// `vellum export cryptpad`: every channel back in CryptPad's layout.
pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.data.is_dir(),
        "{} is not a data directory",
        args.data.display()
    );
    let store = Vellum::open(&args.data, options())
        .with_context(|| format!("opening {}", args.data.display()))?;
    let bar = ProgressBar::new_spinner().with_style(style("{spinner} {msg} [{elapsed}]"));
    let progress = |at: ExportProgress| {
        bar.set_message(format!(
            "{} channels, {}",
            at.channels,
            indicatif::HumanBytes(at.bytes)
        ));
        bar.tick();
    };
    let report = export_cryptpad(&store, &args.out, args.archive.as_deref(), &progress)
        .with_context(|| format!("exporting to {}", args.out.display()))?;
    bar.finish_and_clear();
    println!(
        "exported {} live channels, {} archived, {} pre-trim copies; {} messages, {} bytes",
        report.channels, report.archived, report.trim_copies, report.messages, report.bytes
    );
    print_skipped(&report.skipped);
    store.close();
    Ok(())
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("a valid template")
}

fn print_skipped(skipped: &SkippedFiles) {
    for s in &skipped.listed {
        println!("skipped {}: {}", s.path.display(), s.reason);
    }
    let unlisted = skipped.total - skipped.listed.len() as u64;
    if unlisted > 0 {
        println!("… and {unlisted} more skipped");
    }
}
