//! Live delivery: one bounded broadcast queue per channel that has subscribers.
//!
//! Acknowledged messages are put on it from the engine's acknowledgement callback (on
//! the commit thread, in commit order, so in seq order per channel); each subscriber
//! reads at its own pace. The queue is a ring of `subscriber_lag_messages_max`
//! entries shared by all of a channel's subscribers: a subscriber that falls that far
//! behind loses its place and is closed, so memory never grows with a slow reader.

use crate::config::Limits;
use axum::body::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use tokio::sync::broadcast;
use vellum::Selector;

/// One acknowledged message, shared by every subscriber of its channel. Its frame is
/// built once, by whichever subscriber sends it first.
#[derive(Debug)]
pub struct Delivered {
    pub seq: u64,
    pub key: Vec<u8>,
    pub time_ms: u64,
    pub data: Bytes,
    frame: OnceLock<axum::extract::ws::Utf8Bytes>,
}

impl Delivered {
    /// The message as a WebSocket text frame (the same JSON as a history line).
    pub fn frame(&self) -> axum::extract::ws::Utf8Bytes {
        self.frame
            .get_or_init(|| {
                let line = crate::wire::Line::of(self.seq, &self.key, self.time_ms, &self.data);
                serde_json::to_string(&line)
                    .expect("a line serializes")
                    .into()
            })
            .clone()
    }
}

/// What a subscriber is told.
#[derive(Debug, Clone)]
pub enum Event {
    Message(Arc<Delivered>),
    /// The channel was cleared: every earlier message is gone.
    Cleared,
    /// The channel was trimmed: messages before this one are gone.
    Trimmed(Selector),
    /// One message was deleted.
    Deleted(Selector),
    /// The channel was removed or archived: the subscription ends.
    Ended(&'static str),
}

pub struct Hub {
    channels: Mutex<HashMap<String, broadcast::Sender<Event>>>,
    lag_max: usize,
}

impl Hub {
    pub fn new(limits: &Limits) -> Hub {
        Hub {
            channels: Mutex::new(HashMap::new()),
            lag_max: limits.subscriber_lag_messages_max,
        }
    }

    /// Joins `channel`'s queue. Subscribe before reading history, so no message
    /// acknowledged in between is missed (the reader skips the ones history had).
    pub fn subscribe(&self, channel: &str) -> broadcast::Receiver<Event> {
        let mut channels = self.channels.lock();
        match channels.get(channel) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = broadcast::channel(self.lag_max);
                channels.insert(channel.to_string(), sender);
                receiver
            }
        }
    }

    /// Forgets `channel`'s queue once its last subscriber has gone.
    pub fn unsubscribe(&self, channel: &str, receiver: broadcast::Receiver<Event>) {
        drop(receiver);
        let mut channels = self.channels.lock();
        if channels
            .get(channel)
            .is_some_and(|s| s.receiver_count() == 0)
        {
            channels.remove(channel);
        }
    }

    /// Called with each acknowledged batch; cheap when nobody listens.
    pub fn delivered(&self, channel: &str, receipts: &[vellum::Appended], bodies: &[Bytes]) {
        let channels = self.channels.lock();
        let Some(sender) = channels.get(channel) else {
            return;
        };
        for (receipt, data) in receipts.iter().zip(bodies) {
            let _ = sender.send(Event::Message(Arc::new(Delivered {
                seq: receipt.seq,
                key: receipt.key.clone(),
                time_ms: receipt.time_ms,
                data: data.clone(),
                frame: OnceLock::new(),
            })));
        }
    }

    /// Tells `channel`'s subscribers of a rewrite or its end.
    pub fn notify(&self, channel: &str, event: Event) {
        if let Some(sender) = self.channels.lock().get(channel) {
            let _ = sender.send(event);
        }
    }

    /// Ends every subscription (shutdown): each subscriber's queue reports closed.
    pub fn close_all(&self) {
        self.channels.lock().clear();
    }

    /// Channels with at least one subscriber.
    pub fn channels(&self) -> usize {
        self.channels.lock().len()
    }
}
