//! Compaction (docs/format.md §7.4): copy the live records of segments holding enough
//! garbage into a new segment, switch the index to it, delete the old files. Empty
//! segments are deleted without copying. Readers and writers share the lock only
//! for bookkeeping; every read, write and sync happens outside it.

use super::Shared;
use super::segment::{self, HEADER_BYTES};
use super::state::{Segment, State};
use crate::error::{IoContext, Result};
use crate::record::{Cursor, Step};
use crate::storage::OpenMode;
use std::path::PathBuf;
use std::time::Duration;

/// Index entries switched to the output per hold of the store's lock.
const SWITCH_BATCH: usize = 4096;
/// Output bytes gathered before one `pwrite`.
const WRITE_BATCH_BYTES: usize = 1 << 20;
/// How often the background compactor looks even when nothing woke it.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Segments compaction may touch: not the current one, not being compacted, and
/// wholly written to their files.
fn eligible(state: &State) -> impl Iterator<Item = (u32, &Segment)> {
    state.segments.iter().filter_map(|(&n, s)| {
        (n != state.current
            && !state.compacting.contains(&n)
            && !state.unreadable.contains(&n)
            && s.flushed_bytes == s.file_bytes)
            .then_some((n, s))
    })
}

/// Whether a step would do something: an empty segment to delete, or one whose
/// garbage fraction reached the threshold.
pub fn wanted(state: &State, options: &super::StoreOptions) -> bool {
    eligible(state).any(|(_, s)| {
        s.valid_bytes == 0
            || s.garbage_bytes() as f64 >= options.compact_garbage_fraction * s.file_bytes as f64
    })
}

/// The background compactor: steps while there is work, then sleeps.
pub fn run(shared: &Shared) {
    loop {
        {
            let mut state = shared.state.lock();
            if state.closing {
                return;
            }
            if !wanted(&state, &shared.options) {
                shared.compact_wake.wait_for(&mut state, IDLE_CHECK);
                continue;
            }
        }
        if let Err(e) = step(shared) {
            tracing::warn!(error = %e, "compaction failed; will retry");
            let mut state = shared.state.lock();
            if !state.closing {
                shared.compact_wake.wait_for(&mut state, IDLE_CHECK);
            }
        }
    }
}

/// Steps until nothing qualifies.
pub fn until_settled(shared: &Shared) -> Result<()> {
    while step(shared)? {}
    Ok(())
}

struct Input {
    number: u32,
    path: PathBuf,
    file_bytes: u64,
}

enum Plan {
    Delete(Vec<PathBuf>),
    Copy { inputs: Vec<Input>, output: u32 },
}

/// One step: delete the empty segments, or compact one group. Returns whether it did anything.
fn step(shared: &Shared) -> Result<bool> {
    let plan = {
        let mut state = shared.state.lock();
        if state.closing {
            return Ok(false);
        }
        plan(&mut state, shared)
    };
    match plan {
        None => Ok(false),
        Some(Plan::Delete(paths)) => {
            delete(shared, &paths)?;
            Ok(true)
        }
        Some(Plan::Copy { inputs, output }) => {
            let result = copy(shared, &inputs, output);
            if result.is_err() {
                let mut state = shared.state.lock();
                state
                    .compacting
                    .retain(|n| !inputs.iter().any(|i| i.number == *n));
                let _ = shared
                    .storage
                    .remove_file(&shared.dir.join(segment::compacting_name(output)));
            }
            result.map(|()| true)
        }
    }
}

fn plan(state: &mut State, shared: &Shared) -> Option<Plan> {
    let empty: Vec<u32> = eligible(state)
        .filter(|(_, s)| s.valid_bytes == 0)
        .map(|(n, _)| n)
        .collect();
    if !empty.is_empty() {
        let paths = empty
            .iter()
            .filter_map(|n| state.remove_segment(*n))
            .map(|s| s.path)
            .collect();
        state.counters.segments_deleted += empty.len() as u64;
        return Some(Plan::Delete(paths));
    }
    if !wanted(state, &shared.options) {
        return None;
    }
    let g = shared.options.compact_garbage_fraction;
    let mut candidates: Vec<(f64, u32, &Segment)> = eligible(state)
        .map(|(n, s)| (s.garbage_bytes() as f64 / s.file_bytes as f64, n, s))
        .filter(|(fraction, _, _)| *fraction >= g)
        .collect();
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let room = shared.options.segment_bytes_max;
    let mut inputs = Vec::new();
    let mut valid = HEADER_BYTES;
    for (_, number, s) in candidates {
        if !inputs.is_empty() && valid + s.valid_bytes > room {
            continue;
        }
        valid += s.valid_bytes;
        inputs.push(Input {
            number,
            path: s.path.clone(),
            file_bytes: s.file_bytes,
        });
    }
    if inputs.is_empty() {
        return None;
    }
    state.compacting.extend(inputs.iter().map(|i| i.number));
    let output = state.next_number;
    state.next_number += 1;
    Some(Plan::Copy { inputs, output })
}

fn delete(shared: &Shared, paths: &[PathBuf]) -> Result<()> {
    for path in paths {
        shared
            .storage
            .remove_file(path)
            .context(|| format!("deleting {}", path.display()))?;
    }
    shared
        .storage
        .sync_dir(&shared.dir)
        .context(|| format!("syncing {}", shared.dir.display()))
}

/// A record copied into the output, to switch in the index if it is still live there.
struct Moved {
    id: super::MsgId,
    input: u32,
    from: u32,
    to: u32,
    size: u32,
}

