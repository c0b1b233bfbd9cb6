//! `w4` recovery against peers (BRIEF §5): 1,000,000 values of 1 KiB, each appended to
//! 2 of 1,000 channel logs — stored once under its id with a reference count of 2, and
//! named from both logs — in durable commits (the `driver`'s 256 in flight). A child
//! process fills the store and closes it cleanly; the parent times the reopen. Another
//! child publishes 2,000 more and aborts without closing; the parent times that reopen.
//! After both, every count must equal the log entries naming its value, and every
//! acknowledged append must be there. "Open" is what a server does before it serves:
//! open the files and run the peer's own recovery (SQLite's WAL replay happens at the
//! first read, so the open includes one).

use crate::driver::{payload, pipelined};
use crate::kv_peers::id;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use redb::ReadableTable as _;

pub const VALUE_BYTES: usize = vellum_bench::w4::MESSAGE_BYTES;
const CHANNELS: u32 = vellum_bench::w4::CHANNELS as u32;
/// Appends the aborted child gets acknowledged before it dies, to channels of its own.
const BEFORE_ABORT: usize = 2_000;
const CRASH_CHANNELS: u32 = 10;

/// One value, appended to two channels.
pub struct Publish {
    id: [u8; 16],
    value: Vec<u8>,
    channels: [u32; 2],
}

/// What a check of the whole store found (it fails on any count that is off).
pub struct Counted {
    bodies: u64,
    references: u64,
    per_channel: BTreeMap<u32, u64>,
}

pub trait RecoveryPeer: Send {
    /// Stores each value once with a count of 2 and appends its id to both channels'
    /// logs (at their next seq), all in one durable commit.
    fn publish(&mut self, batch: &[Publish]) -> anyhow::Result<()>;
    /// Checks every value's count against the log entries naming it, and counts.
    fn count(&mut self) -> anyhow::Result<Counted>;
}

/// The opens' times. (How fast each filled its store is not compared: Vellum's `w4`
/// publishes from 64 threads that each wait, the peers through the driver's batches.)
#[derive(Debug, Clone, serde::Serialize)]
pub struct W4Row {
    pub clean_open_s: f64,
    pub crash_open_s: f64,
}

impl From<vellum_bench::w4::W4Report> for W4Row {
    fn from(r: vellum_bench::w4::W4Report) -> Self {
        W4Row {
            clean_open_s: r.clean_open_s,
            crash_open_s: r.crash_open_s,
        }
    }
}

/// Opens `peer`'s store in `dir` (creating it), recovery included.
pub fn open(peer: &str, dir: &Path) -> anyhow::Result<Box<dyn RecoveryPeer>> {
    Ok(match peer {
        "sqlite" => Box::new(SqliteLogs::open(dir)?),
        "fjall" => Box::new(FjallLogs::open(dir)?),
        "redb" => Box::new(RedbLogs::open(dir)?),
        other => anyhow::bail!("no peer {other}"),
    })
}

/// `w4` on `peer`, its phases in child processes of `exe` (this program).
pub fn w4(exe: &Path, peer: &str, messages: usize) -> anyhow::Result<W4Row> {
    let dir = tempfile::tempdir()?;
    let child = |phase: &str| -> anyhow::Result<String> {
        let output = Command::new(exe)
            .args(["w4-peer-child", peer, phase])
            .arg(dir.path())
            .arg(messages.to_string())
            .output()?;
        // The fill closes and exits; the abort dies on purpose.
        anyhow::ensure!(
            (phase == "fill") == output.status.success(),
            "w4 {peer} {phase} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?)
    };
    child("fill")?;

    let started = Instant::now();
    let mut store = open(peer, dir.path())?;
    let clean_open_s = started.elapsed().as_secs_f64();
    let counted = store.count()?;
    anyhow::ensure!(
        counted.bodies == messages as u64 && counted.references == 2 * messages as u64,
        "{peer} after a clean reopen: {} values, {} references",
        counted.bodies,
        counted.references
    );
    drop(store);

    let acked: BTreeMap<u32, u64> = serde_json::from_str(&child("abort")?)?;
    let started = Instant::now();
    let mut store = open(peer, dir.path())?;
    let crash_open_s = started.elapsed().as_secs_f64();
    let counted = store.count()?;
    for (channel, count) in &acked {
        let found = counted.per_channel.get(channel).copied().unwrap_or(0);
        anyhow::ensure!(
            found >= *count,
            "{peer}: channel {channel} holds {found}, {count} acknowledged"
        );
    }
    Ok(W4Row {
        clean_open_s,
        crash_open_s,
    })
}

/// The child's part: `fill` publishes `messages` and closes cleanly; `abort` publishes 2,000 more, prints what each channel had
/// acknowledged, and aborts with the store open.
pub fn child(args: &[String]) -> anyhow::Result<()> {
    let [peer, phase, dir, messages] = args else {
        anyhow::bail!("w4-peer-child <peer> <fill|abort> <dir> <messages>");
    };
    let messages: usize = messages.parse()?;
    let mut store = open(peer, Path::new(dir))?;
    match phase.as_str() {
        "fill" => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(1);
            pipelined(
                messages,
                |i| message(i as u64, [0, CHANNELS], &mut rng),
                |batch: &[Publish]| store.publish(batch),
            )?;
            drop(store);
            Ok(())
        }
        "abort" => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(2);
            let mut acked = BTreeMap::<u32, u64>::new();
            pipelined(
                BEFORE_ABORT,
                |i| {
                    message(
                        (messages + i) as u64,
                        [CHANNELS, CHANNELS + CRASH_CHANNELS],
                        &mut rng,
                    )
                },
                |batch: &[Publish]| {
                    store.publish(batch)?;
                    for p in batch {
                        for c in p.channels {
                            *acked.entry(c).or_default() += 1;
                        }
                    }
                    Ok(())
                },
            )?;
            println!("{}", serde_json::to_string(&acked)?);
            use std::io::Write;
            std::io::stdout().flush()?;
            // Dies with the store open: no close, nothing flushed beyond what was acknowledged.
            std::process::abort();
        }
        other => anyhow::bail!("no phase {other}"),
    }
}

