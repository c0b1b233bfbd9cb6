//! `w2` against peers: 1 KiB values under random 16-byte ids, what a broker would
//! otherwise keep message bodies in. A batch of puts is one commit (see `driver`).

use crate::driver::{one_at_a_time, payload, pipelined};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Instant;

pub const VALUE_BYTES: usize = 1024;
pub const SEQUENTIAL: usize = 10_000;
pub const READS: usize = 100_000;

pub type Put = ([u8; 16], Vec<u8>);

pub trait KvPeer: Send {
    /// Makes `batch` durable (fsynced), then returns.
    fn put(&mut self, batch: &[Put]) -> anyhow::Result<()>;
    fn get(&mut self, id: &[u8; 16]) -> anyhow::Result<Option<Vec<u8>>>;
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

fn id(i: u64) -> [u8; 16] {
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

/// SQLite, WAL, `synchronous=FULL`: a batch is one transaction.
pub struct SqliteKv(rusqlite::Connection);

impl SqliteKv {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let conn = rusqlite::Connection::open(dir.join("w2.sqlite"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch("CREATE TABLE kv (id BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")?;
        Ok(SqliteKv(conn))
    }
}

impl KvPeer for SqliteKv {
    fn put(&mut self, batch: &[Put]) -> anyhow::Result<()> {
        let tx = self.0.transaction()?;
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
        let mut select = self.0.prepare_cached("SELECT v FROM kv WHERE id = ?1")?;
        let mut rows = select.query([&id[..]])?;
        Ok(match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        })
    }
}

/// fjall: a batch is one write batch, then `persist(SyncData)`.
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
}

/// redb (a copy-on-write B-tree): a batch is one write transaction, committed with
/// its default `Durability::Immediate` (fsynced).
pub struct RedbKv(redb::Database);

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("values");

impl RedbKv {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        Ok(RedbKv(redb::Database::create(dir.join("w2.redb"))?))
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
}
