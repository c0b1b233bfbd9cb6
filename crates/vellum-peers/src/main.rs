//! `vellum-peers`: Vellum's `w1`–`w5` and the same workloads against peers, in one
//! run on one machine, each row labelled with its durability; medians of `--runs`;
//! a Markdown report and SVG charts. `bench/peers.sh` installs the servers it needs.

mod churn;
mod driver;
mod kv_peers;
mod log_peers;
mod recovery;
mod redis_server;
mod report;
mod server_peers;

use anyhow::Context;
use clap::Parser;
use kv_peers::{FjallKv, KvPeer, RedbKv, SqliteKv};
use log_peers::{FilePerChannel, Fjall, LogPeer, RedisStreams, Sqlite};
use redis_server::RedisServer;
use report::{Row, Table};
use std::path::PathBuf;
use vellum_bench::BenchOptions;

#[derive(Parser)]
struct Args {
    /// Runs of every row; the report gives medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Scales every workload's message count, for Vellum and the peers alike.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Where to write the Markdown report; the charts go beside it.
    #[arg(long)]
    out: PathBuf,
    /// Skip the peers whose servers are not installed instead of failing.
    #[arg(long)]
    skip_missing: bool,
    /// The workloads to run.
    #[arg(long, value_delimiter = ',', default_values_t = ["w1".to_string(), "w2".into(), "w3".into(), "w4".into(), "w5".into()])]
    workloads: Vec<String>,
    /// The `vellum` binary, whose `serve` `w5` drives (bench/peers.sh builds it).
    #[arg(long, default_value = "target/release/vellum")]
    vellum: PathBuf,
}

fn main() -> anyhow::Result<()> {
    // `w4`'s phases run in child processes of this program.
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("w4-peer-child") => return recovery::child(&argv[2..]),
        Some("bench-child") => return vellum_w4_child(&argv[2..]),
        _ => {}
    }
    let args = Args::parse();
    for w in &args.workloads {
        anyhow::ensure!(
            ["w1", "w2", "w3", "w4", "w5"].contains(&w.as_str()),
            "no workload {w} (w1 to w5)"
        );
    }
    let runs = |w: &str| args.workloads.iter().any(|x| x == w);
    anyhow::ensure!(
        args.runs >= 1 && args.scale > 0.0,
        "--runs ≥ 1, --scale > 0"
    );
    let options = BenchOptions {
        scale: args.scale,
        dir: None,
    };
    let redis = RedisServer::version();
    anyhow::ensure!(
        redis.is_some() || args.skip_missing,
        "redis-server is not installed (bench/peers.sh installs it)"
    );
    let w1_messages = options.scaled(vellum_bench::w1::MESSAGES, 1_000);
    let w2_writes = options.scaled(1_000_000, 1_000);
    let w3_messages = options.scaled(vellum_bench::w3::TOTAL_BYTES / churn::VALUE_BYTES, 1_000);
    let w4_messages = options.scaled(vellum_bench::w4::MESSAGES, 2_000);
    let exe = std::env::current_exe()?;

    let mut w1 = Table::new("w1", w1_messages);
    let mut w2 = Table::new("w2", w2_writes);
    let mut w3 = Table::new("w3", w3_messages);
    let mut w4 = Table::new("w4", w4_messages);
    let mut w5 = Table::new(
        "w5",
        options.scaled(vellum_bench::w5::APPENDS, vellum_bench::w5::CLIENTS),
    );
    for run in 0..args.runs {
        eprintln!("run {} of {}", run + 1, args.runs);
        if runs("w1") {
            run_w1(&options, &mut w1, redis.is_some())?;
        }
        if runs("w2") {
            run_w2(&options, &mut w2)?;
        }
        if runs("w3") {
            run_w3(&options, &mut w3)?;
        }
        if runs("w4") {
            w4.add(Row::w4(
                "Vellum",
                "fsync at ack (group commit)",
                &vellum_bench::w4::run(&options, &exe)?.into(),
            ));
            for (peer, name, durability) in [
                ("sqlite", "SQLite", "fsync at ack (WAL, synchronous=FULL)"),
                ("fjall", "fjall", "fsync at ack (persist SyncData)"),
                ("redb", "redb", "fsync at ack (Durability::Immediate)"),
            ] {
                w4.add(Row::w4(
                    name,
                    durability,
                    &recovery::w4(&exe, peer, w4_messages)?,
                ));
            }
        }
        if runs("w5") {
            w5.add(Row::w5(
                "Vellum (HTTP appends, WebSocket subscribers)",
                "fsync at ack (group commit)",
                &vellum_bench::w5::run(&options, &args.vellum)
                    .with_context(|| format!("w5 with {}", args.vellum.display()))?
                    .into(),
            ));
            if redis.is_some() {
                let dir = tempfile::tempdir()?;
                let server = RedisServer::start(dir.path(), "always")?;
                w5.add(Row::w5(
                    "Redis Streams (XADD, XREAD BLOCK)",
                    "fsync at ack (appendfsync always)",
                    &server_peers::w5(server.port, &options)?,
                ));
            }
        }
    }
    report::write(
        &args.out,
        args.runs,
        args.scale,
        redis.as_deref(),
        &[w1, w2, w3, w4, w5],
    )
}

