//! `w2` against peers: 1 KiB values under random 16-byte ids, what a broker would
//! otherwise keep message bodies in. A batch of puts is one commit (see `driver`).
//! The same peers serve `w3` (`churn`): removes and giving the space back.

use crate::driver::{one_at_a_time, payload, pipelined};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Instant;

pub const VALUE_BYTES: usize = 1024;
pub const SEQUENTIAL: usize = 10_000;
pub const READS: usize = 100_000;

pub type Put = ([u8; 16], Vec<u8>);

/// Reads one value from another thread.
pub type Reader = Box<dyn FnMut(&[u8; 16]) -> anyhow::Result<Option<Vec<u8>>> + Send>;

pub trait KvPeer: Send {
    /// Makes `batch` durable (fsynced), then returns.
    fn put(&mut self, batch: &[Put]) -> anyhow::Result<()>;
    fn get(&mut self, id: &[u8; 16]) -> anyhow::Result<Option<Vec<u8>>>;
    /// Removes `ids` in one durable commit.
    fn remove(&mut self, ids: &[[u8; 16]]) -> anyhow::Result<()>;
    /// A reader that works while [`reclaim`](Self::reclaim) runs; `None` when the
    /// peer's way of reclaiming space shuts readers out.
    fn reader(&self) -> anyhow::Result<Option<Reader>>;
    /// Gives the space of removed values back the way the peer's users do; returns
    /// when it is done.
    fn reclaim(&mut self) -> anyhow::Result<()>;
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct W2Row {
    pub writes_per_s: f64,
    pub write_mb_per_s: f64,
    pub confirm_p50_us: u64,
    pub reads_per_s: f64,
}

impl From<vellum_bench::w2::W2Report> for W2Row {
    fn from(r: vellum_bench::w2::W2Report) -> Self {
        W2Row {
            writes_per_s: r.writes_per_s,
            write_mb_per_s: r.write_mb_per_s,
            confirm_p50_us: r.confirm_p50_us,
            reads_per_s: r.reads_per_s,
        }
    }
}

pub fn id(i: u64) -> [u8; 16] {
    payload(u32::MAX, i, 16).try_into().expect("16 bytes")
}

fn value(i: u64) -> Vec<u8> {
    payload(u32::MAX - 1, i, VALUE_BYTES)
}

/// `w2` (BRIEF §5) with `writes` writes; reads checked byte for byte.
pub fn w2(peer: &mut dyn KvPeer, writes: usize) -> anyhow::Result<W2Row> {
    let written = pipelined(
        writes,
        |i| (id(i as u64), value(i as u64)),
        |batch: &[Put]| peer.put(batch),
    )?;
    let confirm_p50_us = one_at_a_time(SEQUENTIAL, |i| {
        let i = (writes + i) as u64;
        peer.put(&[(id(i), value(i))])
    })?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let started = Instant::now();
    for _ in 0..READS {
        let i = rng.random_range(0..writes as u64);
        let got = peer.get(&id(i))?;
        anyhow::ensure!(got == Some(value(i)), "write {i} read back differently");
    }
    Ok(W2Row {
        writes_per_s: written.per_s,
        write_mb_per_s: written.per_s * VALUE_BYTES as f64 / 1e6,
        confirm_p50_us,
        reads_per_s: vellum_bench::stats::per_second(READS, started.elapsed()),
    })
}

/// SQLite, WAL, `synchronous=FULL`: a batch is one transaction. Space comes back
/// with `VACUUM` (then a checkpoint that truncates the WAL).
pub struct SqliteKv {
    conn: rusqlite::Connection,
    path: std::path::PathBuf,
}

impl SqliteKv {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("kv.sqlite");
        let conn = rusqlite::Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(60))?;
        conn.execute_batch("CREATE TABLE kv (id BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")?;
        Ok(SqliteKv { conn, path })
    }
}

fn sqlite_get(conn: &rusqlite::Connection, id: &[u8; 16]) -> anyhow::Result<Option<Vec<u8>>> {
    let mut select = conn.prepare_cached("SELECT v FROM kv WHERE id = ?1")?;
    let mut rows = select.query([&id[..]])?;
    Ok(match rows.next()? {
        Some(row) => Some(row.get(0)?),
        None => None,
    })
}