/// Value `i`, to two distinct channels of `range`.
fn message(i: u64, range: [u32; 2], rng: &mut impl Rng) -> Publish {
    let span = range[1] - range[0];
    let a = rng.random_range(0..span);
    let b = (a + 1 + rng.random_range(0..span - 1)) % span;
    Publish {
        id: id(i),
        value: payload(u32::MAX - 3, i, VALUE_BYTES),
        channels: [range[0] + a, range[0] + b],
    }
}

/// Each channel's next seq, kept by the writer (a fresh store's channels start at 0;
/// the abort phase writes to channels of its own).
#[derive(Default)]
struct Seqs(HashMap<u32, u64>);

impl Seqs {
    fn next(&mut self, channel: u32) -> u64 {
        let seq = self.0.entry(channel).or_default();
        *seq += 1;
        *seq - 1
    }
}

fn log_key(channel: u32, seq: u64) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&channel.to_be_bytes());
    key[4..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Counts references per id from the log entries `(key, id)`, then checks each
/// stored count against them (the key-value peers).
fn check_counts(
    log: impl Iterator<Item = anyhow::Result<([u8; 12], [u8; 16])>>,
    bodies: impl Iterator<Item = anyhow::Result<([u8; 16], u32)>>,
) -> anyhow::Result<Counted> {
    let mut named: HashMap<[u8; 16], u32> = HashMap::new();
    let mut per_channel = BTreeMap::new();
    let mut references = 0;
    for entry in log {
        let (key, id) = entry?;
        *named.entry(id).or_default() += 1;
        let channel = u32::from_be_bytes(key[..4].try_into().unwrap());
        *per_channel.entry(channel).or_default() += 1;
        references += 1;
    }
    let mut count = 0;
    for body in bodies {
        let (id, refs) = body?;
        let found = named.remove(&id).unwrap_or(0);
        anyhow::ensure!(found == refs, "a value counted {refs}, named {found} times");
        count += 1;
    }
    anyhow::ensure!(
        named.is_empty(),
        "{} log entries name no value",
        named.len()
    );
    Ok(Counted {
        bodies: count,
        references,
        per_channel,
    })
}

/// SQLite, WAL, `synchronous=FULL`: values(id, v, refs) and log(channel, seq, id).
struct SqliteLogs {
    conn: rusqlite::Connection,
    seqs: Seqs,
}

impl SqliteLogs {
    fn open(dir: &Path) -> anyhow::Result<Self> {
        let conn = rusqlite::Connection::open(dir.join("w4.sqlite"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS bodies (id BLOB PRIMARY KEY, v BLOB, refs INTEGER) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS log (channel INTEGER, seq INTEGER, id BLOB, PRIMARY KEY (channel, seq)) WITHOUT ROWID;",
        )?;
        // The WAL is replayed at the first read: part of opening.
        conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |_| Ok(()))?;
        Ok(SqliteLogs {
            conn,
            seqs: Seqs::default(),
        })
    }
}

impl RecoveryPeer for SqliteLogs {
    fn publish(&mut self, batch: &[Publish]) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut body = tx.prepare_cached("INSERT INTO bodies VALUES (?1, ?2, 2)")?;
            let mut log = tx.prepare_cached("INSERT INTO log VALUES (?1, ?2, ?3)")?;
            for p in batch {
                body.execute(rusqlite::params![&p.id[..], p.value])?;
                for c in p.channels {
                    let seq = self.seqs.next(c) as i64;
                    log.execute(rusqlite::params![c, seq, &p.id[..]])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn count(&mut self) -> anyhow::Result<Counted> {
        // Checked here as for the other peers: the log has no index on id, so a
        // correlated count per value would scan the log once per value.
        let mut log = self.conn.prepare("SELECT channel, seq, id FROM log")?;
        let log = log.query_map([], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let log = log.map(|row| {
            let (channel, seq, id) = row?;
            Ok((log_key(channel, seq as u64), id.as_slice().try_into()?))
        });
        let mut bodies = self.conn.prepare("SELECT id, refs FROM bodies")?;
        let bodies =
            bodies.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u32>(1)?)))?;
        let bodies = bodies.map(|row| {
            let (id, refs) = row?;
            Ok((id.as_slice().try_into()?, refs))
        });
        check_counts(log, bodies)
    }
}

/// fjall: partitions `bodies` (id → refs u32 | value) and `log` (channel | seq → id);
/// a batch is one write batch, then `persist(SyncData)`.
struct FjallLogs {
    keyspace: fjall::Keyspace,
    bodies: fjall::PartitionHandle,
    log: fjall::PartitionHandle,
    seqs: Seqs,
}

impl FjallLogs {
    fn open(dir: &Path) -> anyhow::Result<Self> {
        let keyspace = fjall::Config::new(dir.join("w4-fjall")).open()?;
        let options = fjall::PartitionCreateOptions::default;
        let bodies = keyspace.open_partition("bodies", options())?;
        let log = keyspace.open_partition("log", options())?;
        Ok(FjallLogs {
            keyspace,
            bodies,
            log,
            seqs: Seqs::default(),
        })
    }
}

impl RecoveryPeer for FjallLogs {
    fn publish(&mut self, batch: &[Publish]) -> anyhow::Result<()> {
        let mut write = self.keyspace.batch();
        for p in batch {
            let mut body = 2u32.to_le_bytes().to_vec();
            body.extend_from_slice(&p.value);
            write.insert(&self.bodies, p.id, body);
            for c in p.channels {
                write.insert(&self.log, log_key(c, self.seqs.next(c)), p.id);
            }
        }
        write.commit()?;
        self.keyspace.persist(fjall::PersistMode::SyncData)?;
        Ok(())
    }

    fn count(&mut self) -> anyhow::Result<Counted> {
        let log = self.log.iter().map(|kv| {
            let (k, v) = kv?;
            Ok(((*k).try_into()?, (*v).try_into()?))
        });
        let bodies = self.bodies.iter().map(|kv| {
            let (k, v) = kv?;
            Ok(((*k).try_into()?, u32::from_le_bytes(v[..4].try_into()?)))
        });
        check_counts(log, bodies)
    }
}

const BODIES: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("bodies");
const LOG: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("log");

/// redb: tables `bodies` (id → refs u32 | value) and `log` (channel | seq → id); a
/// batch is one write transaction (`Durability::Immediate`). Opening after an abort
/// runs redb's repair.
struct RedbLogs {
    db: redb::Database,
    seqs: Seqs,
}

impl RedbLogs {
    fn open(dir: &Path) -> anyhow::Result<Self> {
        Ok(RedbLogs {
            db: redb::Database::create(dir.join("w4.redb"))?,
            seqs: Seqs::default(),
        })
    }
}

impl RecoveryPeer for RedbLogs {
    fn publish(&mut self, batch: &[Publish]) -> anyhow::Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut bodies = tx.open_table(BODIES)?;
            let mut log = tx.open_table(LOG)?;
            for p in batch {
                let mut body = 2u32.to_le_bytes().to_vec();
                body.extend_from_slice(&p.value);
                bodies.insert(&p.id[..], &body[..])?;
                for c in p.channels {
                    log.insert(&log_key(c, self.seqs.next(c))[..], &p.id[..])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn count(&mut self) -> anyhow::Result<Counted> {
        let tx = self.db.begin_read()?;
        let log = tx.open_table(LOG)?;
        let bodies = tx.open_table(BODIES)?;
        let log = log.iter()?.map(|kv| {
            let (k, v) = kv?;
            Ok((k.value().try_into()?, v.value().try_into()?))
        });
        let bodies = bodies.iter()?.map(|kv| {
            let (k, v) = kv?;
            Ok((
                k.value().try_into()?,
                u32::from_le_bytes(v.value()[..4].try_into()?),
            ))
        });
        check_counts(log, bodies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(ids: &[[u8; 16]]) -> impl Iterator<Item = anyhow::Result<([u8; 12], [u8; 16])>> {
        let entries: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(seq, id)| Ok((log_key(1, seq as u64), *id)))
            .collect();
        entries.into_iter()
    }

    fn bodies(counts: &[([u8; 16], u32)]) -> impl Iterator<Item = anyhow::Result<([u8; 16], u32)>> {
        counts
            .iter()
            .map(|c| Ok(*c))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn a_count_that_is_off_or_a_log_entry_without_its_value_fails_the_check() {
        let (a, b) = ([1; 16], [2; 16]);
        let counted = check_counts(log(&[a, a, b]), bodies(&[(a, 2), (b, 1)])).unwrap();
        assert_eq!((counted.bodies, counted.references), (2, 3));
        assert_eq!(counted.per_channel.get(&1), Some(&3));
        assert!(check_counts(log(&[a, a, b]), bodies(&[(a, 1), (b, 1)])).is_err());
        assert!(check_counts(log(&[a, a, b]), bodies(&[(a, 2)])).is_err());
        assert!(check_counts(log(&[a]), bodies(&[(a, 1), (b, 1)])).is_err());
    }
}
