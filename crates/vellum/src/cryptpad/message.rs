//! What a CryptPad line says about itself (docs/format.md §8.1): whether it is a
//! legacy metadata object, and for a message `[0, user, "MSG", channel, content, time]`
//! its key — CryptPad's hash, the content's first 64 UTF-16 code units, which clients
//! keep as `lastKnownHash` — and its time.

use crate::channel::file::KEY_BYTES_MAX;
use crate::channel::metadata::parse_line;
use serde_json::Value;

/// CryptPad's hash length, in UTF-16 code units (`HK.getHash`: `msg.slice(0, 64)`).
const HASH_UTF16_UNITS: usize = 64;

/// A channel-log line, parsed as Node would (lossy UTF-8, then `JSON.parse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelLine {
    /// A JSON object: legacy metadata when it is the log's first non-empty line.
    Object,
    /// Anything else: a message when it has a key, some other line when not.
    Other {
        /// CryptPad's hash of the content, when the line is a message and the hash fits a key.
        key: Option<Vec<u8>>,
        /// The message's server time (element 5), when it is a non-negative number.
        time_ms: Option<u64>,
    },
}

pub fn inspect(line: &[u8]) -> ChannelLine {
    let items = match parse_line(line) {
        Ok(Value::Object(_)) => return ChannelLine::Object,
        Ok(Value::Array(items)) => items,
        _ => {
            return ChannelLine::Other {
                key: None,
                time_ms: None,
            };
        }
    };
    let content = match (items.get(2), items.get(4)) {
        (Some(Value::String(kind)), Some(Value::String(content))) if kind == "MSG" => content,
        _ => {
            return ChannelLine::Other {
                key: None,
                time_ms: None,
            };
        }
    };
    let hash = cryptpad_hash(content);
    ChannelLine::Other {
        key: (hash.len() <= KEY_BYTES_MAX).then(|| hash.as_bytes().to_vec()),
        time_ms: items.get(5).and_then(time_ms),
    }
}

/// The time of a metadata command line `[CMD, args, time]`, when it has one.
pub fn command_time(line: &[u8]) -> Option<u64> {
    match parse_line(line) {
        Ok(Value::Array(items)) => items.get(2).and_then(time_ms),
        _ => None,
    }
}

/// The first 64 UTF-16 code units of `content`. A surrogate pair the cut would split is
/// left out whole (JS would keep half of it, which no UTF-8 key can hold).
fn cryptpad_hash(content: &str) -> &str {
    let mut units = 0;
    for (at, c) in content.char_indices() {
        if units + c.len_utf16() > HASH_UTF16_UNITS {
            return &content[..at];
        }
        units += c.len_utf16();
    }
    content
}

fn time_ms(value: &Value) -> Option<u64> {
    let ms = value.as_f64()?;
    // `as` saturates; a NaN cannot come out of JSON.
    (ms >= 0.0).then_some(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_keyed_by_its_content_prefix() {
        let content = "A".repeat(100);
        let line = format!(r#"[0,"u","MSG","chan","{content}",1700000000123]"#);
        assert_eq!(
            inspect(line.as_bytes()),
            ChannelLine::Other {
                key: Some(content.as_bytes()[..64].to_vec()),
                time_ms: Some(1_700_000_000_123),
            }
        );
        // Short content is its own hash; a missing or odd time is no time.
        assert_eq!(
            inspect(br#"[0,null,"MSG","chan","cp|abc"]"#),
            ChannelLine::Other {
                key: Some(b"cp|abc".to_vec()),
                time_ms: None
            }
        );
        assert_eq!(
            inspect(br#"[0,null,"MSG","chan","x","soon"]"#),
            ChannelLine::Other {
                key: Some(b"x".to_vec()),
                time_ms: None
            }
        );
    }

    #[test]
    fn other_lines_have_no_key() {
        let none = ChannelLine::Other {
            key: None,
            time_ms: None,
        };
        assert_eq!(inspect(br#"{"owners":[]}"#), ChannelLine::Object);
        assert_eq!(inspect(b""), none);
        assert_eq!(inspect(b"not json"), none);
        assert_eq!(inspect(br#"[0,"u","JOIN","chan"]"#), none);
        assert_eq!(inspect(br#"[0,"u","MSG","chan",42,1]"#), none);
    }

    #[test]
    fn the_hash_counts_utf16_units_and_never_splits_a_pair() {
        assert_eq!(cryptpad_hash(&"é".repeat(70)), "é".repeat(64));
        let pairs = "😀".repeat(40); // two units each
        assert_eq!(cryptpad_hash(&pairs), "😀".repeat(32));
        let odd = format!("a{pairs}");
        assert_eq!(cryptpad_hash(&odd), format!("a{}", "😀".repeat(31)));
        // 64 two-byte characters are 128 bytes: too long for a key, so the line is keyed by hash.
        let line = format!(r#"[0,"u","MSG","c","{}",1]"#, "é".repeat(64));
        assert!(matches!(
            inspect(line.as_bytes()),
            ChannelLine::Other { key: None, .. }
        ));
    }
}