impl KvPeer for SqliteKv {
    fn put(&mut self, batch: &[Put]) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO kv VALUES (?1, ?2)")?;
            for (id, value) in batch {
                insert.execute(rusqlite::params![&id[..], value])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn get(&mut self, id: &[u8; 16]) -> anyhow::Result<Option<Vec<u8>>> {
        sqlite_get(&self.conn, id)
    }

    fn remove(&mut self, ids: &[[u8; 16]]) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM kv WHERE id = ?1")?;
            for id in ids {
                delete.execute([&id[..]])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn reader(&self) -> anyhow::Result<Option<Reader>> {
        // WAL: a second connection reads while the first vacuums.
        let conn = rusqlite::Connection::open(&self.path)?;
        conn.busy_timeout(std::time::Duration::from_secs(60))?;
        Ok(Some(Box::new(move |id| sqlite_get(&conn, id))))
    }

    fn reclaim(&mut self) -> anyhow::Result<()> {
        self.conn.execute_batch("VACUUM")?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// fjall: a batch is one write batch, then `persist(SyncData)`. Removes write
/// tombstones; space comes back as background compaction reaches them.
pub struct FjallKv {
    keyspace: fjall::Keyspace,
    values: fjall::PartitionHandle,
}

impl FjallKv {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let keyspace = fjall::Config::new(dir.join("fjall-kv")).open()?;
        let values = keyspace.open_partition("values", fjall::PartitionCreateOptions::default())?;
        Ok(FjallKv { keyspace, values })
    }
}

impl KvPeer for FjallKv {
    fn put(&mut self, batch: &[Put]) -> anyhow::Result<()> {
        let mut write = self.keyspace.batch();
        for (id, value) in batch {
            write.insert(&self.values, id, value);
        }
        write.commit()?;
        self.keyspace.persist(fjall::PersistMode::SyncData)?;
        Ok(())
    }

    fn get(&mut self, id: &[u8; 16]) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.values.get(id)?.map(|v| v.to_vec()))
    }

    fn remove(&mut self, ids: &[[u8; 16]]) -> anyhow::Result<()> {
        let mut write = self.keyspace.batch();
        for id in ids {
            write.remove(&self.values, id);
        }
        write.commit()?;
        self.keyspace.persist(fjall::PersistMode::SyncData)?;
        Ok(())
    }

    fn reader(&self) -> anyhow::Result<Option<Reader>> {
        let values = self.values.clone();
        Ok(Some(Box::new(move |id| {
            Ok(values.get(id)?.map(|v| v.to_vec()))
        })))
    }

    fn reclaim(&mut self) -> anyhow::Result<()> {
        // fjall 2 has no public call that gives space back: its background compaction
        // does, once the tombstones are flushed. So: flush the memtable, then wait until
        // the files have not changed for a second (at most two minutes). The
        // doc-hidden `major_compact` looked like the answer, but run after the flush it
        // brought removed keys back (w3's check caught it), so it is not used.
        self.values.rotate_memtable_and_wait()?;
        let started = Instant::now();
        let mut last = (self.keyspace.disk_space(), Instant::now());
        while last.1.elapsed() < std::time::Duration::from_secs(1)
            && started.elapsed() < std::time::Duration::from_secs(120)
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let now = self.keyspace.disk_space();
            if now != last.0 {
                last = (now, Instant::now());
            }
        }
        Ok(())
    }
}

/// redb (a copy-on-write B-tree): a batch is one write transaction, committed with
/// its default `Durability::Immediate` (fsynced). Space comes back with
/// `Database::compact`, which needs the database to itself (no readers).
pub struct RedbKv(redb::Database);

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("values");

impl RedbKv {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        Ok(RedbKv(redb::Database::create(dir.join("kv.redb"))?))
    }
}

impl KvPeer for RedbKv {
    fn put(&mut self, batch: &[Put]) -> anyhow::Result<()> {
        let tx = self.0.begin_write()?;
        {
            let mut table = tx.open_table(TABLE)?;
            for (id, value) in batch {
                table.insert(&id[..], &value[..])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn get(&mut self, id: &[u8; 16]) -> anyhow::Result<Option<Vec<u8>>> {
        let tx = self.0.begin_read()?;
        let table = tx.open_table(TABLE)?;
        Ok(table.get(&id[..])?.map(|v| v.value().to_vec()))
    }

    fn remove(&mut self, ids: &[[u8; 16]]) -> anyhow::Result<()> {
        let tx = self.0.begin_write()?;
        {
            let mut table = tx.open_table(TABLE)?;
            for id in ids {
                table.remove(&id[..])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn reader(&self) -> anyhow::Result<Option<Reader>> {
        Ok(None)
    }

    fn reclaim(&mut self) -> anyhow::Result<()> {
        while self.0.compact()? {}
        Ok(())
    }
}
