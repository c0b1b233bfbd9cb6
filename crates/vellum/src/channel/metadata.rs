//! Channel metadata: CryptPad's metadata object, its amendment commands and the log fold.
//!
//! A channel's metadata is a JSON object (owners, allow list, mailbox, expiry …) written
//! once when the channel is created, then amended by an append-only log of command lines
//! `["CMD", args, time_ms]`. The current state is the fold of that log.
//!
//! The commands reproduce CryptPad's `lib/metadata.js` bug for bug, quirks included. A
//! CryptPad server logs a command only when its JS code reported a change, and every
//! reader replays the log with the same code, so an imported log folds to the state
//! CryptPad sees only if each command behaves exactly like the JS one: the
//! `RESET_ALLOWED` `indexOf` test, `RM_MAILBOX`'s comparison with the *string*
//! `'undefined'`, `ADD_PENDING_OWNERS` skipping key validation. For the same reason the
//! state is any JSON object (a client chose the initial one), and a field holding the
//! wrong type behaves as the JS would: a string answers `indexOf` by substring, and where
//! JS throws a `TypeError` we return [`MetadataError::BadState`].
//!
//! Deliberate differences, none reachable through CryptPad's own `setMetadata`:
//! - [`Metadata::apply`] reports a change whenever the state changed, even where the JS
//!   returns `false` (`RM_OWNERS` clearing `restricted` on an already ownerless channel),
//!   and never mutates the state when it reports no change or an error.
//! - Writing a mailbox entry far past the end of an array `mailbox` is dropped (JS fills
//!   the gap with holes, which could need unbounded memory).
//! - Only JSON strings name commands; names inherited from `Object.prototype`
//!   (`"toString"` …), which the JS fold calls as no-ops, are unknown commands here.
//!
//! Permissions (owners only, `E_NO_OWNERS`) are the caller's business, not this module's.
//! Values are kept as parsed; key order is JS insertion order only when serde_json's
//! `preserve_order` feature is on (otherwise sorted), so byte-exact export should copy the
//! original lines rather than re-serialise them.

use serde_json::{Map, Value};

/// The JSON object a command works on.
type State = Map<String, Value>;
/// A command's outcome: CryptPad's `changed`, or why it threw.
type Outcome = Result<bool, MetadataError>;

/// Every command CryptPad knows (`Meta.commands`); anything else is `UNSUPPORTED_COMMAND`.
pub const COMMANDS: [&str; 13] = [
    "RESTRICT_ACCESS",
    "ALLOW_LINE_DELETION",
    "ADD_ALLOWED",
    "RM_ALLOWED",
    "RESET_ALLOWED",
    "ADD_OWNERS",
    "RM_OWNERS",
    "ADD_PENDING_OWNERS",
    "RM_PENDING_OWNERS",
    "RESET_OWNERS",
    "ADD_MAILBOX",
    "RM_MAILBOX",
    "UPDATE_EXPIRATION",
];

/// Why a command, a metadata line or a metadata object was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("METADATA_UNSUPPORTED_COMMAND: unknown metadata command {0}")]
    UnknownCommand(String),
    #[error("{code}: invalid arguments for {command}: {reason}")]
    InvalidArguments {
        command: &'static str,
        code: &'static str,
        reason: &'static str,
    },
    #[error("METADATA_NONSENSE_OWNERS: {command} needs an `owners` array")]
    NoOwners { command: &'static str },
    #[error("METADATA_NONSENSE_PENDING_OWNERS: {command} needs a `pending_owners` array")]
    NoPendingOwners { command: &'static str },
    #[error("E_NOT_IMPLEMENTED: metadata command {0} is not implemented")]
    NotImplemented(String),
    #[error("TypeError: {command} cannot run on this metadata: {reason}")]
    BadState {
        command: &'static str,
        reason: String,
    },
    #[error("INVALID_METADATA: metadata must be a JSON object")]
    NotAnObject,
    #[error("METADATA_HANDLER_LINE_ERR: a metadata line is not JSON: {0}")]
    InvalidJson(String),
    #[error(
        "METADATA_HANDLER_WEIRDLINE: metadata line {index} is neither a command nor an initial object"
    )]
    WeirdLine { index: u64 },
}

impl MetadataError {
    /// CryptPad's error code for this error (what its logs and clients see).
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownCommand(_) => "METADATA_UNSUPPORTED_COMMAND",
            Self::InvalidArguments { code, .. } => code,
            Self::NoOwners { .. } => "METADATA_NONSENSE_OWNERS",
            Self::NoPendingOwners { .. } => "METADATA_NONSENSE_PENDING_OWNERS",
            Self::NotImplemented(_) => "E_NOT_IMPLEMENTED",
            Self::BadState { .. } => "TypeError",
            Self::NotAnObject => "INVALID_METADATA",
            Self::InvalidJson(_) => "METADATA_HANDLER_LINE_ERR",
            Self::WeirdLine { .. } => "METADATA_HANDLER_WEIRDLINE",
        }
    }
}

/// The folded metadata state of a channel: a JSON object (CryptPad's format), kept lossless.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metadata {
    map: Map<String, Value>,
}

impl Metadata {
    /// The empty state `{}`: what a channel without any metadata folds to.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_object(map: Map<String, Value>) -> Self {
        Self { map }
    }

    /// Parses a metadata object (one state line), as CryptPad's `JSON.parse` would.
    pub fn from_json(bytes: &[u8]) -> Result<Self, MetadataError> {
        match parse_line(bytes)? {
            Value::Object(map) => Ok(Self { map }),
            _ => Err(MetadataError::NotAnObject),
        }
    }

    pub fn as_object(&self) -> &Map<String, Value> {
        &self.map
    }

    pub fn into_object(self) -> Map<String, Value> {
        self.map
    }

    /// The state as one compact JSON object, the line a trim collapses the log into.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.map).expect("a map with string keys always serialises")
    }

    /// Applies one amendment command; `Ok(true)` if the state changed (only then is the
    /// command logged). On `Ok(false)` or an error the state is left untouched.
    pub fn apply(&mut self, command: &str, args: &Value) -> Result<bool, MetadataError> {
        let mut next = self.map.clone();
        let js_changed = run_command(&mut next, command, args)?;
        // `RM_OWNERS` can clear `restricted` and still answer false in JS; report the change.
        let changed = js_changed || next != self.map;
        if changed {
            self.map = next;
        }
        Ok(changed)
    }

    /// The string entries of `owners` (empty when absent).
    pub fn owners(&self) -> Vec<&str> {
        self.strings("owners")
    }

    pub fn allowed(&self) -> Vec<&str> {
        self.strings("allowed")
    }

    pub fn pending_owners(&self) -> Vec<&str> {
        self.strings("pending_owners")
    }

    /// Whether access is restricted to owners and the allow list (JS truthiness, as read).
    pub fn restricted(&self) -> bool {
        truthy(self.map.get("restricted"))
    }

    /// Whether `deleteChannelLine` is allowed (`ALLOW_LINE_DELETION`, JS truthiness).
    pub fn delete_lines(&self) -> bool {
        truthy(self.map.get("deleteLines"))
    }

    /// When the channel expires, in Unix ms (`expire`; CryptPad honours any number).
    pub fn expire_ms(&self) -> Option<u64> {
        self.millis("expire")
    }

    pub fn created_ms(&self) -> Option<u64> {
        self.millis("created")
    }

    pub fn validate_key(&self) -> Option<&str> {
        self.map.get("validateKey").and_then(Value::as_str)
    }

    fn strings(&self, field: &str) -> Vec<&str> {
        match self.map.get(field) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    fn millis(&self, field: &str) -> Option<u64> {
        let ms = self.map.get(field)?.as_f64()?;
        // A negative time is long past; the `as` cast saturates it to 0, which stays past.
        Some(ms as u64)
    }
}

