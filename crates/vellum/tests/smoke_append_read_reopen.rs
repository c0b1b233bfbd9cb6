//! Proves the basic life of a channel: append, read back, close, reopen, read again.

use vellum::{Durability, Options, ReadRequest, Vellum};

#[test]
fn appended_messages_read_back_in_order_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Vellum::open(dir.path(), Options::default()).unwrap();
    let mut acks = Vec::new();
    for i in 0..100u32 {
        acks.push(
            store
                .append("chan-a", format!("message {i}").as_bytes())
                .unwrap(),
        );
    }
    assert!(acks.iter().all(|a| a.durability == Durability::Fsynced));
    assert_eq!(
        acks.iter().map(|a| a.seq).collect::<Vec<_>>(),
        (0..100).collect::<Vec<_>>()
    );
    let read: Vec<_> = store
        .read("chan-a", &ReadRequest::all())
        .unwrap()
        .map(|m| m.unwrap())
        .collect();
    assert_eq!(read.len(), 100);
    assert_eq!(read[42].data, b"message 42");
    drop(store);
    let store = Vellum::open(dir.path(), Options::default()).unwrap();
    let read: Vec<_> = store
        .read("chan-a", &ReadRequest::all())
        .unwrap()
        .map(|m| m.unwrap())
        .collect();
    assert_eq!(read.len(), 100);
    assert_eq!(read[99].data, b"message 99");
    assert_eq!(store.append("chan-a", b"next").unwrap().seq, 100);
}