/// Steps 1–3 of §7.4 for one group.
fn copy(shared: &Shared, inputs: &[Input], output: u32) -> Result<()> {
    let storage = &*shared.storage;
    let out_path = shared.dir.join(segment::compacting_name(output));
    let out = storage
        .open(&out_path, OpenMode::CreateReadWrite)
        .context(|| format!("creating {}", out_path.display()))?;
    out.set_len(0)
        .context(|| format!("truncating {}", out_path.display()))?;
    let mut buf = segment::header(output);
    let mut written = 0u64;
    let mut moved = Vec::new();
    for input in inputs {
        // Opened here, not taken from the handle cache: a compaction reads each input once.
        let file = storage
            .open(&input.path, OpenMode::Read)
            .context(|| format!("opening {}", input.path.display()))?;
        let mut cursor = Cursor::new(file, HEADER_BYTES, input.file_bytes);
        let mut batch = Vec::new();
        loop {
            let step = cursor
                .next()
                .context(|| format!("reading {}", input.path.display()))?;
            let done = match step {
                Step::Record { offset, body } => {
                    let id = segment::parse_body(cursor.body(body.clone()))
                        .map(|(id, _)| id)
                        .ok_or_else(|| {
                            shared.state.lock().unreadable.push(input.number);
                            damaged(input, offset, "record too short")
                        })?;
                    batch.push((id, offset, cursor.framed(body).to_vec()));
                    false
                }
                Step::End => true,
                Step::Damaged { offset, reason } => {
                    // Left alone from now on: its records stay readable (or reported) where they are.
                    shared.state.lock().unreadable.push(input.number);
                    return Err(damaged(input, offset, reason));
                }
            };
            if done || batch.len() >= 256 {
                // Which of these records are still live here, asked in one short lock.
                let live: Vec<bool> = {
                    let state = shared.state.lock();
                    batch
                        .iter()
                        .map(|(id, offset, _)| {
                            state.index.get(id).is_some_and(|e| {
                                e.segment == input.number && u64::from(e.offset) == *offset
                            })
                        })
                        .collect()
                };
                for ((id, from, framed), live) in batch.drain(..).zip(live) {
                    if !live {
                        continue;
                    }
                    let to = written + buf.len() as u64;
                    moved.push(Moved {
                        id,
                        input: input.number,
                        from: from as u32,
                        to: to as u32,
                        size: framed.len() as u32,
                    });
                    buf.extend_from_slice(&framed);
                    if buf.len() >= WRITE_BATCH_BYTES {
                        out.write_all_at(&buf, written)
                            .context(|| format!("writing {}", out_path.display()))?;
                        written += buf.len() as u64;
                        buf.clear();
                    }
                }
            }
            if done {
                break;
            }
        }
    }
    out.write_all_at(&buf, written)
        .context(|| format!("writing {}", out_path.display()))?;
    written += buf.len() as u64;
    out.sync_data()
        .context(|| format!("syncing {}", out_path.display()))?;
    let seg_path = shared.dir.join(segment::segment_name(output));
    {
        let mut state = shared.state.lock();
        if state.closing {
            // Left as `.compacting`: the next open deletes it; the inputs stay.
            state
                .compacting
                .retain(|n| !inputs.iter().any(|i| i.number == *n));
            return Ok(());
        }
        storage
            .rename(&out_path, &seg_path)
            .context(|| format!("renaming {}", out_path.display()))?;
        state.segments.insert(
            output,
            Segment {
                path: seg_path,
                file_bytes: written,
                valid_bytes: 0,
                flushed_bytes: written,
                lsn_base: None,
            },
        );
    }
    // Switch the index in batches, so readers and writers wait for the lock at most
    // one batch's bookkeeping. Between batches an id points at either copy; both are
    // intact and both files are in the summary, so a snapshot taken meanwhile holds.
    for batch in moved.chunks(SWITCH_BATCH) {
        let mut state = shared.state.lock();
        if state.closing {
            // Both copies stay (the inputs are still listed): consistent as it is.
            return Ok(());
        }
        let (mut valid, mut released) = (0, Vec::new());
        for m in batch {
            if let Some(e) = state.index.get_mut(&m.id)
                && e.segment == m.input
                && e.offset == m.from
            {
                e.segment = output;
                e.offset = m.to;
                valid += u64::from(m.size);
                released.push((m.input, u64::from(m.size)));
            }
        }
        state
            .segments
            .get_mut(&output)
            .expect("the output")
            .valid_bytes += valid;
        for (input, size) in released {
            if let Some(s) = state.segments.get_mut(&input) {
                s.valid_bytes -= size;
            }
        }
    }
    {
        let mut state = shared.state.lock();
        if state.closing {
            return Ok(());
        }
        for input in inputs {
            state.remove_segment(input.number);
        }
        state
            .compacting
            .retain(|n| !inputs.iter().any(|i| i.number == *n));
        state.counters.compactions += 1;
        state.counters.bytes_rewritten += written - HEADER_BYTES;
    }
    shared
        .storage
        .sync_dir(&shared.dir)
        .context(|| format!("syncing {}", shared.dir.display()))?;
    let paths: Vec<PathBuf> = inputs.iter().map(|i| i.path.clone()).collect();
    delete(shared, &paths)
}

fn damaged(input: &Input, offset: u64, reason: &str) -> crate::Error {
    crate::Error::Corrupted {
        path: input.path.clone(),
        offset,
        reason: format!("compaction stopped at a damaged record: {reason}"),
    }
}