/// Folds a metadata log line by line, as CryptPad's `createLineHandler` does.
///
/// CryptPad's `readMetadata` order: if [`channel_line_needed`], feed the channel log's
/// first line with [`MetadataFold::feed_channel_first_line`]; then feed every line of the
/// dedicated metadata log with [`MetadataFold::feed`].
#[derive(Debug, Default)]
pub struct MetadataFold {
    state: Map<String, Value>,
    /// Lines that parsed so far; an object counts as initial state only below 2.
    index: u64,
    took_object: bool,
    /// The first error of each code, as CryptPad logs each command error code once.
    errors: Vec<MetadataError>,
}

impl MetadataFold {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one log line: an object at line index 0 or 1 is the initial state (only the
    /// first such object is taken, a later one is ignored), an array is a command
    /// `[COMMAND, args, time_ms]`. A bad line is recorded and skipped, never fatal; a line
    /// that is not JSON does not count towards the index.
    pub fn feed(&mut self, line: &[u8]) -> Result<(), MetadataError> {
        let value = self.record(parse_line(line))?;
        self.feed_value(value)
    }

    /// Feeds the channel log's first non-empty line, read before the dedicated log when
    /// [`channel_line_needed`] says so. Only an object is metadata; any other JSON is a
    /// message and is ignored, and unparseable text is CryptPad's `INVALID_METADATA`.
    pub fn feed_channel_first_line(&mut self, line: &[u8]) -> Result<(), MetadataError> {
        match self.record(parse_line(line))? {
            Value::Object(map) => self.feed_value(Value::Object(map)),
            _ => Ok(()),
        }
    }

    fn feed_value(&mut self, value: Value) -> Result<(), MetadataError> {
        let index = self.index;
        self.index += 1;
        match value {
            Value::Array(items) => {
                let result = fold_command(&mut self.state, &items);
                self.record(result)
            }
            Value::Object(map) if index < 2 => {
                // CryptPad's comment says "preferring the second", its code keeps the first.
                if !self.took_object {
                    self.took_object = true;
                    self.state = map;
                }
                Ok(())
            }
            _ => self.record(Err(MetadataError::WeirdLine { index })),
        }
    }

    /// The first error of each CryptPad code met so far.
    pub fn errors(&self) -> &[MetadataError] {
        &self.errors
    }

    pub fn finish(self) -> Metadata {
        Metadata { map: self.state }
    }

    fn record<T>(&mut self, result: Result<T, MetadataError>) -> Result<T, MetadataError> {
        if let Err(error) = &result
            && !self.errors.iter().any(|seen| seen.code() == error.code())
        {
            self.errors.push(error.clone());
        }
        result
    }
}

/// Whether the channel log's first line must be folded before the dedicated `log`:
/// CryptPad skips it when the log's first line that parses is not a command, because such
/// a log starts with the full state (a new channel, or one collapsed by a trim).
pub fn channel_line_needed<'a>(log: impl IntoIterator<Item = &'a [u8]>) -> bool {
    log.into_iter()
        .find_map(|line| parse_line(line).ok())
        .is_none_or(|first| first.is_array())
}

/// Encodes a command line as CryptPad logs it: `["CMD",args,time_ms]`.
pub fn command_line(command: &str, args: &Value, time_ms: u64) -> Vec<u8> {
    let line = Value::Array(vec![command.into(), args.clone(), time_ms.into()]);
    line.to_string().into_bytes()
}

/// CryptPad's `isValidPublicKey`: a string of exactly 44 UTF-16 code units. It checks
/// nothing else (no base64, no decoded length), so keys the JS accepted stay accepted.
pub fn is_valid_public_key(s: &str) -> bool {
    s.encode_utf16().count() == 44
}

/// Node decodes each line lossily from UTF-8 before `JSON.parse`, so invalid bytes inside a
/// string become U+FFFD rather than an error.
pub(crate) fn parse_line(line: &[u8]) -> Result<Value, MetadataError> {
    serde_json::from_str(&String::from_utf8_lossy(line))
        .map_err(|e| MetadataError::InvalidJson(e.to_string()))
}

/// Runs a logged `[COMMAND, args, time]` in place, like the JS fold (a missing `args` is
/// `undefined`, which every command rejects as it rejects `null`).
fn fold_command(meta: &mut State, line: &[Value]) -> Result<(), MetadataError> {
    let args = line.get(1).unwrap_or(&Value::Null);
    match line.first() {
        Some(Value::String(command)) => run_command(meta, command, args).map(drop),
        other => Err(MetadataError::UnknownCommand(
            other.map_or("undefined".into(), Value::to_string),
        )),
    }
}

/// Runs one command in place and returns the JS `changed`. Every command validates before
/// it mutates, so an error leaves `meta` as it was (as in CryptPad).
fn run_command(meta: &mut State, command: &str, args: &Value) -> Outcome {
    match command {
        "RESTRICT_ACCESS" => set_flag(meta, "RESTRICT_ACCESS", "restricted", args),
        "ALLOW_LINE_DELETION" => set_flag(meta, "ALLOW_LINE_DELETION", "deleteLines", args),
        "ADD_ALLOWED" => add_allowed(meta, args),
        "RM_ALLOWED" => rm_allowed(meta, args),
        "RESET_ALLOWED" => reset_allowed(meta, args),
        "ADD_OWNERS" => add_owners(meta, args),
        "RM_OWNERS" => rm_owners(meta, args),
        "RESET_OWNERS" => reset_owners(meta, args),
        "ADD_PENDING_OWNERS" => add_pending_owners(meta, args),
        "RM_PENDING_OWNERS" => rm_pending_owners(meta, args),
        "ADD_MAILBOX" => add_mailbox(meta, args),
        "RM_MAILBOX" => rm_mailbox(meta, args),
        "UPDATE_EXPIRATION" => Err(MetadataError::NotImplemented(command.into())),
        _ => Err(MetadataError::UnknownCommand(command.into())),
    }
}

