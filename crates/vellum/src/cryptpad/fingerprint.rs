//! The fingerprint of the CryptPad files a channel is imported from (docs/format.md
//! §8.3): kept in the channel's origin record, it lets a re-run of an import tell a
//! channel it already imported from one it must not overwrite.

use super::lines::Line;

/// The fingerprint's length: a BLAKE3 hash.
pub const FINGERPRINT_BYTES: usize = 32;

/// Hashes the source files in a fixed order (log, metadata log, offset hint,
/// placeholder), each as `0` when absent, else `1`, its bytes and their length.
pub struct Fingerprint {
    hasher: blake3::Hasher,
    /// Bytes of the file being hashed.
    len: u64,
}

impl Fingerprint {
    pub fn new() -> Self {
        Fingerprint {
            hasher: blake3::Hasher::new(),
            len: 0,
        }
    }

    pub fn absent(&mut self) {
        self.hasher.update(&[0]);
    }

    pub fn begin_file(&mut self) {
        self.hasher.update(&[1]);
        self.len = 0;
    }

    /// One line of the file being hashed, with its `\n` when it had one: the lines
    /// of a file give back its exact bytes.
    pub fn line(&mut self, line: &Line<'_>) {
        self.bytes(line.bytes);
        if line.terminated {
            self.bytes(b"\n");
        }
    }

    pub fn bytes(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub fn end_file(&mut self) {
        self.hasher.update(&self.len.to_le_bytes());
    }

    /// A whole small file (or its absence).
    pub fn file(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            None => self.absent(),
            Some(bytes) => {
                self.begin_file();
                self.bytes(bytes);
                self.end_file();
            }
        }
    }

    pub fn finish(&self) -> [u8; FINGERPRINT_BYTES] {
        *self.hasher.finalize().as_bytes()
    }
}
