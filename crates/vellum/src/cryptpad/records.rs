//! Walking every record of a channel file in order: what an export turns back into
//! CryptPad files, and where a re-run of an import finds a channel's origin.

use super::fingerprint::FINGERPRINT_BYTES;
use crate::channel::file::{Body, CryptPadPart, Cursor, Header, Step};
use crate::engine::Inner;
use crate::error::{Error, IoContext, Result};
use crate::storage::{OpenMode, StorageFile};
use std::io;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

/// Calls `each` with every record of `file` (the committed bytes `[0, len)` of the
/// channel file at `path`) until it breaks. A damaged record is an error: an export
/// must not silently leave lines out.
pub fn for_each_record(
    file: Arc<dyn StorageFile>,
    len: u64,
    path: &Path,
    mut each: impl FnMut(Body<'_>) -> Result<ControlFlow<()>>,
) -> Result<()> {
    let corrupted = |offset, reason: &str| Error::Corrupted {
        path: path.to_path_buf(),
        offset,
        reason: reason.to_string(),
    };
    let (_, header_len) = Header::read(&*file).map_err(|_| corrupted(0, "bad channel header"))?;
    let mut cursor = Cursor::new(file, header_len, len);
    loop {
        match cursor
            .next()
            .context(|| format!("reading {}", path.display()))?
        {
            Step::Record { offset, body } => {
                let body = Body::parse(cursor.body(body)).map_err(|r| corrupted(offset, r))?;
                if each(body)?.is_break() {
                    return Ok(());
                }
            }
            Step::End => return Ok(()),
            Step::Damaged { offset, reason } => return Err(corrupted(offset, reason)),
        }
    }
}

/// The origin fingerprint recorded in the channel file at `path`: `None` when there is
/// no such file, or it holds no origin (it was not imported, or was rewritten since).
pub fn origin_of(inner: &Inner, path: &Path) -> Result<Option<[u8; FINGERPRINT_BYTES]>> {
    let file = match inner.storage.open(path, OpenMode::ReadQuietly) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context(|| format!("opening {}", path.display())),
    };
    let len = file
        .len()
        .context(|| format!("sizing {}", path.display()))?;
    let mut origin = None;
    let walked = for_each_record(file, len, path, |body| {
        if let Body::CryptPad {
            part: CryptPadPart::Origin,
            bytes,
            ..
        } = body
        {
            origin = bytes.try_into().ok();
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(()))
    });
    match walked {
        // Damage after the origin does not change where the channel came from; damage
        // before it leaves the channel unproven, so not "imported from these files".
        Ok(()) | Err(Error::Corrupted { .. }) => Ok(origin),
        Err(e) => Err(e),
    }
}