/// Vellum's own `w4` child phases, as `vellum bench-child` runs them.
fn vellum_w4_child(args: &[String]) -> anyhow::Result<()> {
    let [phase, scale_flag, scale, dir_flag, dir] = args else {
        anyhow::bail!("bench-child <w4-fill|w4-abort> --scale S --dir D");
    };
    anyhow::ensure!(
        scale_flag == "--scale" && dir_flag == "--dir",
        "bench-child arguments"
    );
    let phase = match phase.as_str() {
        "w4-fill" => vellum_bench::w4::Phase::Fill,
        "w4-abort" => vellum_bench::w4::Phase::Abort,
        other => anyhow::bail!("no phase {other}"),
    };
    let options = BenchOptions {
        scale: scale.parse()?,
        dir: Some(dir.into()),
    };
    vellum_bench::w4::child(phase, &options)
}

fn run_w1(options: &BenchOptions, w1: &mut Table, redis: bool) -> anyhow::Result<()> {
    let w1_messages = w1.messages();
    {
        let v = vellum_bench::w1::run(options)?;
        w1.add(Row::w1("Vellum", "fsync at ack (group commit)", &v.into()));
        for (name, durability, fsync) in [
            ("file per channel (CryptPad's way)", "fsync at ack", true),
            (
                "file per channel (CryptPad's way)",
                "none (page cache)",
                false,
            ),
        ] {
            w1.add(Row::w1(
                name,
                durability,
                &log_run(
                    |dir| Ok(Box::new(FilePerChannel::new(dir, fsync))),
                    w1_messages,
                )?,
            ));
        }
        for (durability, full) in [
            ("fsync at ack (WAL, synchronous=FULL)", true),
            ("fsync at checkpoints (WAL, synchronous=NORMAL)", false),
        ] {
            w1.add(Row::w1(
                "SQLite",
                durability,
                &log_run(|dir| Ok(Box::new(Sqlite::open(dir, full)?)), w1_messages)?,
            ));
        }
        for (durability, fsync) in [
            ("fsync at ack (persist SyncData)", true),
            ("none at ack (journal buffered)", false),
        ] {
            w1.add(Row::w1(
                "fjall",
                durability,
                &log_run(|dir| Ok(Box::new(Fjall::open(dir, fsync)?)), w1_messages)?,
            ));
        }
        if redis {
            for (durability, appendfsync) in [
                ("fsync at ack (appendfsync always)", "always"),
                ("fsync every second (appendfsync everysec)", "everysec"),
            ] {
                let dir = tempfile::tempdir()?;
                let server = RedisServer::start(dir.path(), appendfsync)?;
                let mut peer = RedisStreams::connect(server.port)?;
                let row = log_peers::w1(&mut peer, w1_messages)?;
                w1.add(Row::w1("Redis Streams", durability, &row));
            }
        }
    }
    Ok(())
}

fn run_w2(options: &BenchOptions, w2: &mut Table) -> anyhow::Result<()> {
    let w2_writes = w2.messages();
    {
        let v = vellum_bench::w2::run(options)?;
        w2.add(Row::w2(
            "Vellum message store",
            "fsync at confirm (group commit)",
            &v.into(),
        ));
        w2.add(Row::w2(
            "SQLite",
            "fsync at ack (WAL, synchronous=FULL)",
            &kv_run(|dir| Ok(Box::new(SqliteKv::open(dir)?)), w2_writes)?,
        ));
        w2.add(Row::w2(
            "fjall",
            "fsync at ack (persist SyncData)",
            &kv_run(|dir| Ok(Box::new(FjallKv::open(dir)?)), w2_writes)?,
        ));
        w2.add(Row::w2(
            "redb",
            "fsync at ack (Durability::Immediate)",
            &kv_run(|dir| Ok(Box::new(RedbKv::open(dir)?)), w2_writes)?,
        ));
    }
    Ok(())
}

fn run_w3(options: &BenchOptions, w3: &mut Table) -> anyhow::Result<()> {
    let w3_messages = w3.messages();
    {
        w3.add(Row::w3(
            "Vellum message store",
            "fsync at confirm; compaction in the background",
            &churn::vellum(options)?,
        ));
        w3.add(Row::w3(
            "SQLite",
            "fsync at ack (WAL, FULL); VACUUM",
            &churn_run(|dir| Ok(Box::new(SqliteKv::open(dir)?)), w3_messages)?,
        ));
        w3.add(Row::w3(
            "fjall",
            "fsync at ack; background compaction",
            &churn_run(|dir| Ok(Box::new(FjallKv::open(dir)?)), w3_messages)?,
        ));
        w3.add(Row::w3(
            "redb",
            "fsync at ack; Database::compact (no readers)",
            &churn_run(|dir| Ok(Box::new(RedbKv::open(dir)?)), w3_messages)?,
        ));
    }
    Ok(())
}

