//! An in-memory filesystem that fails on purpose and crashes on demand.
//!
//! [`SimStorage`] implements [`Storage`] with POSIX durability modelled
//! exactly as `mod.rs` states it, so a test can prove that the engine never
//! relies on a write it did not make durable:
//!
//! - every file (inode) has a *current* image, which reads see, and a
//!   *durable* image; `sync_data` copies the current image to the durable one,
//!   and the writes in between are kept in order as *pending* operations;
//! - every directory has *current* and *durable* entries; creating, renaming,
//!   linking and removing a name change only the current entries until
//!   `sync_dir` on that directory snapshots them;
//! - [`SimStorage::crash`] builds the post-crash disk from the durable state
//!   only (optionally replaying torn pending writes) and kills the old storage
//!   and every handle opened from it, the way power loss kills the process.
//!
//! Tests also inject failures ([`SimStorage::inject`]), stop the "process" at
//! its k-th mutating step ([`SimStorage::crash_after_ops`]) and corrupt data
//! at rest ([`SimStorage::flip_bit`]).
//!
//! Simplifications: `rename`, `hard_link` and `remove_file` take files only
//! (a directory gives `IsADirectory`), and a directory's times are its
//! creation time.

use super::{FileStat, OpenMode, Storage, StorageFile};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::ErrorKind::{
    AlreadyExists, InvalidInput, IsADirectory, NotADirectory, NotFound, PermissionDenied,
    StorageFull, WouldBlock,
};
use std::io::{self, ErrorKind};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

/// Which storage operation a [`Fault`] targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `StorageFile::write_all_at`. A failed write is a *short write*: the
    /// first half of the buffer (rounded down) reaches the current image
    /// before the error is returned, as when the disk fills up midway.
    Write,
    /// `StorageFile::set_len`; a failed call changes nothing.
    SetLen,
    /// `StorageFile::sync_data`; a failed call leaves the data pending.
    SyncData,
    /// `Storage::sync_dir`; a failed call leaves the entries unsynced.
    SyncDir,
    /// `Storage::rename`, matched against both paths; changes nothing.
    Rename,
    /// `Storage::remove_file`; changes nothing.
    Remove,
    /// Creating a name: a file by `open`, a link by `hard_link`, or each
    /// directory `create_dir_all` would create (matched against its argument).
    Create,
    /// `StorageFile::read_at`.
    Read,
}

/// A failure to inject: the `after + 1`-th operation of `kind` on a path
/// containing `path_contains` fails with `error`, and so does every later one
/// if `persistent`. Build one with `Fault { after: 2, ..Fault::new(kind) }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Which operation fails.
    pub kind: FaultKind,
    /// Only operations on a path containing this string count (`None`: all).
    /// A file handle's path is the one it was opened with.
    pub path_contains: Option<String>,
    /// How many matching operations succeed before the first failure.
    pub after: u64,
    /// `Other` for an `EIO`-like failure, `StorageFull` for `ENOSPC`.
    pub error: ErrorKind,
    /// Fail every matching operation after the first failure too.
    pub persistent: bool,
}

impl Fault {
    /// Fails the next `kind` operation on any path, once, with `Other`.
    pub fn new(kind: FaultKind) -> Self {
        Fault {
            kind,
            path_contains: None,
            after: 0,
            error: ErrorKind::Other,
            persistent: false,
        }
    }
}

/// What survives [`SimStorage::crash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Exactly the durable state: synced file images, synced directory entries.
    DropUnsynced,
    /// Like `DropUnsynced`, but each file's pending operations are replayed
    /// onto its durable image in order, each write independently kept whole,
    /// dropped, or torn to a random prefix, and each `set_len` kept or
    /// dropped, as a PRNG seeded with `seed` decides. Directory entries are
    /// still the durable ones only, to keep it simple: an unsynced entry
    /// change never survives here, although on a real disk it might.
    Torn {
        /// Seeds the PRNG that decides each pending operation's fate.
        seed: u64,
    },
}

/// The in-memory [`Storage`]. Clones share one filesystem.
#[derive(Clone)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

type NodeId = u64;
const ROOT: NodeId = 0;
/// Keeps a garbage offset from turning into a multi-gigabyte allocation.
const MAX_FILE_LEN: u64 = 1 << 30;
/// How many fired faults [`SimStorage::fired_faults`] names.
const FIRED_KEPT: usize = 16;

struct State {
    /// Inodes: every id is in exactly one of `files` and `dirs`.
    files: BTreeMap<NodeId, FileData>,
    dirs: BTreeMap<NodeId, DirData>,
    next_id: NodeId,
    /// Paths (as components) held by `lock_exclusive`.
    locks: HashSet<Vec<String>>,
    /// Armed faults, each with how many matching operations it has seen.
    faults: Vec<(Fault, u64)>,
    /// Faults that fired since the last `clear_faults`: the first `FIRED_KEPT`
    /// (kind and path), and how many in all.
    fired: (Vec<(FaultKind, PathBuf)>, u64),
    /// Mutating operations attempted so far.
    ops: u64,
    /// `ops` value at which the process dies (see `crash_after_ops`).
    crash_at: Option<u64>,
    /// The crash point was reached: every operation fails until `crash`.
    dying: bool,
    /// `crash` was called: this storage and its handles are gone.
    dead: bool,
}

