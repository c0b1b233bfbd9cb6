//! A generated CryptPad datastore (live tree and archive tree) for the import and
//! export tests: every kind of file and line CryptPad leaves on disk, odd ones included.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The message time of the generated lines start here (ms).
pub const T0: u64 = 1_700_000_000_000;

/// Which tree a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tree {
    Live,
    Archive,
}

/// A CryptPad datastore written in a temporary directory, with every file it holds.
pub struct Datastore {
    dir: tempfile::TempDir,
    /// Every file written: (tree, path relative to the tree) → bytes.
    pub files: BTreeMap<(Tree, PathBuf), Vec<u8>>,
    /// The files an import leaves out (they do not come back from an export).
    pub skipped: Vec<(Tree, PathBuf)>,
    rng: StdRng,
}

/// A channel id from a readable name: padded with `0` to CryptPad's 32 characters.
pub fn id(name: &str) -> String {
    format!("{name:0<32}")
}

/// A 44-character public key, all `c`.
pub fn key(c: char) -> String {
    c.to_string().repeat(44)
}

impl Datastore {
    pub fn new(seed: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("datastore")).unwrap();
        std::fs::create_dir(dir.path().join("archive")).unwrap();
        Datastore {
            dir,
            files: BTreeMap::new(),
            skipped: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn live(&self) -> PathBuf {
        self.dir.path().join("datastore")
    }

    pub fn archive(&self) -> PathBuf {
        self.dir.path().join("archive")
    }

    /// A path beside the trees (for export targets).
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn root(&self, tree: Tree) -> PathBuf {
        match tree {
            Tree::Live => self.live(),
            Tree::Archive => self.archive(),
        }
    }

    /// Writes `bytes` at `rel` in `tree`, creating its shard directory.
    pub fn put(&mut self, tree: Tree, rel: &str, bytes: &[u8]) {
        let path = self.root(tree).join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        self.files
            .insert((tree, PathBuf::from(rel)), bytes.to_vec());
    }

    /// Writes a file an import must leave out.
    pub fn put_skipped(&mut self, tree: Tree, rel: &str, bytes: &[u8]) {
        self.put(tree, rel, bytes);
        self.skipped.push((tree, PathBuf::from(rel)));
    }

    /// The files an import followed by an export must give back, byte for byte.
    pub fn round_trip_files(&self) -> BTreeMap<(Tree, PathBuf), Vec<u8>> {
        let mut files = self.files.clone();
        for skipped in &self.skipped {
            files.remove(skipped);
        }
        files
    }

    /// `<xx>/<id><suffix>`.
    pub fn rel(id: &str, suffix: &str) -> String {
        format!("{}/{id}{suffix}", &id[..2])
    }

    /// Random base64-ish content of `len` characters (what CryptPad's ciphertext looks like).
    pub fn content(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..len)
            .map(|_| ALPHABET[self.rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    }

    pub fn hex_id(&mut self) -> String {
        (0..32)
            .map(|_| char::from_digit(self.rng.random_range(0..16), 16).unwrap())
            .collect()
    }

    pub fn random_range(&mut self, range: std::ops::Range<usize>) -> usize {
        self.rng.random_range(range)
    }
}

/// A CryptPad message line (no newline): `[0,user,"MSG",channel,content,time]`.
pub fn msg(channel: &str, content: &str, time: u64) -> String {
    format!(r#"[0,"0123456789abcdef0123456789abcdef","MSG","{channel}","{content}",{time}]"#)
}

/// Lines joined, each followed by `\n`.
pub fn lines<S: AsRef<str>>(lines: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(line.as_ref().as_bytes());
        out.push(b'\n');
    }
    out
}

/// Every file under `root`, by path relative to it.
pub fn read_tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path.strip_prefix(root).unwrap().to_path_buf(), bytes);
            }
        }
    }
    out
}

