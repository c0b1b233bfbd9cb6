//! The record framing (`len | crc32c | body`): decoding arbitrary bytes never panics,
//! a record it accepts re-encodes to exactly the bytes it came from (so its checksum
//! is right), and "incomplete" means the buffer really is shorter than the record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vellum::fuzzing::{Decoded, decode, encode_with};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Decoded::Record { body, framed_len } => {
            let mut again = Vec::new();
            encode_with(&mut again, |out| out.extend_from_slice(body));
            assert_eq!(
                again,
                data[..framed_len],
                "an accepted record re-encodes differently"
            );
        }
        Decoded::Incomplete {
            framed_len: Some(len),
        } => {
            assert!(
                len > data.len(),
                "incomplete, yet the buffer holds {len} bytes"
            );
        }
        Decoded::Incomplete { framed_len: None } => assert!(data.len() < 8),
        Decoded::Damaged(_) => {}
    }
});