/// `RESTRICT_ACCESS` / `ALLOW_LINE_DELETION`: `[bool]`. Enabling restriction creates an
/// empty allow list unless an array is already there.
fn set_flag(meta: &mut State, command: &'static str, field: &str, args: &Value) -> Outcome {
    let Some(Value::Bool(on)) = args.as_array().and_then(|a| a.first()) else {
        return Err(invalid(command, "INVALID_STATE", "expected [bool]"));
    };
    if meta.get(field) == Some(&Value::Bool(*on)) {
        return Ok(false);
    }
    meta.insert(field.into(), Value::Bool(*on));
    if field == "restricted" && *on && !meta.get("allowed").is_some_and(Value::is_array) {
        meta.insert("allowed".into(), Value::Array(Vec::new()));
    }
    Ok(true)
}

/// `ADD_ALLOWED`: adds valid keys that are neither owners nor already allowed.
fn add_allowed(meta: &mut State, args: &Value) -> Outcome {
    const CMD: &str = "ADD_ALLOWED";
    let args = array_args(CMD, "INVALID_ARGS", args)?;
    // `meta.allowed || []`: a falsy field starts a fresh list.
    let current = meta.get("allowed").filter(|v| truthy(Some(v)));
    let mut list = match current {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    };
    let before = list.len();
    for arg in args {
        if !is_valid_key(arg) || index_of(CMD, "owners", meta.get("owners"), arg)?.is_some() {
            continue;
        }
        match current {
            Some(Value::Array(_)) | None => {
                if list.iter().any(|item| strict_eq(item, arg)) {
                    continue;
                }
            }
            Some(other) => {
                if index_of(CMD, "allowed", Some(other), arg)?.is_some() {
                    continue;
                }
                return Err(type_error(CMD, "allowed", Some(other), "push"));
            }
        }
        list.push(arg.clone());
    }
    let changed = list.len() > before;
    if changed {
        meta.insert("allowed".into(), Value::Array(list));
    }
    Ok(changed)
}

/// `RM_ALLOWED`: removes the keys it finds; nothing to do without an allow list.
fn rm_allowed(meta: &mut State, args: &Value) -> Outcome {
    const CMD: &str = "RM_ALLOWED";
    let args = array_args(CMD, "INVALID_ARGS", args)?;
    match meta.get_mut("allowed") {
        Some(Value::Array(items)) => Ok(remove_each(items, args)),
        Some(other) if truthy(Some(other)) => {
            let other = &*other;
            // A string answers `indexOf`, then has no `splice` for the key it found.
            for arg in args {
                if index_of(CMD, "allowed", Some(other), arg)?.is_some() {
                    return Err(type_error(CMD, "allowed", Some(other), "splice"));
                }
            }
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// `RESET_ALLOWED`: replaces the allow list, with CryptPad's two bugs kept.
fn reset_allowed(meta: &mut State, args: &Value) -> Outcome {
    const CMD: &str = "RESET_ALLOWED";
    let args = array_args(CMD, "INVALID_ARGS", args)?;
    let mut updated = Vec::new();
    for arg in args {
        // Bug kept: `if (meta.owners.indexOf(arg)) return false` drops every key whose
        // index is truthy, -1 included, so only a key equal to `owners[0]` survives.
        if is_valid_key(arg) && index_of(CMD, "owners", meta.get("owners"), arg)? == Some(0) {
            updated.push(arg.clone());
        }
    }
    let current = meta.get("allowed");
    if truthy(current) && js_length(current) != Some(updated.len() as f64) {
        meta.insert("allowed".into(), Value::Array(updated));
        return Ok(true);
    }
    // Bug kept: `arrayHasChanged(meta.allowed, …)` throws unless `allowed` is an array.
    let Some(Value::Array(current)) = current else {
        return Err(type_error(CMD, "allowed", current, "some"));
    };
    if !array_has_changed(current, &updated) {
        return Ok(false);
    }
    meta.insert("allowed".into(), Value::Array(updated));
    Ok(true)
}

/// `ADD_OWNERS`: adds valid keys, then strips every owner from the allow list.
fn add_owners(meta: &mut State, args: &Value) -> Outcome {
    const CMD: &str = "ADD_OWNERS";
    let args = array_args(CMD, "METADATA_INVALID_OWNERS", args)?;
    let Some(Value::Array(owners)) = meta.get_mut("owners") else {
        return Err(MetadataError::NoOwners { command: CMD });
    };
    let before = owners.len();
    for arg in args {
        if is_valid_key(arg) && !owners.iter().any(|o| strict_eq(o, arg)) {
            owners.push(arg.clone());
        }
    }
    let changed = owners.len() > before;
    if changed {
        strip_owners_from_allowed(meta);
    }
    Ok(changed)
}

/// `RM_OWNERS`: removes owners with their mailboxes; an ownerless channel is unrestricted.
fn rm_owners(meta: &mut State, args: &Value) -> Outcome {
    const CMD: &str = "RM_OWNERS";
    let args = array_args(CMD, "METADATA_INVALID_OWNERS", args)?;
    let Some(Value::Array(owners)) = meta.get_mut("owners") else {
        return Err(MetadataError::NoOwners { command: CMD });
    };
    let mut removed = Vec::new();
    for arg in args {
        if let Some(i) = owners.iter().position(|o| strict_eq(o, arg)) {
            removed.push(owners.remove(i));
        }
    }
    for owner in &removed {
        // A legacy string mailbox belongs to nobody in particular: any removal drops it.
        match meta.get_mut("mailbox") {
            Some(Value::String(s)) if !s.is_empty() => remove_key(meta, "mailbox"),
            Some(mailbox) => js_delete(mailbox, &js_to_string(owner)),
            None => {}
        }
    }
    unrestrict_if_ownerless(meta);
    Ok(!removed.is_empty())
}

/// `RESET_OWNERS`: replaces the owners by the valid, deduplicated keys. Always a change.
fn reset_owners(meta: &mut State, args: &Value) -> Outcome {
    const CMD: &str = "RESET_OWNERS";
    let args = array_args(CMD, "METADATA_INVALID_OWNERS", args)?;
    if !meta.get("owners").is_some_and(Value::is_array) {
        return Err(MetadataError::NoOwners { command: CMD });
    }
    let valid: Vec<Value> = args.iter().filter(|a| is_valid_key(a)).cloned().collect();
    meta.insert("owners".into(), Value::Array(deduplicate(&valid)));
    strip_owners_from_allowed(meta);
    unrestrict_if_ownerless(meta);
    Ok(true)
}

/// `ADD_PENDING_OWNERS`: quirk kept, a missing (falsy) list is set to the deduplicated
/// arguments *without* key validation; an existing list only takes valid new keys.
fn add_pending_owners(meta: &mut State, args: &Value) -> Outcome {
    const CMD: &str = "ADD_PENDING_OWNERS";
    let args = array_args(CMD, "METADATA_INVALID_PENDING_OWNERS", args)?;
    match meta.get_mut("pending_owners") {
        Some(Value::Array(pending)) => {
            let before = pending.len();
            for arg in args {
                if is_valid_key(arg) && !pending.iter().any(|p| strict_eq(p, arg)) {
                    pending.push(arg.clone());
                }
            }
            Ok(pending.len() > before)
        }
        Some(other) if truthy(Some(other)) => Err(MetadataError::NoPendingOwners { command: CMD }),
        _ => {
            meta.insert("pending_owners".into(), Value::Array(deduplicate(args)));
            Ok(true)
        }
    }
}

/// `RM_PENDING_OWNERS`: removes the keys it finds.
fn rm_pending_owners(meta: &mut State, args: &Value) -> Outcome {
    const CMD: &str = "RM_PENDING_OWNERS";
    let args = array_args(CMD, "METADATA_INVALID_PENDING_OWNERS", args)?;
    let Some(Value::Array(pending)) = meta.get_mut("pending_owners") else {
        return Err(MetadataError::NoPendingOwners { command: CMD });
    };
    Ok(remove_each(pending, args))
}

/// `ADD_MAILBOX`: `{edPublic: mailbox}`, owners only. A legacy string mailbox first
/// becomes `{owners[0]: string}`. Re-setting the same value still counts as a change.
fn add_mailbox(meta: &mut State, args: &Value) -> Outcome {
    const CMD: &str = "ADD_MAILBOX";
    // `Object.keys` of an array lists its indices, so an array is accepted too.
    let entries: Vec<(String, &Value)> = match args {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => {
            return Err(invalid(
                CMD,
                "METADATA_INVALID_MAILBOX",
                "expected an object",
            ));
        }
    };
    let owners = match meta.get("owners") {
        Some(Value::Array(owners)) => owners.clone(),
        _ => return Err(MetadataError::NoOwners { command: CMD }),
    };
    let mut changed = false;
    for (key, value) in entries {
        if !owners.iter().any(|o| o.as_str() == Some(key.as_str())) {
            continue;
        }
        if let Some(Value::String(legacy)) = meta.get("mailbox") {
            let first = owners
                .first()
                .map_or_else(|| "undefined".into(), js_to_string);
            let converted = Map::from_iter([(first, Value::String(legacy.clone()))]);
            meta.insert("mailbox".into(), Value::Object(converted));
        }
        if !truthy(meta.get("mailbox")) {
            meta.insert("mailbox".into(), Value::Object(Map::new()));
        }
        if let Some(mailbox) = meta.get_mut("mailbox") {
            js_set(mailbox, key, value.clone());
        }
        changed = true;
    }
    Ok(changed)
}

/// `RM_MAILBOX`: `[edPublic…]`; with no arguments it drops a legacy string mailbox.
fn rm_mailbox(meta: &mut State, args: &Value) -> Outcome {
    let args = array_args("RM_MAILBOX", "INVALID_ARGS", args)?;
    let Some(mailbox) = meta.get_mut("mailbox").filter(|m| truthy(Some(m))) else {
        return Ok(false);
    };
    if mailbox.is_string() && args.is_empty() {
        remove_key(meta, "mailbox");
        return Ok(true);
    }
    let mut changed = false;
    for arg in args {
        // Bug kept: the JS compares the entry with the *string* 'undefined', so only an
        // entry holding the text "undefined" is skipped; any other key, even a missing one
        // or one of a string mailbox (which stays as it is), counts as a change.
        let key = js_to_string(arg);
        if js_get(mailbox, &key).and_then(Value::as_str) == Some("undefined") {
            continue;
        }
        js_delete(mailbox, &key);
        changed = true;
    }
    Ok(changed)
}

fn invalid(command: &'static str, code: &'static str, reason: &'static str) -> MetadataError {
    MetadataError::InvalidArguments {
        command,
        code,
        reason,
    }
}

fn array_args<'a>(
    command: &'static str,
    code: &'static str,
    args: &'a Value,
) -> Result<&'a [Value], MetadataError> {
    args.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| invalid(command, code, "expected an array"))
}