/// What the tests check about the generated datastore.
pub struct Facts {
    /// Channels with only messages and a one-line metadata log: (id, their message lines).
    pub plain: Vec<(String, Vec<String>)>,
    /// A legacy first line and no metadata log: the legacy object is the metadata.
    pub legacy_only: String,
    /// A legacy first line, then a metadata log of commands: both fold.
    pub legacy_and_commands: String,
    /// A legacy first line CryptPad does not read: the metadata log starts with an object.
    pub legacy_ignored: String,
    /// Only a metadata log.
    pub metadata_only: String,
    /// Empty lines, lines that are not JSON, invalid UTF-8, non-ASCII content, a large
    /// message, a torn last line; a metadata log with a torn last command.
    pub odd: String,
    /// The large message of `odd` (≥ 4 KiB), and its line.
    pub large_line: String,
    /// The last line, a whole message, has no newline: CryptPad never reads it.
    pub no_final_newline: String,
    /// An empty log (0 bytes) beside a metadata log; an empty metadata log beside a log.
    pub empty_log: String,
    pub empty_metadata: String,
    /// Archived channels (archive tree only), the reason their placeholder gives if any.
    pub archived: Vec<(String, Option<String>)>,
    /// In both trees: the archive tree's copy is a pre-trim copy.
    pub trimmed: String,
}