/// Opens a peer in a directory.
#[cfg(test)]
type Opener<P> = Box<dyn Fn(&std::path::Path) -> anyhow::Result<Box<P>>>;

/// One `w1` run of a peer in a fresh temporary directory.
fn log_run(
    open: impl Fn(&std::path::Path) -> anyhow::Result<Box<dyn LogPeer>>,
    messages: usize,
) -> anyhow::Result<log_peers::W1Row> {
    let dir = tempfile::tempdir()?;
    let mut peer = open(dir.path())?;
    log_peers::w1(peer.as_mut(), messages)
}

/// One `w2` run of a peer in a fresh temporary directory.
fn kv_run(
    open: impl Fn(&std::path::Path) -> anyhow::Result<Box<dyn KvPeer>>,
    writes: usize,
) -> anyhow::Result<kv_peers::W2Row> {
    let dir = tempfile::tempdir()?;
    let mut peer = open(dir.path())?;
    kv_peers::w2(peer.as_mut(), writes)
}

/// One `w3` run of a peer in a fresh temporary directory.
fn churn_run(
    open: impl Fn(&std::path::Path) -> anyhow::Result<Box<dyn KvPeer>>,
    messages: usize,
) -> anyhow::Result<churn::W3Row> {
    let dir = tempfile::tempdir()?;
    let mut peer = open(dir.path())?;
    churn::w3(peer.as_mut(), dir.path(), messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every embedded peer's `w1` reads back every acknowledged message, byte for byte
    /// and in order (`w1` checks it and fails otherwise).
    #[test]
    fn every_log_peer_reads_back_what_it_acknowledged() {
        let opens: Vec<Opener<dyn LogPeer>> = vec![
            Box::new(|dir| Ok(Box::new(FilePerChannel::new(dir, true)))),
            Box::new(|dir| Ok(Box::new(FilePerChannel::new(dir, false)))),
            Box::new(|dir| Ok(Box::new(Sqlite::open(dir, true)?))),
            Box::new(|dir| Ok(Box::new(Sqlite::open(dir, false)?))),
            Box::new(|dir| Ok(Box::new(Fjall::open(dir, true)?))),
            Box::new(|dir| Ok(Box::new(Fjall::open(dir, false)?))),
        ];
        for open in opens {
            let row = log_run(open, 3_000).unwrap();
            assert!(row.appends_per_s > 0.0 && row.read_msgs_per_s > 0.0);
        }
    }

    /// Every key-value peer's `w2` reads back what it confirmed.
    #[test]
    fn every_kv_peer_reads_back_what_it_confirmed() {
        let opens: Vec<Opener<dyn KvPeer>> = vec![
            Box::new(|dir| Ok(Box::new(SqliteKv::open(dir)?))),
            Box::new(|dir| Ok(Box::new(FjallKv::open(dir)?))),
            Box::new(|dir| Ok(Box::new(RedbKv::open(dir)?))),
        ];
        for open in &opens {
            let row = kv_run(open, 3_000).unwrap();
            assert!(row.writes_per_s > 0.0 && row.reads_per_s > 0.0);
        }
        // And `w3`: survivors read back, removed ids stay gone, space is given back.
        for (n, open) in opens.iter().enumerate() {
            let row = churn_run(open, 1_500).unwrap_or_else(|e| panic!("peer {n}: {e}"));
            assert!(
                row.space_ratio > 0.0 && row.write_amplification > 0.0,
                "{row:?}"
            );
        }
    }

    /// A peer that loses a write fails the run: the check is real.
    #[test]
    fn a_peer_that_drops_a_message_fails_w1() {
        struct Forgetful(FilePerChannel, usize);
        impl LogPeer for Forgetful {
            fn append(&mut self, batch: &[log_peers::Append]) -> anyhow::Result<()> {
                self.1 += batch.len();
                // Acknowledges seq 2 of channel 7 without writing it.
                let keep: Vec<_> = batch
                    .iter()
                    .filter(|a| !(a.0 == 7 && a.1 == 2))
                    .cloned()
                    .collect();
                self.0.append(&keep)
            }
            fn read(&mut self, channel: u32) -> anyhow::Result<Vec<Vec<u8>>> {
                self.0.read(channel)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut peer = Forgetful(FilePerChannel::new(dir.path(), false), 0);
        assert!(log_peers::w1(&mut peer, 20_000).is_err());
    }
}