fn is_valid_key(value: &Value) -> bool {
    value.as_str().is_some_and(is_valid_public_key)
}

/// Removes the first occurrence of each argument; true if anything went.
fn remove_each(list: &mut Vec<Value>, args: &[Value]) -> bool {
    let before = list.len();
    for arg in args {
        if let Some(i) = list.iter().position(|item| strict_eq(item, arg)) {
            list.remove(i);
        }
    }
    list.len() < before
}

/// Owners never appear in the allow list (CryptPad's `filterInPlace` after owner changes).
fn strip_owners_from_allowed(meta: &mut State) {
    let Some(Value::Array(owners)) = meta.get("owners") else {
        return;
    };
    let owners = owners.clone();
    if let Some(Value::Array(allowed)) = meta.get_mut("allowed") {
        allowed.retain(|member| !owners.iter().any(|o| strict_eq(o, member)));
    }
}

/// A channel nobody owns cannot stay restricted (nobody could edit its allow list).
fn unrestrict_if_ownerless(meta: &mut State) {
    let ownerless = meta
        .get("owners")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty);
    if ownerless && truthy(meta.get("restricted")) {
        meta.insert("restricted".into(), Value::Bool(false));
    }
}

/// `Array.from(new Set(values))`: keeps the first of equal primitives.
fn deduplicate(values: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(values.len());
    for value in values {
        if !out.iter().any(|seen| strict_eq(seen, value)) {
            out.push(value.clone());
        }
    }
    out
}

/// CryptPad's `arrayHasChanged`: do the two lists differ as sets?
fn array_has_changed(a: &[Value], b: &[Value]) -> bool {
    let missing =
        |from: &[Value], into: &[Value]| from.iter().any(|x| !into.iter().any(|y| strict_eq(x, y)));
    missing(a, b) || missing(b, a)
}

/// Deletes a key keeping the others in place, like JS `delete` (and unlike `swap_remove`).
fn remove_key(map: &mut State, key: &str) {
    map.retain(|k, _| k != key);
}

// JS value semantics the commands depend on.

/// `===` between two parsed JSON values: numbers compare as doubles; arrays and objects
/// compare by reference, and no two parsed values share one.
fn strict_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::String(x), Value::String(y)) => x == y,
        _ => false,
    }
}

fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0 && !x.is_nan()),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_) | Value::Object(_)) => true,
    }
}

/// `field.indexOf(needle)`. An array searches with `===`; a string coerces the needle and
/// searches for a substring (the position is in bytes: callers only tell -1, 0 and more
/// apart). Anything else has no `indexOf` and JS throws a `TypeError`.
fn index_of(
    command: &'static str,
    field: &str,
    haystack: Option<&Value>,
    needle: &Value,
) -> Result<Option<usize>, MetadataError> {
    match haystack {
        Some(Value::Array(items)) => Ok(items.iter().position(|item| strict_eq(item, needle))),
        Some(Value::String(s)) => Ok(s.find(js_to_string(needle).as_str())),
        other => Err(type_error(command, field, other, "indexOf")),
    }
}