/// Writes the full test datastore: `plain` channels of random ids across many shards,
/// then every odd case.
pub fn generate(ds: &mut Datastore, plain: usize) -> Facts {
    let mut time = T0;
    let mut next_time = || {
        time += 1_000;
        time
    };
    let mut plain_channels = Vec::new();
    for i in 0..plain {
        let channel = ds.hex_id();
        let count = ds.random_range(0..12);
        let mut messages = Vec::new();
        for m in 0..count {
            let len = ds.random_range(20..300);
            let content = match m % 5 {
                4 => format!("cp|{}|{}", ds.content(8), ds.content(len)),
                _ => ds.content(len),
            };
            messages.push(msg(&channel, &content, next_time()));
        }
        if count > 0 {
            ds.put(
                Tree::Live,
                &Datastore::rel(&channel, ".ndjson"),
                &lines(&messages),
            );
        }
        let metadata = format!(
            r#"{{"validateKey":"{}","channel":"{channel}","created":{}}}"#,
            key('v'),
            T0 + i as u64
        );
        ds.put(
            Tree::Live,
            &Datastore::rel(&channel, ".metadata.ndjson"),
            &lines(&[metadata]),
        );
        if i % 7 == 3 {
            let hint = format!(r#"{{"start":0,"created":{}}}"#, T0 + 5);
            ds.put(
                Tree::Live,
                &Datastore::rel(&channel, ".ndjson.offset"),
                hint.as_bytes(),
            );
        }
        plain_channels.push((channel, messages));
    }

    let legacy_only = id("1egacyonly");
    let legacy = format!(
        r#"{{"channel":"{legacy_only}","validateKey":"{}","owners":["{}"],"created":{T0},"expire":{}}}"#,
        key('v'),
        key('a'),
        T0 + 86_400_000 * 365 * 100
    );
    let content = ds.content(60);
    ds.put(
        Tree::Live,
        &Datastore::rel(&legacy_only, ".ndjson"),
        &lines(&[legacy, msg(&legacy_only, &content, next_time())]),
    );

    let legacy_and_commands = id("1egacycmds");
    let legacy = format!(
        r#"{{"channel":"{legacy_and_commands}","owners":["{}"],"created":{T0}}}"#,
        key('a')
    );
    let (c1, c2) = (ds.content(80), ds.content(90));
    ds.put(
        Tree::Live,
        &Datastore::rel(&legacy_and_commands, ".ndjson"),
        &lines(&[
            legacy,
            msg(&legacy_and_commands, &c1, next_time()),
            msg(&legacy_and_commands, &c2, next_time()),
        ]),
    );
    ds.put(
        Tree::Live,
        &Datastore::rel(&legacy_and_commands, ".metadata.ndjson"),
        &lines(&[
            format!(r#"["RESTRICT_ACCESS",[true],{}]"#, T0 + 1),
            format!(
                r#"["ADD_ALLOWED",["{}","{}"],{}]"#,
                key('b'),
                key('c'),
                T0 + 2
            ),
            format!(r#"["ADD_OWNERS",["{}"],{}]"#, key('c'), T0 + 3),
        ]),
    );

    let legacy_ignored = id("1egacyignored");
    let legacy = format!(
        r#"{{"channel":"{legacy_ignored}","owners":["{}"],"legacyOnly":true}}"#,
        key('a')
    );
    let c1 = ds.content(70);
    ds.put(
        Tree::Live,
        &Datastore::rel(&legacy_ignored, ".ndjson"),
        &lines(&[legacy, msg(&legacy_ignored, &c1, next_time())]),
    );
    ds.put(
        Tree::Live,
        &Datastore::rel(&legacy_ignored, ".metadata.ndjson"),
        &lines(&[
            format!(
                r#"{{"channel":"{legacy_ignored}","owners":["{}"]}}"#,
                key('d')
            ),
            format!(r#"["ADD_ALLOWED",["{}"],{}]"#, key('b'), T0 + 4),
        ]),
    );

    let metadata_only = id("metaonly");
    ds.put(
        Tree::Live,
        &Datastore::rel(&metadata_only, ".metadata.ndjson"),
        &lines(&[
            format!(
                r#"{{"channel":"{metadata_only}","owners":["{}"]}}"#,
                key('e')
            ),
            format!(r#"["RESTRICT_ACCESS",[true],{}]"#, T0 + 6),
            format!(r#"["ADD_ALLOWED",["{}"],{}]"#, key('f'), T0 + 7),
        ]),
    );

    let odd = id("oddlines");
    let large_line = msg(&odd, &ds.content(6000), next_time());
    let mut log = Vec::new();
    log.extend_from_slice(b"\n");
    log.extend_from_slice(b"this is not json at all\n");
    log.extend_from_slice(msg(&odd, &ds.content(50), next_time()).as_bytes());
    log.extend_from_slice(b"\n\n[1,2,3]\n{\"an\":\"object, not first\"}\n");
    log.extend_from_slice(format!(r#"[0,"u","MSG","{odd}","bad utf8 "#).as_bytes());
    log.extend_from_slice(b"\xff\xfe\xfd");
    log.extend_from_slice(format!(r#"",{}]"#, next_time()).as_bytes());
    log.extend_from_slice(b"\n");
    log.extend_from_slice(msg(&odd, &"é".repeat(70), next_time()).as_bytes());
    log.extend_from_slice(b"\n");
    log.extend_from_slice(large_line.as_bytes());
    log.extend_from_slice(b"\n");
    log.extend_from_slice(format!(r#"[0,"u","MSG","{odd}","torn wri"#).as_bytes());
    ds.put(Tree::Live, &Datastore::rel(&odd, ".ndjson"), &log);
    let mut metadata = lines(&[
        format!(r#"{{"channel":"{odd}","owners":["{}"]}}"#, key('g')),
        String::new(),
        "garbage".to_string(),
        format!(r#"["ALLOW_LINE_DELETION",[true],{}]"#, T0 + 8),
    ]);
    // A command cut before its newline: CryptPad never reads it.
    metadata.extend_from_slice(format!(r#"["RESTRICT_ACCESS",[true],{}]"#, T0 + 9).as_bytes());
    ds.put(
        Tree::Live,
        &Datastore::rel(&odd, ".metadata.ndjson"),
        &metadata,
    );

    let no_final_newline = id("nonewline");
    let (c1, c2) = (ds.content(40), ds.content(41));
    let mut log = lines(&[msg(&no_final_newline, &c1, next_time())]);
    log.extend_from_slice(msg(&no_final_newline, &c2, next_time()).as_bytes());
    ds.put(
        Tree::Live,
        &Datastore::rel(&no_final_newline, ".ndjson"),
        &log,
    );

    let empty_log = id("emptylog");
    ds.put(Tree::Live, &Datastore::rel(&empty_log, ".ndjson"), b"");
    ds.put(
        Tree::Live,
        &Datastore::rel(&empty_log, ".metadata.ndjson"),
        &lines(&[format!(r#"{{"channel":"{empty_log}"}}"#)]),
    );
    let empty_metadata = id("emptymeta");
    let c1 = ds.content(33);
    ds.put(
        Tree::Live,
        &Datastore::rel(&empty_metadata, ".ndjson"),
        &lines(&[msg(&empty_metadata, &c1, next_time())]),
    );
    ds.put(
        Tree::Live,
        &Datastore::rel(&empty_metadata, ".metadata.ndjson"),
        b"",
    );

    let mut archived = Vec::new();
    for (i, reason) in [
        Some("EXPIRED"),
        Some("INACTIVE"),
        None,
        Some("E_BAD:custom text"),
    ]
    .into_iter()
    .enumerate()
    {
        let channel = id(&format!("gone{i}"));
        let mut messages = vec![msg(&channel, &ds.content(100), next_time())];
        if i == 1 {
            messages.push(msg(&channel, &ds.content(5000), next_time()));
        }
        ds.put(
            Tree::Archive,
            &Datastore::rel(&channel, ".ndjson"),
            &lines(&messages),
        );
        ds.put(
            Tree::Archive,
            &Datastore::rel(&channel, ".metadata.ndjson"),
            &lines(&[format!(r#"{{"channel":"{channel}","expire":{}}}"#, T0)]),
        );
        if let Some(reason) = reason {
            ds.put(
                Tree::Live,
                &Datastore::rel(&channel, ".ndjson.placeholder"),
                reason.as_bytes(),
            );
        }
        archived.push((channel, reason.map(str::to_string)));
    }

    let trimmed = id("trimmed");
    let old = [ds.content(30), ds.content(31), ds.content(32)];
    let pre_trim: Vec<String> = old.iter().map(|c| msg(&trimmed, c, next_time())).collect();
    ds.put(
        Tree::Archive,
        &Datastore::rel(&trimmed, ".ndjson"),
        &lines(&pre_trim),
    );
    let metadata = [
        format!(r#"{{"channel":"{trimmed}","owners":["{}"]}}"#, key('h')),
        format!(r#"["ALLOW_LINE_DELETION",[true],{}]"#, T0 + 10),
    ];
    ds.put(
        Tree::Archive,
        &Datastore::rel(&trimmed, ".metadata.ndjson"),
        &lines(&metadata),
    );
    ds.put(
        Tree::Live,
        &Datastore::rel(&trimmed, ".ndjson"),
        &lines(&pre_trim[2..]),
    );
    ds.put(
        Tree::Live,
        &Datastore::rel(&trimmed, ".metadata.ndjson"),
        &lines(&[format!(
            r#"{{"channel":"{trimmed}","owners":["{}"],"deleteLines":true}}"#,
            key('h')
        )]),
    );

    // What an import leaves out.
    ds.put_skipped(Tree::Live, "README.md", b"not a shard\n");
    ds.put_skipped(
        Tree::Live,
        &Datastore::rel(&odd, ".ndjson.temp"),
        b"scratch of a trim\n",
    );
    let nobody = id("nobody");
    ds.put_skipped(
        Tree::Live,
        &Datastore::rel(&nobody, ".ndjson.offset"),
        b"{\"start\":7}",
    );
    ds.put_skipped(
        Tree::Live,
        &Datastore::rel(&nobody, ".ndjson.placeholder"),
        b"EXPIRED",
    );
    ds.put_skipped(Tree::Live, "aa/notes.txt", b"operator notes\n");

    Facts {
        plain: plain_channels,
        legacy_only,
        legacy_and_commands,
        legacy_ignored,
        metadata_only,
        odd,
        large_line,
        no_final_newline,
        empty_log,
        empty_metadata,
        archived,
        trimmed,
    }
}
