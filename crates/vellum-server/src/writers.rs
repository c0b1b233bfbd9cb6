//! Queued writes (appends, batches, publishes) are handed to a few dedicated threads
//! rather than tokio's blocking pool: under load a writer thread takes request after
//! request without sleeping in between, where the pool would wake a thread per request.
//! The engine call only queues the write (it may wait for queue room or load a channel
//! from disk, which is why it is not run on an async worker); the acknowledgement
//! arrives later through a callback, without holding any thread through the fsync.

use crate::ApiError;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use vellum::{Error, Vellum};

/// Writer threads.
const THREADS: usize = 2;

/// Writes waiting for a writer thread, at most; beyond it requests wait (backpressure).
const QUEUE_MAX: usize = 1024;

type Job = Box<dyn FnOnce(&Vellum) + Send>;

/// The acknowledgement callback an engine `*_with` call takes.
pub type Done<T> = Box<dyn FnOnce(vellum::Result<T>) + Send>;

pub struct Writers {
    queue: mpsc::Sender<Job>,
}

impl Writers {
    pub fn new(store: Arc<Vellum>) -> Writers {
        let (queue, jobs) = mpsc::channel::<Job>(QUEUE_MAX);
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..THREADS {
            let (store, jobs) = (store.clone(), jobs.clone());
            std::thread::Builder::new()
                .name(format!("vellum-writer-{i}"))
                .spawn(move || {
                    // Ends when every sender (every AppState) is gone.
                    loop {
                        let Some(job) = jobs.lock().blocking_recv() else {
                            return;
                        };
                        job(&store);
                    }
                })
                .expect("spawning a writer thread");
        }
        Writers { queue }
    }

    /// Runs `submit` on a writer thread and waits for the acknowledgement it arranges:
    /// `submit` queues a write and hands the engine `done`; an error from `submit`
    /// itself (bad input, refused before anything was queued) is the answer instead.
    pub async fn write<T: Send + 'static>(
        &self,
        submit: impl FnOnce(&Vellum, Done<T>) -> vellum::Result<()> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel::<vellum::Result<T>>();
        let job: Job = Box::new(move |store| {
            let answer = Arc::new(Mutex::new(Some(tx)));
            let acknowledge = answer.clone();
            let done: Done<T> = Box::new(move |result| {
                if let Some(tx) = acknowledge.lock().take() {
                    let _ = tx.send(result);
                }
            });
            if let Err(e) = submit(store, done)
                && let Some(tx) = answer.lock().take()
            {
                let _ = tx.send(Err(e));
            }
        });
        self.queue.send(job).await.map_err(|_| Error::Closed)?;
        Ok(rx.await.map_err(|_| Error::Closed)??)
    }
}
