//! `w1` against peers: what a collaboration server would otherwise keep its channel
//! logs in. Each peer takes a batch of appends as one commit (see `driver`).

use crate::driver::{one_at_a_time, payload, pipelined};
use anyhow::Context;
use base64::Engine;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const CHANNELS: u32 = 1_000;
pub const MESSAGE_BYTES: usize = 200;
pub const SEQUENTIAL: usize = 10_000;

/// One append: channel, seq in it, and the message.
pub type Append = (u32, u64, Vec<u8>);

pub trait LogPeer: Send {
    /// Makes `batch` durable as the peer's label says, then returns.
    fn append(&mut self, batch: &[Append]) -> anyhow::Result<()>;
    /// A channel's messages in order.
    fn read(&mut self, channel: u32) -> anyhow::Result<Vec<Vec<u8>>>;
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct W1Row {
    pub appends_per_s: f64,
    pub ack_p50_us: u64,
    pub ack_p99_us: u64,
    pub read_msgs_per_s: f64,
    pub seq_ack_p50_us: u64,
}

impl From<vellum_bench::w1::W1Report> for W1Row {
    fn from(r: vellum_bench::w1::W1Report) -> Self {
        W1Row {
            appends_per_s: r.appends_per_s,
            ack_p50_us: r.ack_p50_us,
            ack_p99_us: r.ack_p99_us,
            read_msgs_per_s: r.read_msgs_per_s,
            seq_ack_p50_us: r.seq_ack_p50_us,
        }
    }
}

/// `w1` (BRIEF §5) with `messages` appends, checked: every channel reads back exactly
/// what was appended to it, in order.
pub fn w1(peer: &mut dyn LogPeer, messages: usize) -> anyhow::Result<W1Row> {
    let mut counts = vec![0u64; CHANNELS as usize];
    let mut rng = 0x5EED_u64;
    let appended = pipelined(
        messages,
        |_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let channel = (rng % u64::from(CHANNELS)) as u32;
            let seq = counts[channel as usize];
            counts[channel as usize] += 1;
            (channel, seq, payload(channel, seq, MESSAGE_BYTES))
        },
        |batch: &[Append]| peer.append(batch),
    )?;
    let started = Instant::now();
    let mut read = 0usize;
    for channel in 0..CHANNELS {
        let messages = peer.read(channel)?;
        anyhow::ensure!(
            messages.len() as u64 == counts[channel as usize],
            "channel {channel}: {} messages read, {} appended",
            messages.len(),
            counts[channel as usize]
        );
        for (seq, data) in messages.iter().enumerate() {
            anyhow::ensure!(
                *data == payload(channel, seq as u64, MESSAGE_BYTES),
                "channel {channel} seq {seq}: different bytes read back"
            );
        }
        read += messages.len();
    }
    let read_msgs_per_s = vellum_bench::stats::per_second(read, started.elapsed());
    let seq_ack_p50_us = one_at_a_time(SEQUENTIAL, |i| {
        let seq = i as u64;
        peer.append(&[(CHANNELS, seq, payload(CHANNELS, seq, MESSAGE_BYTES))])
    })?;
    Ok(W1Row {
        appends_per_s: appended.per_s,
        ack_p50_us: appended.p50_us,
        ack_p99_us: appended.p99_us,
        read_msgs_per_s,
        seq_ack_p50_us,
    })
}

/// A file per channel, written the way CryptPad's `file.js` writes it: each append
/// opens the file for appending, writes one line (here the message in base64), and
/// closes it — with or without an `fdatasync` before the close. Four appends run at
/// once (libuv's default thread pool), a channel's always on the same thread.
pub struct FilePerChannel {
    dir: PathBuf,
    fsync: bool,
}

const FILE_THREADS: usize = 4;

impl FilePerChannel {
    pub fn new(dir: &Path, fsync: bool) -> Self {
        FilePerChannel {
            dir: dir.to_path_buf(),
            fsync,
        }
    }

    fn path(&self, channel: u32) -> PathBuf {
        self.dir.join(format!("{channel}.ndjson"))
    }

    fn append_one(&self, (channel, _, data): &Append) -> anyhow::Result<()> {
        let mut line = base64::engine::general_purpose::STANDARD.encode(data);
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.path(*channel))?;
        file.write_all(line.as_bytes())?;
        if self.fsync {
            file.sync_data()?;
        }
        Ok(())
    }
}