/// `container[key]` as JS reads it: object keys and array indices (a string's characters
/// never matter here, as none equals "undefined").
fn js_get<'a>(container: &'a Value, key: &str) -> Option<&'a Value> {
    match container {
        Value::Object(map) => map.get(key),
        Value::Array(items) => items.get(array_index(key)?),
        _ => None,
    }
}

/// `delete container[key]`; in an array it leaves a hole, which JSON writes as null.
fn js_delete(container: &mut Value, key: &str) {
    match container {
        Value::Object(map) => remove_key(map, key),
        Value::Array(items) => {
            if let Some(slot) = array_index(key).and_then(|i| items.get_mut(i)) {
                *slot = Value::Null;
            }
        }
        _ => {} // a primitive's properties cannot be deleted (sloppy mode: no error)
    }
}

/// `container[key] = value`. An array takes an index up to its length; a named property
/// never shows in JSON, and a write far past the end (holes in JS) is dropped.
fn js_set(container: &mut Value, key: String, value: Value) {
    match container {
        Value::Object(map) => {
            map.insert(key, value);
        }
        Value::Array(items) => match array_index(&key) {
            Some(i) if i < items.len() => items[i] = value,
            Some(i) if i == items.len() => items.push(value),
            _ => {}
        },
        _ => {}
    }
}

/// A canonical array index ("0", "17"; not "01" or "+1"), below 2^32 - 1.
fn array_index(key: &str) -> Option<usize> {
    let i: u32 = key.parse().ok()?;
    (i != u32::MAX && i.to_string() == key).then_some(i as usize)
}

/// `value.length`: arrays and strings (UTF-16 units) have one, objects only as a key.
fn js_length(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::Array(items) => Some(items.len() as f64),
        Value::String(s) => Some(s.encode_utf16().count() as f64),
        Value::Object(map) => map.get("length")?.as_f64(),
        _ => None,
    }
}

fn type_error(
    command: &'static str,
    field: &str,
    value: Option<&Value>,
    method: &str,
) -> MetadataError {
    let kind = match value {
        None => "missing",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "an array",
        Some(Value::Object(_)) => "an object",
    };
    MetadataError::BadState {
        command,
        reason: format!("`{field}` is {kind}, which has no .{method}()"),
    }
}

/// JS `String(value)`, which is how a value becomes a property key.
fn js_to_string(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => js_number_to_string(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            // `[1, null]` joins as "1,": null and undefined elements print as nothing.
            let parts: Vec<String> = items.iter().map(js_element_to_string).collect();
            parts.join(",")
        }
        Value::Object(_) => "[object Object]".into(),
    }
}

fn js_element_to_string(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        other => js_to_string(other),
    }
}