struct FileData {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Operations since the last `sync_data`, oldest first (for torn crashes).
    pending: Vec<Pending>,
    /// Open handles; an unlinked inode lives until the last one closes.
    handles: usize,
    modified: SystemTime,
    accessed: SystemTime,
}

enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

struct DirData {
    entries: BTreeMap<String, NodeId>,
    durable: BTreeMap<String, NodeId>,
    created: SystemTime,
}

fn err(kind: ErrorKind, path: &Path) -> io::Error {
    io::Error::new(kind, format!("{kind}: {}", path.display()))
}

fn dead_error() -> io::Error {
    io::Error::other("simulated crash: storage is dead")
}

fn crash_point_error() -> io::Error {
    io::Error::other("simulated crash point reached")
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The normalized components of an absolute path.
fn components(path: &Path) -> io::Result<Vec<String>> {
    if !path.is_absolute() {
        let msg = format!("SimStorage needs absolute paths: {}", path.display());
        return Err(io::Error::new(InvalidInput, msg));
    }
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => names.push(name.to_string_lossy().into_owned()),
            // Without symlinks, resolving `..` lexically is what the OS does.
            Component::ParentDir => {
                names.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(names)
}

/// Writes `data` at `offset` into `image`, zero-filling any gap.
fn write_into(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    if data.is_empty() {
        return; // a zero-byte write does not extend the file
    }
    let (start, end) = (offset as usize, offset as usize + data.len());
    if image.len() < end {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(data);
}

/// SplitMix64: a tiny, well-mixed deterministic PRNG for torn crashes.
struct SplitMix64(u64);

impl SplitMix64 {
    /// A value in `0..n` (`n > 0`); the modulo bias does not matter here.
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

impl FileData {
    fn new(image: Vec<u8>) -> Self {
        let now = SystemTime::now();
        FileData {
            current: image.clone(),
            durable: image,
            pending: Vec::new(),
            handles: 0,
            modified: now,
            accessed: now,
        }
    }

    /// The durable image plus the pending operations, each kept, dropped or
    /// (writes only) torn to a prefix.
    fn torn_image(&self, rng: &mut SplitMix64) -> Vec<u8> {
        let mut image = self.durable.clone();
        for op in &self.pending {
            match op {
                Pending::Write { offset, data } => {
                    let kept = match rng.below(3) {
                        0 => data.len(),
                        1 => 0,
                        _ => rng.below(data.len() as u64 + 1) as usize,
                    };
                    write_into(&mut image, *offset, &data[..kept]);
                }
                Pending::SetLen(len) if rng.below(2) == 0 => image.resize(*len as usize, 0),
                Pending::SetLen(_) => {}
            }
        }
        image
    }
}

impl DirData {
    fn new(entries: BTreeMap<String, NodeId>) -> Self {
        DirData {
            durable: entries.clone(),
            entries,
            created: SystemTime::now(),
        }
    }

    /// Whether a current or durable entry names inode `id`.
    fn refers_to(&self, id: NodeId) -> bool {
        self.entries
            .values()
            .chain(self.durable.values())
            .any(|&n| n == id)
    }
}

impl State {
    fn new() -> Self {
        State {
            files: BTreeMap::new(),
            dirs: BTreeMap::from([(ROOT, DirData::new(BTreeMap::new()))]),
            next_id: ROOT + 1,
            locks: HashSet::new(),
            faults: Vec::new(),
            fired: (Vec::new(), 0),
            ops: 0,
            crash_at: None,
            dying: false,
            dead: false,
        }
    }

    /// Fails once the storage is dead or dying; every operation starts here,
    /// through the `live()` helpers.
    fn check(&self) -> io::Result<()> {
        match (self.dead, self.dying) {
            (true, _) => Err(dead_error()),
            (false, true) => Err(crash_point_error()),
            (false, false) => Ok(()),
        }
    }

    /// Counts one mutating step, or starts dying at the crash point.
    fn step(&mut self) -> io::Result<()> {
        if self.crash_at.is_some_and(|at| self.ops >= at) {
            self.dying = true;
            return Err(crash_point_error());
        }
        self.ops += 1;
        Ok(())
    }

    /// The injected error, if an armed fault fires for this operation.
    fn fault(&mut self, kind: FaultKind, paths: &[&Path]) -> io::Result<()> {
        let mut fired = None;
        for (fault, seen) in &mut self.faults {
            let on_path = fault.path_contains.as_deref().is_none_or(|fragment| {
                paths.iter().any(|p| p.to_string_lossy().contains(fragment))
            });
            if fault.kind == kind && on_path {
                *seen += 1;
                if *seen == fault.after + 1 || (fault.persistent && *seen > fault.after) {
                    fired.get_or_insert(fault.error);
                }
            }
        }
        match fired {
            None => Ok(()),
            Some(error) => {
                if self.fired.0.len() < FIRED_KEPT {
                    self.fired.0.push((kind, paths[0].to_path_buf()));
                }
                self.fired.1 += 1;
                let msg = format!("injected {kind:?} fault: {}", paths[0].display());
                Err(io::Error::new(error, msg))
            }
        }
    }

    /// A mutating step that an injected fault may fail.
    fn mutate(&mut self, kind: FaultKind, paths: &[&Path]) -> io::Result<()> {
        self.step()?;
        self.fault(kind, paths)
    }

    fn file(&mut self, id: NodeId) -> &mut FileData {
        self.files.get_mut(&id).expect("a live file inode")
    }

    fn dir_mut(&mut self, id: NodeId) -> &mut DirData {
        self.dirs.get_mut(&id).expect("directories are never freed")
    }

    fn new_id(&mut self) -> NodeId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The directory at `names`, following current entries.
    fn resolve_dir(&self, names: &[String], path: &Path) -> io::Result<NodeId> {
        let mut id = ROOT;
        for name in names {
            let dir = self.dirs.get(&id).ok_or_else(|| err(NotADirectory, path))?;
            id = *dir.entries.get(name).ok_or_else(|| err(NotFound, path))?;
        }
        match self.dirs.contains_key(&id) {
            true => Ok(id),
            false => Err(err(NotADirectory, path)),
        }
    }

    /// `(parent directory, name, inode the name points to)`.
    fn lookup(&self, path: &Path) -> io::Result<(NodeId, String, Option<NodeId>)> {
        let mut names = components(path)?;
        let name = names.pop().ok_or_else(|| err(IsADirectory, path))?;
        let parent = self.resolve_dir(&names, path)?;
        let child = self.dirs[&parent].entries.get(&name).copied();
        Ok((parent, name, child))
    }

    /// Like `lookup`, for a file that must exist.
    fn lookup_file(&self, path: &Path) -> io::Result<(NodeId, String, NodeId)> {
        match self.lookup(path)? {
            (_, _, None) => Err(err(NotFound, path)),
            (_, _, Some(id)) if self.dirs.contains_key(&id) => Err(err(IsADirectory, path)),
            (parent, name, Some(id)) => Ok((parent, name, id)),
        }
    }

    /// Frees a file inode nothing refers to any more (no current or durable
    /// name, no open handle), so that long tests do not hoard deleted data.
    fn release_if_orphan(&mut self, id: NodeId) {
        // Directories are never freed: the trait cannot remove them.
        let in_use = self.files.get(&id).is_none_or(|file| file.handles > 0);
        if !in_use && !self.dirs.values().any(|dir| dir.refers_to(id)) {
            self.files.remove(&id);
        }
    }

    fn open(&mut self, path: &Path, mode: OpenMode) -> io::Result<NodeId> {
        let (parent, name, existing) = self.lookup(path)?;
        let id = match (existing, mode) {
            (Some(_), OpenMode::CreateNew) => return Err(err(AlreadyExists, path)),
            (Some(id), _) if self.dirs.contains_key(&id) => return Err(err(IsADirectory, path)),
            (Some(id), _) => id,
            (None, OpenMode::Read | OpenMode::ReadQuietly | OpenMode::ReadWrite) => {
                return Err(err(NotFound, path));
            }
            (None, OpenMode::CreateReadWrite | OpenMode::CreateNew) => {
                self.mutate(FaultKind::Create, &[path])?;
                let id = self.new_id();
                self.files.insert(id, FileData::new(Vec::new()));
                self.dir_mut(parent).entries.insert(name, id);
                id
            }
        };
        let file = self.file(id);
        if mode != OpenMode::ReadQuietly {
            file.accessed = SystemTime::now();
        }
        file.handles += 1;
        Ok(id)
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let (from_dir, from_name, source) = self.lookup_file(from)?;
        let (to_dir, to_name, target) = self.lookup(to)?;
        if target.is_some_and(|id| self.dirs.contains_key(&id)) {
            return Err(err(IsADirectory, to));
        }
        self.mutate(FaultKind::Rename, &[from, to])?;
        // POSIX: renaming between two names of one inode does nothing.
        if target != Some(source) {
            self.dir_mut(from_dir).entries.remove(&from_name);
            self.dir_mut(to_dir).entries.insert(to_name, source);
            if let Some(replaced) = target {
                self.release_if_orphan(replaced);
            }
        }
        Ok(())
    }

    fn hard_link(&mut self, original: &Path, link: &Path) -> io::Result<()> {
        let (_, _, source) = self.lookup_file(original)?;
        let (dir, name, existing) = self.lookup(link)?;
        if existing.is_some() {
            return Err(err(AlreadyExists, link));
        }
        self.mutate(FaultKind::Create, &[link])?;
        self.dir_mut(dir).entries.insert(name, source);
        Ok(())
    }

    fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        let (dir, name, id) = self.lookup_file(path)?;
        self.mutate(FaultKind::Remove, &[path])?;
        self.dir_mut(dir).entries.remove(&name);
        self.release_if_orphan(id);
        Ok(())
    }

    fn create_dir_all(&mut self, path: &Path) -> io::Result<()> {
        let names = components(path)?;
        let mut id = ROOT;
        for (i, name) in names.iter().enumerate() {
            id = match self.dirs[&id].entries.get(name) {
                Some(child) if self.dirs.contains_key(child) => *child,
                Some(_) if i + 1 == names.len() => return Err(err(AlreadyExists, path)),
                Some(_) => return Err(err(NotADirectory, path)),
                None => {
                    self.mutate(FaultKind::Create, &[path])?;
                    let child = self.new_id();
                    self.dirs.insert(child, DirData::new(BTreeMap::new()));
                    // The new directory is current but not durable in its parent.
                    self.dir_mut(id).entries.insert(name.clone(), child);
                    child
                }
            };
        }
        Ok(())
    }

    fn sync_dir(&mut self, path: &Path) -> io::Result<()> {
        let id = self.resolve_dir(&components(path)?, path)?;
        self.mutate(FaultKind::SyncDir, &[path])?;
        let dir = self.dir_mut(id);
        let old = std::mem::replace(&mut dir.durable, dir.entries.clone());
        for dropped in old.into_values() {
            self.release_if_orphan(dropped);
        }
        Ok(())
    }

    /// Every file's data and every directory's entries made durable (one step,
    /// failed by a `SyncDir` fault on `path`).
    fn sync_filesystem(&mut self, path: &Path) -> io::Result<()> {
        self.mutate(FaultKind::SyncDir, &[path])?;
        for file in self.files.values_mut() {
            file.durable.clone_from(&file.current);
            file.pending.clear();
        }
        let mut dropped = Vec::new();
        for dir in self.dirs.values_mut() {
            let old = std::mem::replace(&mut dir.durable, dir.entries.clone());
            dropped.extend(old.into_values());
        }
        for id in dropped {
            self.release_if_orphan(id);
        }
        Ok(())
    }

    fn stat(&self, path: &Path) -> io::Result<Option<FileStat>> {
        let id = if components(path)?.is_empty() {
            ROOT
        } else {
            match self.lookup(path) {
                Ok((_, _, Some(id))) => id,
                Ok((_, _, None)) => return Ok(None),
                Err(e) if e.kind() == NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
        };
        let Some(file) = self.files.get(&id) else {
            let time = self.dirs[&id].created;
            return Ok(Some(FileStat {
                len: 0,
                modified: time,
                accessed: time,
                is_dir: true,
            }));
        };
        Ok(Some(FileStat {
            len: file.current.len() as u64,
            modified: file.modified,
            accessed: file.accessed,
            is_dir: false,
        }))
    }

    /// The post-crash state; see [`CrashMode`].
    fn after_crash(&self, mode: CrashMode) -> State {
        // Only what the root reaches through durable entries survives.
        let mut reachable = BTreeSet::new();
        let mut stack = vec![ROOT];
        while let Some(id) = stack.pop() {
            if reachable.insert(id)
                && let Some(dir) = self.dirs.get(&id)
            {
                stack.extend(dir.durable.values().copied());
            }
        }
        let mut rng = match mode {
            CrashMode::DropUnsynced => None,
            CrashMode::Torn { seed } => Some(SplitMix64(seed)),
        };
        let mut next = State {
            next_id: self.next_id,
            ..State::new()
        };
        // Visiting inodes in id order makes a seed always tear the same way.
        for id in reachable {
            if let Some(dir) = self.dirs.get(&id) {
                let dir = DirData {
                    created: dir.created,
                    ..DirData::new(dir.durable.clone())
                };
                next.dirs.insert(id, dir);
            } else {
                let file = &self.files[&id];
                let image = match &mut rng {
                    None => file.durable.clone(),
                    Some(rng) => file.torn_image(rng),
                };
                let (modified, accessed) = (file.modified, file.accessed);
                let file = FileData {
                    modified,
                    accessed,
                    ..FileData::new(image)
                };
                next.files.insert(id, file);
            }
        }
        next
    }
}

impl SimStorage {
    /// An empty filesystem holding only `/`.
    pub fn new() -> Self {
        SimStorage {
            state: Arc::new(Mutex::new(State::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Locks the state of a storage that is still alive.
    fn live(&self) -> io::Result<MutexGuard<'_, State>> {
        let state = self.lock();
        state.check().map(|()| state)
    }

    /// Simulates power loss: returns a new storage holding what survives
    /// according to `mode`, and kills this one, so every later operation on
    /// it or on a handle opened from it fails. Locks, faults and the crash
    /// point are not carried over. May be called again on the dead storage to
    /// explore other outcomes of the same run (e.g. several torn seeds).
    pub fn crash(&self, mode: CrashMode) -> SimStorage {
        let mut state = self.lock();
        state.dead = true;
        SimStorage {
            state: Arc::new(Mutex::new(state.after_crash(mode))),
        }
    }

    /// Lets `n` more mutating operations run, then fails the next one and
    /// every operation after it, as a process does while it dies. Mutating
    /// operations are `write_all_at`, `set_len`, `sync_data`, `rename`,
    /// `hard_link`, `remove_file`, `sync_dir`, and creating a file (`open`,
    /// `lock_exclusive`) or a directory (`create_dir_all`, once per
    /// directory); one failed by an injected fault still counts.
    pub fn crash_after_ops(&self, n: u64) {
        let mut state = self.lock();
        state.crash_at = Some(state.ops + n);
    }

    /// Mutating operations performed so far (see [`Self::crash_after_ops`]).
    pub fn mutating_ops(&self) -> u64 {
        self.lock().ops
    }

    /// Arms `fault`. When several armed faults fire on one operation, the
    /// first injected one decides the error.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push((fault, 0));
    }

    /// Disarms every injected fault and forgets which fired.
    pub fn clear_faults(&self) {
        let mut state = self.lock();
        state.faults.clear();
        state.fired = (Vec::new(), 0);
    }

    /// The faults that fired since the last [`Self::clear_faults`] (the first
    /// 16: kind and path), and how many fired in all.
    pub fn fired_faults(&self) -> (Vec<(FaultKind, PathBuf)>, u64) {
        self.lock().fired.clone()
    }

    /// A copy of the disk as a crash now would leave it (`mode`), while this
    /// storage and its handles go on working: to look at what survives
    /// without ending the run.
    pub fn copy_after_crash(&self, mode: CrashMode) -> SimStorage {
        SimStorage {
            state: Arc::new(Mutex::new(self.lock().after_crash(mode))),
        }
    }

    /// Flips bit `bit` (0–7) of the byte at `offset` in both the current and
    /// the durable image of the file at `path`, as corruption at rest would.
    /// Panics if there is no such file or byte: that is a bug in the test.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) {
        assert!(bit < 8, "flip_bit: bit {bit} is not in 0..8");
        let mut state = self.lock();
        let (_, _, id) = state.lookup_file(path).expect("flip_bit needs a file");
        let file = state.file(id);
        let mut flipped = false;
        for image in [&mut file.current, &mut file.durable] {
            if let Some(byte) = image.get_mut(offset as usize) {
                *byte ^= 1 << bit;
                flipped = true;
            }
        }
        assert!(
            flipped,
            "flip_bit: offset {offset} is past the end of {}",
            path.display()
        );
    }

    /// The durable length of the file named `path`, even after a crash.
    pub fn durable_len(&self, path: &Path) -> Option<u64> {
        let mut state = self.lock();
        let (_, _, id) = state.lookup_file(path).ok()?;
        Some(state.file(id).durable.len() as u64)
    }

    /// The current contents of the file named `path`, even after a crash.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let mut state = self.lock();
        let (_, _, id) = state.lookup_file(path).ok()?;
        Some(state.file(id).current.clone())
    }
}

impl Default for SimStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStorage").finish_non_exhaustive()
    }
}

/// An open file; keeps its inode alive even after it is unlinked.
struct SimFile {
    state: Arc<Mutex<State>>,
    id: NodeId,
    /// The path it was opened with, for fault matching and messages.
    path: PathBuf,
    writable: bool,
    /// Opened with `ReadQuietly`: reads leave the access time alone.
    quiet: bool,
}

impl SimFile {
    /// Locks the state of a storage that is still alive.
    fn live(&self) -> io::Result<MutexGuard<'_, State>> {
        let state = lock(&self.state);
        state.check().map(|()| state)
    }

    /// Locks the state for a change that makes the file `end` bytes long.
    fn live_for_write(&self, end: u64) -> io::Result<MutexGuard<'_, State>> {
        let state = self.live()?;
        if !self.writable {
            return Err(err(PermissionDenied, &self.path));
        }
        if end > MAX_FILE_LEN {
            return Err(err(StorageFull, &self.path));
        }
        Ok(state)
    }
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut state = self.live()?;
        state.fault(FaultKind::Read, &[&self.path])?;
        let file = state.file(self.id);
        if !self.quiet {
            file.accessed = SystemTime::now();
        }
        let image = &file.current;
        let start = image.len().min(offset.try_into().unwrap_or(usize::MAX));
        let n = buf.len().min(image.len() - start);
        buf[..n].copy_from_slice(&image[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.live_for_write(offset.saturating_add(buf.len() as u64))?;
        state.step()?;
        let (written, result) = match state.fault(FaultKind::Write, &[&self.path]) {
            Ok(()) => (buf, Ok(())),
            Err(e) => (&buf[..buf.len() / 2], Err(e)), // a short write
        };
        if !written.is_empty() {
            let file = state.file(self.id);
            file.modified = SystemTime::now();
            write_into(&mut file.current, offset, written);
            file.pending.push(Pending::Write {
                offset,
                data: written.to_vec(),
            });
        }
        result
    }

    fn len(&self) -> io::Result<u64> {
        let mut state = self.live()?;
        Ok(state.file(self.id).current.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.live_for_write(len)?;
        state.mutate(FaultKind::SetLen, &[&self.path])?;
        let file = state.file(self.id);
        file.modified = SystemTime::now();
        file.current.resize(len as usize, 0);
        file.pending.push(Pending::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.live()?;
        state.mutate(FaultKind::SyncData, &[&self.path])?;
        let file = state.file(self.id);
        file.durable.clone_from(&file.current);
        file.pending.clear();
        Ok(())
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        state.file(self.id).handles -= 1;
        state.release_if_orphan(self.id);
    }
}

/// Holds a `lock_exclusive` lock, and its lock file open, until dropped.
struct LockGuard {
    state: Arc<Mutex<State>>,
    key: Vec<String>,
    _file: Arc<dyn StorageFile>,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        lock(&self.state).locks.remove(&self.key);
    }
}

impl Storage for SimStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let id = self.live()?.open(path, mode)?;
        Ok(Arc::new(SimFile {
            state: Arc::clone(&self.state),
            id,
            path: path.to_owned(),
            writable: !matches!(mode, OpenMode::Read | OpenMode::ReadQuietly),
            quiet: mode == OpenMode::ReadQuietly,
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.live()?.rename(from, to)
    }
    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()> {
        self.live()?.hard_link(original, link)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.live()?.remove_file(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.live()?.create_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.live()?.sync_dir(path)
    }
    fn sync_filesystem(&self, path: &Path) -> io::Result<()> {
        self.live()?.sync_filesystem(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let state = self.live()?;
        let id = state.resolve_dir(&components(path)?, path)?;
        Ok(state.dirs[&id].entries.keys().cloned().collect()) // sorted: a BTreeMap
    }
    fn stat(&self, path: &Path) -> io::Result<Option<FileStat>> {
        self.live()?.stat(path)
    }
    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn Send + Sync>> {
        let key = components(path)?;
        let file = self.open(path, OpenMode::CreateReadWrite)?;
        if !self.lock().locks.insert(key.clone()) {
            return Err(err(WouldBlock, path));
        }
        Ok(Box::new(LockGuard {
            state: Arc::clone(&self.state),
            key,
            _file: file,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind::Other;

    fn p(path: &str) -> &Path {
        Path::new(path)
    }

    /// Creates `path` holding `data`, synced (data and directory) if `durable`.
    fn put(storage: &SimStorage, path: &str, data: &[u8], durable: bool) -> Arc<dyn StorageFile> {
        let file = storage.open(p(path), OpenMode::CreateReadWrite).unwrap();
        file.write_all_at(data, 0).unwrap();
        if durable {
            file.sync_data().unwrap();
            storage.sync_dir(p(path).parent().unwrap()).unwrap();
        }
        file
    }

    fn read(storage: &SimStorage, path: &str) -> Option<Vec<u8>> {
        storage.read_file(p(path))
    }

    fn names(storage: &SimStorage, dir: &str) -> Vec<String> {
        storage.list_dir(p(dir)).unwrap()
    }

    fn crash(storage: &SimStorage) -> SimStorage {
        storage.crash(CrashMode::DropUnsynced)
    }

    #[test]
    fn unsynced_write_is_lost_on_crash() {
        let storage = SimStorage::new();
        let file = put(&storage, "/log", b"abc", true);
        file.write_all_at(b"hello", 0).unwrap();
        file.set_len(4).unwrap();
        assert_eq!(read(&storage, "/log").unwrap(), b"hell");
        assert_eq!(read(&crash(&storage), "/log").unwrap(), b"abc");
    }

    #[test]
    fn synced_write_survives_crash() {
        let storage = SimStorage::new();
        put(&storage, "/log", b"hello", true);
        let file = crash(&storage).open(p("/log"), OpenMode::Read).unwrap();
        let mut buf = [0; 5];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello");
    }

    #[test]
    fn new_file_without_dir_sync_vanishes_on_crash() {
        let storage = SimStorage::new();
        put(&storage, "/log", b"hello", false).sync_data().unwrap();
        let after = crash(&storage);
        assert_eq!(after.stat(p("/log")).unwrap(), None);
        assert!(names(&after, "/").is_empty());
    }

    #[test]
    fn new_dir_without_parent_sync_vanishes_on_crash() {
        let storage = SimStorage::new();
        storage.create_dir_all(p("/db/wal")).unwrap();
        put(&storage, "/db/wal/1", b"x", true); // syncs /db/wal
        storage.sync_dir(p("/db")).unwrap(); // but never /
        let after = crash(&storage);
        assert_eq!(after.stat(p("/db")).unwrap(), None);
        let err = after.open(p("/db/wal/1"), OpenMode::Read).err().unwrap();
        assert_eq!(err.kind(), NotFound);
    }

    #[test]
    fn rename_is_durable_only_after_dir_sync() {
        let run = |sync_after_rename: bool| {
            let storage = SimStorage::new();
            put(&storage, "/m.tmp", b"new", true);
            put(&storage, "/m", b"old", true);
            storage.rename(p("/m.tmp"), p("/m")).unwrap();
            assert_eq!(names(&storage, "/"), ["m"]);
            if sync_after_rename {
                storage.sync_dir(p("/")).unwrap();
            }
            crash(&storage)
        };
        let unsynced = run(false);
        assert_eq!(names(&unsynced, "/"), ["m", "m.tmp"]);
        assert_eq!(read(&unsynced, "/m").unwrap(), b"old");
        let synced = run(true);
        assert_eq!(names(&synced, "/"), ["m"]);
        assert_eq!(read(&synced, "/m").unwrap(), b"new");
    }

    #[test]
    fn cross_directory_rename_is_durable_per_directory() {
        let storage = SimStorage::new();
        storage.create_dir_all(p("/a")).unwrap();
        storage.create_dir_all(p("/b")).unwrap();
        storage.sync_dir(p("/")).unwrap();
        put(&storage, "/a/f", b"data", true);
        storage.rename(p("/a/f"), p("/b/f")).unwrap();
        storage.sync_dir(p("/b")).unwrap(); // not /a: both names survive
        let after = crash(&storage);
        assert_eq!(read(&after, "/a/f").unwrap(), b"data");
        assert_eq!(read(&after, "/b/f").unwrap(), b"data");
    }

    #[test]
    fn removed_file_keeps_its_durable_name_until_dir_sync() {
        let storage = SimStorage::new();
        put(&storage, "/seg", b"data", true);
        storage.remove_file(p("/seg")).unwrap();
        assert_eq!(storage.stat(p("/seg")).unwrap(), None);
        let after = crash(&storage);
        assert_eq!(read(&after, "/seg").unwrap(), b"data");
        after.remove_file(p("/seg")).unwrap();
        after.sync_dir(p("/")).unwrap();
        assert_eq!(crash(&after).stat(p("/seg")).unwrap(), None);
    }

    #[test]
    fn unlinked_file_keeps_working_through_open_handles() {
        let storage = SimStorage::new();
        let file = put(&storage, "/f", b"abc", false);
        storage.remove_file(p("/f")).unwrap();
        file.write_all_at(b"d", 3).unwrap();
        let mut buf = [0; 4];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"abcd");
        drop(file);
        assert!(
            storage.lock().files.is_empty(),
            "the last close frees the inode"
        );
    }

    #[test]
    fn torn_crash_keeps_a_prefix_of_pending_writes() {
        let storage = SimStorage::new();
        let file = put(&storage, "/log", b"", true);
        let data: Vec<u8> = (1..=64).collect();
        file.write_all_at(&data, 0).unwrap();
        let torn = |seed| read(&storage.crash(CrashMode::Torn { seed }), "/log").unwrap();
        let (mut whole, mut lost, mut cut) = (0, 0, BTreeSet::new());
        for seed in 0..300 {
            let image = torn(seed);
            assert!(data.starts_with(&image), "seed {seed}: {image:?}");
            match image.len() {
                64 => whole += 1,
                0 => lost += 1,
                n => {
                    cut.insert(n);
                }
            }
        }
        // Each outcome has a fair chance (about a third each).
        assert!(whole > 60 && lost > 60, "{whole} whole, {lost} lost");
        assert!(cut.len() > 30, "torn at few places: {cut:?}");
        assert_eq!(torn(7), torn(7), "a seed always tears the same way");
    }

    #[test]
    fn injected_sync_failure_returns_error_and_leaves_data_unsynced() {
        let storage = SimStorage::new();
        let file = put(&storage, "/log", b"", true);
        let path_contains = Some("log".to_owned());
        storage.inject(Fault {
            path_contains,
            ..Fault::new(FaultKind::SyncData)
        });
        file.write_all_at(b"hello", 0).unwrap();
        assert_eq!(file.sync_data().unwrap_err().kind(), Other);
        assert_eq!(storage.durable_len(p("/log")), Some(0));
        assert_eq!(read(&crash(&storage), "/log").unwrap(), b"");
    }

    #[test]
    fn injected_fault_fires_once_after_the_given_count() {
        let storage = SimStorage::new();
        let file = put(&storage, "/log", b"", true);
        let fault = Fault {
            after: 1,
            error: StorageFull,
            ..Fault::new(FaultKind::Write)
        };
        storage.inject(fault);
        file.write_all_at(b"ab", 0).unwrap();
        assert_eq!(
            file.write_all_at(b"cdef", 2).unwrap_err().kind(),
            StorageFull
        );
        assert_eq!(
            read(&storage, "/log").unwrap(),
            b"abcd",
            "the failed write is short"
        );
        file.write_all_at(b"ef", 4).unwrap();
    }

    #[test]
    fn persistent_fault_keeps_failing_only_on_matching_paths() {
        let storage = SimStorage::new();
        let path_contains = Some("seg".to_owned());
        let fault = Fault {
            path_contains,
            persistent: true,
            ..Fault::new(FaultKind::Create)
        };
        storage.inject(fault);
        for _ in 0..3 {
            let err = storage
                .open(p("/seg-1"), OpenMode::CreateNew)
                .err()
                .unwrap();
            assert_eq!(err.kind(), Other);
        }
        assert_eq!(storage.stat(p("/seg-1")).unwrap(), None);
        storage.open(p("/index"), OpenMode::CreateNew).unwrap();
        storage.clear_faults();
        storage.open(p("/seg-1"), OpenMode::CreateNew).unwrap();
    }

    #[test]
    fn crash_after_ops_stops_the_dying_process() {
        // Six steps: create, write, sync_data, sync_dir, rename, sync_dir.
        let workload = |storage: &SimStorage| -> io::Result<()> {
            let file = storage.open(p("/m.tmp"), OpenMode::CreateNew)?;
            file.write_all_at(b"v2", 0)?;
            file.sync_data()?;
            storage.sync_dir(p("/"))?;
            storage.rename(p("/m.tmp"), p("/m"))?;
            storage.sync_dir(p("/"))
        };
        let counter = SimStorage::new();
        workload(&counter).unwrap();
        assert_eq!(counter.mutating_ops(), 6);
        for k in 0..6 {
            let storage = SimStorage::new();
            storage.crash_after_ops(k);
            let err = workload(&storage).unwrap_err();
            assert_eq!(err.to_string(), "simulated crash point reached");
            assert_eq!(storage.mutating_ops(), k);
            assert!(
                storage.list_dir(p("/")).is_err(),
                "reads fail too once dying"
            );
            let expected: &[&str] = if k < 4 { &[] } else { &["m.tmp"] };
            assert_eq!(
                names(&crash(&storage), "/"),
                expected,
                "crash after {k} ops"
            );
        }
    }

    #[test]
    fn old_handles_fail_after_crash() {
        let storage = SimStorage::new();
        let file = put(&storage, "/log", b"hello", true);
        let after = crash(&storage);
        let err = file.read_at(&mut [0; 5], 0).unwrap_err();
        assert_eq!(
            (err.kind(), err.to_string()),
            (Other, "simulated crash: storage is dead".into())
        );
        assert!(file.write_all_at(b"x", 0).is_err());
        assert!(storage.stat(p("/log")).is_err());
        assert!(storage.open(p("/log"), OpenMode::Read).is_err());
        assert_eq!(after.stat(p("/log")).unwrap().unwrap().len, 5);
    }

    #[test]
    fn hard_link_shares_inode() {
        let storage = SimStorage::new();
        let file = put(&storage, "/a", b"one", true);
        storage.hard_link(p("/a"), p("/b")).unwrap();
        file.write_all_at(b"two", 0).unwrap();
        assert_eq!(read(&storage, "/b").unwrap(), b"two");
        storage.remove_file(p("/a")).unwrap();
        assert_eq!(read(&storage, "/b").unwrap(), b"two");
        let err = storage.hard_link(p("/b"), p("/b")).unwrap_err();
        assert_eq!(err.kind(), AlreadyExists);
    }

    #[test]
    fn lock_is_exclusive() {
        let storage = SimStorage::new();
        let guard = storage.lock_exclusive(p("/LOCK")).unwrap();
        assert!(
            storage.stat(p("/LOCK")).unwrap().is_some(),
            "the lock file is created"
        );
        let err = storage.lock_exclusive(p("/LOCK")).err().unwrap();
        assert_eq!(err.kind(), WouldBlock);
        drop(guard);
        storage.lock_exclusive(p("/LOCK")).unwrap();
    }

    #[test]
    fn flip_bit_corrupts_current_and_durable_images() {
        let storage = SimStorage::new();
        put(&storage, "/log", &[0b01], true);
        storage.flip_bit(p("/log"), 0, 1);
        assert_eq!(read(&storage, "/log").unwrap(), [0b11]);
        assert_eq!(read(&crash(&storage), "/log").unwrap(), [0b11]);
    }

    #[test]
    fn errors_match_the_os() {
        let storage = SimStorage::new();
        storage.create_dir_all(p("/d")).unwrap();
        put(&storage, "/d/f", b"", false);
        let kind = |path: &str, mode| storage.open(p(path), mode).err().unwrap().kind();
        assert_eq!(kind("/d/g", OpenMode::Read), NotFound);
        assert_eq!(kind("/nope/g", OpenMode::CreateReadWrite), NotFound);
        assert_eq!(kind("/d/f", OpenMode::CreateNew), AlreadyExists);
        assert_eq!(kind("/d", OpenMode::ReadWrite), IsADirectory);
        assert_eq!(kind("/d/f/x", OpenMode::Read), NotADirectory);
        assert_eq!(kind("d/f", OpenMode::Read), InvalidInput);
        assert_eq!(storage.remove_file(p("/d/g")).unwrap_err().kind(), NotFound);
        assert!(storage.stat(p("/d")).unwrap().unwrap().is_dir);
        assert_eq!(storage.stat(p("/d/x/y")).unwrap(), None);
        let read_only = storage.open(p("/d/f"), OpenMode::Read).unwrap();
        assert_eq!(
            read_only.write_all_at(b"x", 0).unwrap_err().kind(),
            PermissionDenied
        );
    }
}