impl LogPeer for FilePerChannel {
    fn append(&mut self, batch: &[Append]) -> anyhow::Result<()> {
        let this = &*self;
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..FILE_THREADS)
                .map(|t| {
                    s.spawn(move || {
                        batch
                            .iter()
                            .filter(|a| a.0 as usize % FILE_THREADS == t)
                            .try_for_each(|a| this.append_one(a))
                    })
                })
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().expect("an append thread"))
        })
    }

    fn read(&mut self, channel: u32) -> anyhow::Result<Vec<Vec<u8>>> {
        let text = match std::fs::read(self.path(channel)) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        text.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| Ok(base64::engine::general_purpose::STANDARD.decode(l)?))
            .collect()
    }
}

/// SQLite in WAL mode, one row per message keyed by (channel, seq); a batch is one
/// transaction. `synchronous=FULL` syncs the WAL at every commit; `NORMAL` only at
/// checkpoints (a commit can be lost at power failure, never corrupted).
pub struct Sqlite {
    conn: rusqlite::Connection,
}

impl Sqlite {
    pub fn open(dir: &Path, full: bool) -> anyhow::Result<Self> {
        let conn = rusqlite::Connection::open(dir.join("w1.sqlite"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" })?;
        conn.execute_batch(
            "CREATE TABLE m (ch INTEGER, seq INTEGER, data BLOB, PRIMARY KEY (ch, seq)) WITHOUT ROWID",
        )?;
        Ok(Sqlite { conn })
    }
}

impl LogPeer for Sqlite {
    fn append(&mut self, batch: &[Append]) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO m VALUES (?1, ?2, ?3)")?;
            for (channel, seq, data) in batch {
                insert.execute(rusqlite::params![channel, seq, data])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn read(&mut self, channel: u32) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut select = self
            .conn
            .prepare_cached("SELECT data FROM m WHERE ch = ?1 ORDER BY seq")?;
        let rows = select.query_map([channel], |row| row.get::<_, Vec<u8>>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// fjall (an LSM tree): one key per message, (channel, seq) big-endian; a batch is
/// one atomic write batch, followed by `persist(SyncData)` when `fsync`.
pub struct Fjall {
    keyspace: fjall::Keyspace,
    messages: fjall::PartitionHandle,
    fsync: bool,
}

impl Fjall {
    pub fn open(dir: &Path, fsync: bool) -> anyhow::Result<Self> {
        let keyspace = fjall::Config::new(dir.join("fjall")).open()?;
        let messages =
            keyspace.open_partition("messages", fjall::PartitionCreateOptions::default())?;
        Ok(Fjall {
            keyspace,
            messages,
            fsync,
        })
    }
}

fn message_key(channel: u32, seq: u64) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&channel.to_be_bytes());
    key[4..].copy_from_slice(&seq.to_be_bytes());
    key
}

impl LogPeer for Fjall {
    fn append(&mut self, batch: &[Append]) -> anyhow::Result<()> {
        let mut write = self.keyspace.batch();
        for (channel, seq, data) in batch {
            write.insert(&self.messages, message_key(*channel, *seq), data);
        }
        write.commit()?;
        if self.fsync {
            self.keyspace.persist(fjall::PersistMode::SyncData)?;
        }
        Ok(())
    }

    fn read(&mut self, channel: u32) -> anyhow::Result<Vec<Vec<u8>>> {
        self.messages
            .prefix(channel.to_be_bytes())
            .map(|kv| Ok(kv?.1.to_vec()))
            .collect()
    }
}

/// Redis Streams: one stream per channel, `XADD` per message; a batch is one pipeline
/// (one round trip). With `appendfsync always` Redis syncs its AOF before it answers;
/// with `everysec`, about once a second.
pub struct RedisStreams {
    conn: redis::Connection,
}

impl RedisStreams {
    pub fn connect(port: u16) -> anyhow::Result<Self> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
        Ok(RedisStreams {
            conn: client.get_connection().context("connecting to Redis")?,
        })
    }
}

impl LogPeer for RedisStreams {
    fn append(&mut self, batch: &[Append]) -> anyhow::Result<()> {
        let mut pipe = redis::pipe();
        for (channel, _, data) in batch {
            pipe.cmd("XADD")
                .arg(format!("w1:{channel}"))
                .arg("*")
                .arg("d")
                .arg(data.as_slice())
                .ignore();
        }
        pipe.query::<()>(&mut self.conn)?;
        Ok(())
    }

    fn read(&mut self, channel: u32) -> anyhow::Result<Vec<Vec<u8>>> {
        let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(format!("w1:{channel}"))
            .arg("-")
            .arg("+")
            .query(&mut self.conn)?;
        entries
            .into_iter()
            .map(|(_, mut fields)| fields.pop().context("an entry without its field"))
            .collect()
    }
}
