//! Vellum's benchmark workloads (BRIEF §5). Each returns its figures; the `vellum
//! bench` command prints them (JSON with `--json`). Speed goals live here, never in tests.

mod http;
pub mod server_process;
pub mod soak;
pub mod stats;
mod store_writes;
pub mod w1;
pub mod w2;
pub mod w3;
pub mod w4;
pub mod w5;
mod window;

use std::path::PathBuf;

/// What every workload takes.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Multiplies every count (1.0 = the figures that count).
    pub scale: f64,
    /// Where the data directory is made (a fresh temporary directory inside it).
    pub dir: Option<PathBuf>,
}

impl BenchOptions {
    /// `n` scaled, at least `min`.
    pub fn scaled(&self, n: usize, min: usize) -> usize {
        ((n as f64 * self.scale).round() as usize).max(min)
    }

    pub fn temp_dir(&self) -> anyhow::Result<tempfile::TempDir> {
        Ok(match &self.dir {
            Some(dir) => tempfile::tempdir_in(dir)?,
            None => tempfile::tempdir()?,
        })
    }
}
