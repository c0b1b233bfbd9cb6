//! Reading a CryptPad file line by line, split at `\n` as CryptPad's `readFileBin`
//! splits it, with every line bounded: a file is never read whole into memory, and a
//! line longer than the limit is refused with the file and line named.

use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Bytes read from the file at a time.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// One line of a file, borrowed from the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// 1 for the file's first line.
    pub number: u64,
    /// The line without its `\n`.
    pub bytes: &'a [u8],
    /// False only for the file's tail: bytes after its last `\n`, which CryptPad never reads.
    pub terminated: bool,
}

/// The lines of one file, each at most `max` bytes.
pub struct LineReader {
    reader: BufReader<File>,
    path: PathBuf,
    max: usize,
    line: Vec<u8>,
    number: u64,
}

impl LineReader {
    pub fn open(path: &Path, max: usize) -> Result<Self> {
        let file = File::open(path).context(|| format!("opening {}", path.display()))?;
        Ok(LineReader {
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, file),
            path: path.to_path_buf(),
            max,
            line: Vec::new(),
            number: 0,
        })
    }

    /// The next line, or `None` at the end of the file. The tail, if any, comes last.
    pub fn next_line(&mut self) -> Result<Option<Line<'_>>> {
        self.line.clear();
        let terminated = loop {
            let available = match self.reader.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context(|| format!("reading {}", self.path.display())),
            };
            if available.is_empty() {
                break false;
            }
            let (take, found) = match available.iter().position(|&b| b == b'\n') {
                Some(at) => (at, true),
                None => (available.len(), false),
            };
            if self.line.len() + take > self.max {
                return Err(Error::ImportLineTooLong {
                    path: self.path.clone(),
                    line: self.number + 1,
                    max: self.max,
                });
            }
            self.line.extend_from_slice(&available[..take]);
            self.reader.consume(take + usize::from(found));
            if found {
                break true;
            }
        };
        if !terminated && self.line.is_empty() {
            return Ok(None);
        }
        self.number += 1;
        Ok(Some(Line {
            number: self.number,
            bytes: &self.line,
            terminated,
        }))
    }
}

/// Reads a small file whole (an offset hint, a placeholder), refusing one over `max` bytes.
pub fn read_small(path: &Path, max: usize) -> Result<Vec<u8>> {
    let context = || format!("reading {}", path.display());
    let file = File::open(path).context(context)?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .context(context)?;
    if bytes.len() > max {
        return Err(Error::ImportLineTooLong {
            path: path.to_path_buf(),
            line: 1,
            max,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(content: &[u8], max: usize) -> Result<Vec<(Vec<u8>, bool)>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, content).unwrap();
        let mut reader = LineReader::open(&path, max)?;
        let mut out = Vec::new();
        while let Some(line) = reader.next_line()? {
            assert_eq!(line.number, out.len() as u64 + 1);
            out.push((line.bytes.to_vec(), line.terminated));
        }
        Ok(out)
    }

    #[test]
    fn lines_split_as_cryptpad_splits_them() {
        let got = lines_of(b"a\n\nbc\ntail", 10).unwrap();
        let want: Vec<(Vec<u8>, bool)> = vec![
            (b"a".to_vec(), true),
            (b"".to_vec(), true),
            (b"bc".to_vec(), true),
            (b"tail".to_vec(), false),
        ];
        assert_eq!(got, want);
        assert!(lines_of(b"", 10).unwrap().is_empty());
        assert_eq!(lines_of(b"\n", 10).unwrap(), vec![(Vec::new(), true)]);
    }

    #[test]
    fn a_line_over_the_limit_is_refused_with_its_number() {
        let long = [b"ok\n".as_slice(), &[b'x'; 200_000], b"\n"].concat();
        match lines_of(&long, 100_000) {
            Err(Error::ImportLineTooLong { line: 2, max, .. }) => assert_eq!(max, 100_000),
            other => panic!("{other:?}"),
        }
        // Exactly at the limit is fine, the tail too.
        assert_eq!(lines_of(b"xxxx\nyyyy", 4).unwrap().len(), 2);
        assert!(lines_of(b"xxxx\nyyyyy", 4).is_err());
    }
}