/// `Number.prototype.toString()`: shortest round-trip digits, laid out by ECMA-262's rules.
fn js_number_to_string(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x == 0.0 {
        return "0".into();
    }
    if x < 0.0 {
        return format!("-{}", js_number_to_string(-x));
    }
    if x.is_infinite() {
        return "Infinity".into();
    }
    // Rust's `{:e}` also prints the shortest round-trip digits: "1.2345e3".
    let sci = format!("{x:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    let n = exponent.parse::<i32>().unwrap_or(0) + 1;
    if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat(n.unsigned_abs() as usize))
    } else {
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() { "" } else { "." };
        let sign = if n > 0 { '+' } else { '-' };
        format!("{first}{point}{rest}e{sign}{}", (n - 1).unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A 44-character key made of one repeated letter, like a base64 Ed25519 key.
    fn key(c: char) -> String {
        format!("{}=", c.to_string().repeat(43))
    }

    fn meta(v: Value) -> Metadata {
        Metadata::from_object(v.as_object().expect("test state is an object").clone())
    }

    /// Applies `cmd` to `state`: (changed, state after).
    fn run(state: Value, cmd: &str, args: Value) -> Result<(bool, Value), MetadataError> {
        let mut m = meta(state);
        let changed = m.apply(cmd, &args)?;
        Ok((changed, Value::Object(m.into_object())))
    }

    fn changed(state: Value, cmd: &str, args: Value) -> bool {
        run(state, cmd, args).expect("command succeeds").0
    }

    fn after(state: Value, cmd: &str, args: Value) -> Value {
        run(state, cmd, args).expect("command succeeds").1
    }

    fn code(state: Value, cmd: &str, args: Value) -> &'static str {
        run(state, cmd, args).expect_err("command fails").code()
    }

    /// Reads a channel's metadata the way CryptPad's `readMetadata` does.
    fn read(channel_first_line: Option<&str>, log: &[&str]) -> (Metadata, Vec<MetadataError>) {
        let mut fold = MetadataFold::new();
        if channel_line_needed(log.iter().map(|l| l.as_bytes()))
            && let Some(line) = channel_first_line
        {
            let _ = fold.feed_channel_first_line(line.as_bytes());
        }
        for line in log {
            let _ = fold.feed(line.as_bytes());
        }
        let errors = fold.errors().to_vec();
        (fold.finish(), errors)
    }

    // Fixtures equivalent to CryptPad's `scripts/tests/test-metadata.js` channels.
    const INITIAL: &str = r#"{"owners":["Owner"],"validateKey":"VKey","created":1700000000000}"#;
    const STALE: &str = r#"{"validateKey":"Stale"}"#;
    const ALLOWED: &str = "AllowedKeyIsOnlyLongEnoughAllowedKeyIsOnlyLo";
    const AMENDMENTS: [&str; 5] = [
        r#"["RESTRICT_ACCESS",[true],1700000001000]"#,
        r#"["ADD_ALLOWED",["AllowedKeyIsOnlyLongEnoughAllowedKeyIsOnlyLo"],1700000002000]"#,
        r#"["ADD_PENDING_OWNERS",["NotAKey"],1700000003000]"#,
        r#"["RESTRICT_ACCESS",[false],1700000004000]"#,
        r#"["RESTRICT_ACCESS",[true],1700000005000]"#,
    ];

    fn assert_amended((m, errors): (Metadata, Vec<MetadataError>)) {
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(m.validate_key(), Some("VKey"));
        assert!(m.restricted());
        assert_eq!(m.allowed(), [ALLOWED]);
        assert_eq!(m.pending_owners(), ["NotAKey"]);
        assert_eq!(m.owners(), ["Owner"]);
    }

    #[test]
    fn fixture_legacy_channel_line_only() {
        let (m, errors) = read(Some(INITIAL), &[]);
        assert_eq!(m.validate_key(), Some("VKey"));
        assert_eq!(m.created_ms(), Some(1_700_000_000_000));
        assert!(errors.is_empty());
    }

    #[test]
    fn fixture_legacy_channel_line_with_amendments() {
        assert_amended(read(Some(INITIAL), &AMENDMENTS));
    }

    #[test]
    fn fixture_dedicated_object_only_skips_the_channel_line() {
        let (m, _) = read(Some(STALE), &[INITIAL]);
        assert_eq!(m.validate_key(), Some("VKey"));
    }

    #[test]
    fn fixture_dedicated_object_with_amendments() {
        let log: Vec<&str> = [INITIAL].into_iter().chain(AMENDMENTS).collect();
        assert_amended(read(Some(STALE), &log));
    }

    #[test]
    fn fixture_no_metadata_folds_to_empty_object() {
        let (m, errors) = read(Some(r#"[0,"u","MSG","c1","hello",1]"#), &[]);
        assert_eq!(m, Metadata::new());
        assert_eq!(m.to_json(), b"{}");
        assert!(errors.is_empty());
    }

    #[test]
    fn a_log_starting_with_a_command_needs_the_channel_line() {
        assert!(channel_line_needed([
            &b"not json"[..],
            br#"["RM_OWNERS",[],1]"#
        ]));
        assert!(channel_line_needed(std::iter::empty()));
        assert!(!channel_line_needed([&b"garbage"[..], b"null"]));
    }

    #[test]
    fn first_object_wins_over_a_second_one() {
        let mut fold = MetadataFold::new();
        fold.feed(br#"{"validateKey":"first","owners":["o"]}"#)
            .unwrap();
        fold.feed(br#"{"validateKey":"second"}"#).unwrap();
        let m = fold.finish();
        assert_eq!(m.validate_key(), Some("first"));
        assert_eq!(m.owners(), ["o"]);
    }

    #[test]
    fn an_object_after_a_command_replaces_the_state_but_not_at_index_two() {
        let mut fold = MetadataFold::new();
        fold.feed(br#"["ALLOW_LINE_DELETION",[true],1]"#).unwrap();
        fold.feed(br#"{"validateKey":"v"}"#).unwrap();
        let late = fold.feed(br#"{"validateKey":"late"}"#);
        assert_eq!(late, Err(MetadataError::WeirdLine { index: 2 }));
        let m = fold.finish();
        assert_eq!(m.validate_key(), Some("v"));
        assert!(!m.delete_lines(), "the object replaced the folded command");
    }

    #[test]
    fn bad_lines_are_skipped_and_unparseable_ones_do_not_count() {
        let mut fold = MetadataFold::new();
        let broken = fold.feed(b"{broken");
        assert!(matches!(broken, Err(MetadataError::InvalidJson(_))));
        assert!(matches!(fold.feed(b""), Err(MetadataError::InvalidJson(_))));
        fold.feed(br#"{"owners":[]}"#).unwrap(); // still index 0, so it is the state
        assert_eq!(fold.feed(b"42"), Err(MetadataError::WeirdLine { index: 1 }));
        let unknown = fold.feed(br#"[7,[],1]"#);
        assert_eq!(unknown, Err(MetadataError::UnknownCommand("7".into())));
        assert!(fold.feed(br#"["NOPE",[],1]"#).is_err());
        let no_args = fold.feed(br#"["ADD_OWNERS"]"#);
        assert_eq!(no_args.unwrap_err().code(), "METADATA_INVALID_OWNERS");
        let line = command_line("ADD_OWNERS", &json!([key('K')]), 1);
        fold.feed(&line).unwrap();
        let codes: Vec<_> = fold.errors().iter().map(MetadataError::code).collect();
        assert_eq!(
            codes[..2],
            ["METADATA_HANDLER_LINE_ERR", "METADATA_HANDLER_WEIRDLINE"]
        );
        assert_eq!(
            codes[2..],
            ["METADATA_UNSUPPORTED_COMMAND", "METADATA_INVALID_OWNERS"]
        );
        assert_eq!(fold.finish().owners(), [key('K')]);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_rejected() {
        let m = Metadata::from_json(b"{\"validateKey\":\"a\xffb\"}").unwrap();
        assert_eq!(m.validate_key(), Some("a\u{fffd}b"));
        assert_eq!(Metadata::from_json(b"[1]"), Err(MetadataError::NotAnObject));
    }

    #[test]
    fn public_keys_are_44_utf16_units_and_nothing_more() {
        assert!(is_valid_public_key(&key('A')));
        assert!(is_valid_public_key(ALLOWED), "not base64, yet accepted");
        assert!(!is_valid_public_key(&"A".repeat(43)));
        assert!(is_valid_public_key(&"é".repeat(44)), "units, not bytes");
        assert!(!is_valid_public_key(&"😀".repeat(44)), "two units each");
    }

    #[test]
    fn restrict_access_creates_the_allow_list_once() {
        let on = after(json!({}), "RESTRICT_ACCESS", json!([true]));
        assert_eq!(on, json!({"restricted": true, "allowed": []}));
        assert!(!changed(on, "RESTRICT_ACCESS", json!([true])));
        let replaced = after(json!({"allowed": "x"}), "RESTRICT_ACCESS", json!([true]));
        assert_eq!(replaced["allowed"], json!([]));
        let state = json!({"restricted": true, "allowed": ["a"]});
        let off = after(state, "RESTRICT_ACCESS", json!([false]));
        assert_eq!(off, json!({"restricted": false, "allowed": ["a"]}));
        let bad = code(json!({}), "RESTRICT_ACCESS", json!(["yes"]));
        assert_eq!(bad, "INVALID_STATE");
    }

    #[test]
    fn allow_line_deletion_sets_delete_lines() {
        let on = after(json!({}), "ALLOW_LINE_DELETION", json!([true]));
        assert_eq!(on, json!({"deleteLines": true}));
        assert!(meta(on.clone()).delete_lines());
        assert!(!changed(on, "ALLOW_LINE_DELETION", json!([true])));
        let bad = code(json!({}), "ALLOW_LINE_DELETION", json!(true));
        assert_eq!(bad, "INVALID_STATE");
    }

    #[test]
    fn add_allowed_takes_new_valid_non_owner_keys_only() {
        let (a, b, o) = (key('A'), key('B'), key('O'));
        let state = json!({"owners": [o], "allowed": [a]});
        let added = after(state.clone(), "ADD_ALLOWED", json!([a, "short", o, b, b]));
        assert_eq!(added["allowed"], json!([a, b]));
        assert!(!changed(state, "ADD_ALLOWED", json!([a, o, "short"])));
        let state = json!({"owners": [], "allowed": null});
        assert_eq!(
            after(state, "ADD_ALLOWED", json!([a]))["allowed"],
            json!([a])
        );
        let no_owners = code(json!({}), "ADD_ALLOWED", json!([a]));
        assert_eq!(no_owners, "TypeError");
        let no_key = changed(json!({}), "ADD_ALLOWED", json!(["short"]));
        assert!(!no_key, "owners are only read for a valid key");
        assert_eq!(code(json!({}), "ADD_ALLOWED", json!({})), "INVALID_ARGS");
    }

    #[test]
    fn rm_allowed_removes_found_keys() {
        let (a, b) = (key('A'), key('B'));
        let removed = after(json!({"allowed": [a, b]}), "RM_ALLOWED", json!([a, "zz"]));
        assert_eq!(removed["allowed"], json!([b]));
        assert!(!changed(removed, "RM_ALLOWED", json!([a])));
        assert!(!changed(json!({}), "RM_ALLOWED", json!([a])));
        // JS finds "y" in the string, then has no `splice` for it.
        let string_list = code(json!({"allowed": "xyz"}), "RM_ALLOWED", json!(["y"]));
        assert_eq!(string_list, "TypeError");
        assert_eq!(code(json!({}), "RM_ALLOWED", json!(null)), "INVALID_ARGS");
    }

    #[test]
    fn reset_allowed_keeps_only_the_first_owner_quirk() {
        let (o0, o1, a) = (key('O'), key('P'), key('A'));
        let state = json!({"owners": [o0, o1], "allowed": [a]});
        // `indexOf` is -1 for `a` and 1 for `o1`: both truthy, so both are dropped.
        let reset = run(state.clone(), "RESET_ALLOWED", json!([a, o1])).unwrap();
        assert_eq!(reset, (true, json!({"owners": [o0, o1], "allowed": []})));
        let reset = after(state, "RESET_ALLOWED", json!([o0]));
        assert_eq!(reset["allowed"], json!([o0]));
        let same = json!({"owners": [o0], "allowed": [o0]});
        assert!(!changed(same, "RESET_ALLOWED", json!([o0])));
        let swapped = json!({"owners": [o0], "allowed": [a]});
        assert!(
            changed(swapped, "RESET_ALLOWED", json!([o0])),
            "same length"
        );
        // `arrayHasChanged(undefined, …)` throws.
        let no_list = code(json!({"owners": [o0]}), "RESET_ALLOWED", json!([]));
        assert_eq!(no_list, "TypeError");
        let bad = code(json!({}), "RESET_ALLOWED", json!(null));
        assert_eq!(bad, "INVALID_ARGS");
    }

    #[test]
    fn add_owners_validates_and_strips_the_allow_list() {
        let (o, n, a) = (key('O'), key('N'), key('A'));
        let state = json!({"owners": [o], "allowed": [n, a, o]});
        let added = after(state.clone(), "ADD_OWNERS", json!([n, "short", n]));
        assert_eq!(added, json!({"owners": [o, n], "allowed": [a]}));
        assert!(!changed(state, "ADD_OWNERS", json!([o, "short"])));
        let err = run(json!({}), "ADD_OWNERS", json!([n])).unwrap_err();
        assert_eq!(
            err,
            MetadataError::NoOwners {
                command: "ADD_OWNERS"
            }
        );
        let bad = code(json!({"owners": []}), "ADD_OWNERS", json!(n));
        assert_eq!(bad, "METADATA_INVALID_OWNERS");
    }

    #[test]
    fn rm_owners_drops_mailboxes_and_unrestricts_an_ownerless_channel() {
        let (o, p) = (key('O'), key('P'));
        let mailbox = json!({o.clone(): "m1", p.clone(): "m2"});
        let state = json!({"owners": [o, p], "mailbox": mailbox, "restricted": true});
        let one = after(state, "RM_OWNERS", json!([o]));
        let expected = json!({"owners": [p], "mailbox": {p.clone(): "m2"}, "restricted": true});
        assert_eq!(one, expected);
        let none = after(one, "RM_OWNERS", json!([p]));
        let expected = json!({"owners": [], "mailbox": {}, "restricted": false});
        assert_eq!(none, expected);
        let legacy = json!({"owners": [o, p], "mailbox": "m"});
        let legacy = after(legacy, "RM_OWNERS", json!([p]));
        assert_eq!(legacy, json!({"owners": [o]}), "a string mailbox goes");
        assert!(!changed(json!({"owners": [o]}), "RM_OWNERS", json!([p])));
        let bad = code(json!({}), "RM_OWNERS", json!([o]));
        assert_eq!(bad, "METADATA_NONSENSE_OWNERS");
    }

    #[test]
    fn rm_owners_reports_the_restricted_reset_that_js_calls_unchanged() {
        let state = json!({"owners": [], "restricted": 1});
        let reset = run(state, "RM_OWNERS", json!([]));
        let expected = json!({"owners": [], "restricted": false});
        assert_eq!(reset, Ok((true, expected)));
    }

    #[test]
    fn reset_owners_always_changes_and_keeps_valid_unique_keys() {
        let (o, n) = (key('O'), key('N'));
        let state = json!({"owners": [o], "allowed": [n], "restricted": true});
        let reset = after(state.clone(), "RESET_OWNERS", json!([n, "short", n]));
        let expected = json!({"owners": [n], "allowed": [], "restricted": true});
        assert_eq!(reset, expected);
        let emptied = after(state, "RESET_OWNERS", json!(["short"]));
        let expected = json!({"owners": [], "allowed": [n], "restricted": false});
        assert_eq!(emptied, expected);
        assert!(changed(json!({"owners": [o]}), "RESET_OWNERS", json!([o])));
        let bad = code(json!({}), "RESET_OWNERS", json!([]));
        assert_eq!(bad, "METADATA_NONSENSE_OWNERS");
    }

    #[test]
    fn add_pending_owners_skips_validation_only_when_the_list_is_missing() {
        let n = key('N');
        let args = json!(["bad", "bad", 3, 3.0]);
        let created = after(json!({}), "ADD_PENDING_OWNERS", args);
        assert_eq!(created["pending_owners"], json!(["bad", 3]));
        let state = json!({"pending_owners": null});
        let empty = run(state, "ADD_PENDING_OWNERS", json!([]));
        assert_eq!(empty, Ok((true, json!({"pending_owners": []}))));
        // `[]` is truthy in JS, so an existing empty list validates.
        let state = json!({"pending_owners": []});
        let grown = after(state, "ADD_PENDING_OWNERS", json!(["bad", n]));
        assert_eq!(grown["pending_owners"], json!([n]));
        assert!(!changed(grown, "ADD_PENDING_OWNERS", json!([n])));
        let state = json!({"pending_owners": "x"});
        let bad_list = code(state, "ADD_PENDING_OWNERS", json!([n]));
        assert_eq!(bad_list, "METADATA_NONSENSE_PENDING_OWNERS");
        let bad_args = code(json!({}), "ADD_PENDING_OWNERS", json!("x"));
        assert_eq!(bad_args, "METADATA_INVALID_PENDING_OWNERS");
    }

    #[test]
    fn rm_pending_owners_removes_found_keys() {
        let state = json!({"pending_owners": ["a", "b"]});
        let removed = after(state, "RM_PENDING_OWNERS", json!(["a"]));
        assert_eq!(removed["pending_owners"], json!(["b"]));
        assert!(!changed(removed, "RM_PENDING_OWNERS", json!(["a"])));
        let missing = code(json!({}), "RM_PENDING_OWNERS", json!([]));
        assert_eq!(missing, "METADATA_NONSENSE_PENDING_OWNERS");
    }

    #[test]
    fn add_mailbox_is_for_owners_and_converts_a_legacy_string() {
        let (o, p) = (key('O'), key('P'));
        let state = json!({"owners": [o, p], "mailbox": "legacy"});
        let args = json!({p.clone(): "new", "stranger": "x"});
        let added = after(state, "ADD_MAILBOX", args);
        let expected = json!({o.clone(): "legacy", p.clone(): "new"});
        assert_eq!(added["mailbox"], expected);
        let again = json!({p.clone(): "new"});
        assert!(changed(added, "ADD_MAILBOX", again), "re-setting counts");
        let stranger = json!({p.clone(): "m"});
        assert!(!changed(json!({"owners": [o]}), "ADD_MAILBOX", stranger));
        let args = json!({o.clone(): "m"});
        let fresh = after(json!({"owners": [o]}), "ADD_MAILBOX", args.clone());
        assert_eq!(fresh["mailbox"], args);
        let bad = code(json!({}), "ADD_MAILBOX", json!(null));
        assert_eq!(bad, "METADATA_INVALID_MAILBOX");
        let no_owners = code(json!({}), "ADD_MAILBOX", json!({}));
        assert_eq!(no_owners, "METADATA_NONSENSE_OWNERS");
    }

    #[test]
    fn rm_mailbox_compares_with_the_string_undefined_quirk() {
        let state = json!({"mailbox": {"a": "m", "b": "undefined"}});
        let removed = run(state, "RM_MAILBOX", json!(["a", "b", "missing"]));
        assert_eq!(removed, Ok((true, json!({"mailbox": {"b": "undefined"}}))));
        let only_undefined = json!({"mailbox": {"b": "undefined"}});
        assert!(!changed(only_undefined, "RM_MAILBOX", json!(["b"])));
        let missing = changed(json!({"mailbox": {}}), "RM_MAILBOX", json!(["x"]));
        assert!(missing, "a missing key counts as a change");
        assert!(!changed(
            json!({"mailbox": {"a": 1}}),
            "RM_MAILBOX",
            json!([])
        ));
        // A string mailbox survives named keys, yet each reports a change.
        let kept = run(json!({"mailbox": "m"}), "RM_MAILBOX", json!(["a"]));
        assert_eq!(kept, Ok((true, json!({"mailbox": "m"}))));
        let dropped = after(json!({"mailbox": "m"}), "RM_MAILBOX", json!([]));
        assert_eq!(dropped, json!({}));
        assert!(!changed(json!({"mailbox": ""}), "RM_MAILBOX", json!(["a"])));
        // 1.0 becomes the property key "1".
        let numeric = after(json!({"mailbox": {"1": 1}}), "RM_MAILBOX", json!([1.0]));
        assert_eq!(numeric["mailbox"], json!({}));
        // `delete` leaves a hole in an array, which JSON writes as null.
        let holed = after(json!({"mailbox": ["a", "b"]}), "RM_MAILBOX", json!(["0"]));
        assert_eq!(holed["mailbox"], json!([null, "b"]));
        assert_eq!(code(json!({}), "RM_MAILBOX", json!({})), "INVALID_ARGS");
    }

    #[test]
    fn update_expiration_and_unknown_commands_are_errors() {
        let expiration = run(json!({}), "UPDATE_EXPIRATION", json!([1]));
        let expected = MetadataError::NotImplemented("UPDATE_EXPIRATION".into());
        assert_eq!(expiration, Err(expected));
        let unknown = run(json!({}), "toString", json!([]));
        let expected = MetadataError::UnknownCommand("toString".into());
        assert_eq!(unknown, Err(expected));
        assert!(COMMANDS.contains(&"UPDATE_EXPIRATION"));
        assert!(!COMMANDS.contains(&"toString"));
    }

    #[test]
    fn unchanged_or_failed_command_leaves_state_untouched() {
        let (o, a) = (key('O'), key('A'));
        let state = json!({"owners": [o], "allowed": [a], "mailbox": "m", "restricted": true});
        let original = meta(state);
        let attempts = [
            ("RESTRICT_ACCESS", json!([true])),
            ("ADD_ALLOWED", json!([a])),
            ("RM_ALLOWED", json!([key('Z')])),
            ("ADD_OWNERS", json!([o])),
            ("RM_OWNERS", json!([key('Z')])),
            ("RM_PENDING_OWNERS", json!([o])),
            ("ADD_MAILBOX", json!({"stranger": "x"})),
            ("RESET_ALLOWED", json!("bad")),
            ("UPDATE_EXPIRATION", json!([])),
            ("BOGUS", json!([])),
        ];
        for (command, args) in attempts {
            let mut m = original.clone();
            let result = m.apply(command, &args);
            let unchanged = matches!(result, Ok(false) | Err(_));
            assert!(unchanged, "{command}: {result:?}");
            assert_eq!(m, original, "{command} changed the state");
        }
    }

    #[test]
    fn accessors_read_cryptpad_fields() {
        let state = json!({"expire": 1.7e12, "created": -5, "deleteLines": 1, "restricted": ""});
        let m = meta(state);
        assert_eq!(m.expire_ms(), Some(1_700_000_000_000));
        assert_eq!(m.created_ms(), Some(0), "a negative time stays past");
        assert!(m.delete_lines());
        assert!(!m.restricted());
        assert_eq!(meta(json!({"owners": ["a", 1]})).owners(), ["a"]);
        assert_eq!(Metadata::new().expire_ms(), None);
    }

    #[test]
    fn command_lines_are_encoded_compactly_and_fold_back() {
        let line = command_line("ADD_OWNERS", &json!(["k"]), 1561623438989);
        assert_eq!(line, br#"["ADD_OWNERS",["k"],1561623438989]"#);
        let mut fold = MetadataFold::new();
        fold.feed(br#"{"owners":[]}"#).unwrap();
        let line = command_line("ALLOW_LINE_DELETION", &json!([true]), 1);
        fold.feed(&line).unwrap();
        let state = Metadata::from_json(&fold.finish().to_json()).unwrap();
        assert_eq!(state, meta(json!({"owners": [], "deleteLines": true})));
    }

    #[test]
    fn js_property_keys_follow_number_to_string() {
        let cases = [
            (1.0, "1"),
            (1.5, "1.5"),
            (1e21, "1e+21"),
            (1.25e-7, "1.25e-7"),
        ];
        let more = [(1e-6, "0.000001"), (-0.0, "0"), (12.5e10, "125000000000")];
        for (x, expected) in cases.into_iter().chain(more) {
            assert_eq!(js_number_to_string(x), expected);
        }
        assert_eq!(js_to_string(&json!([1, null, "a", [2, 3]])), "1,,a,2,3");
        assert_eq!(js_to_string(&json!({})), "[object Object]");
    }
}
