//! Queued writes (appends, batches, publishes) that may have to wait are handed to a
//! few dedicated threads rather than tokio's blocking pool: under load a writer thread
//! takes request after request without sleeping in between, where the pool would wake
//! a thread per request. (An append that can be queued at once skips them: see
//! `AppState::append_messages`.) The engine call only queues the write; the
//! acknowledgement arrives later through a callback, holding no thread through the fsync.

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

/// Where one write's answer goes: whichever comes first of the engine's
/// acknowledgement and a refusal before anything was queued.
pub struct Answer<T>(Arc<Mutex<Option<oneshot::Sender<vellum::Result<T>>>>>);

impl<T> Clone for Answer<T> {
    fn clone(&self) -> Self {
        Answer(self.0.clone())
    }
}

impl<T: Send + 'static> Answer<T> {
    pub fn new() -> (Answer<T>, Waiting<T>) {
        let (tx, rx) = oneshot::channel();
        (Answer(Arc::new(Mutex::new(Some(tx)))), Waiting(rx))
    }

    pub fn send(&self, result: vellum::Result<T>) {
        if let Some(tx) = self.0.lock().take() {
            let _ = tx.send(result);
        }
    }
}

/// The receiving end of an [`Answer`].
pub struct Waiting<T>(oneshot::Receiver<vellum::Result<T>>);

impl<T> Waiting<T> {
    pub async fn answer(self) -> Result<T, ApiError> {
        Ok(self.0.await.map_err(|_| Error::Closed)??)
    }
}

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

    /// Runs `submit` on a writer thread: it queues a write whose acknowledgement goes
    /// to `answer`; a refusal from `submit` itself goes there instead.
    pub async fn submit<T: Send + 'static>(
        &self,
        answer: Answer<T>,
        submit: impl FnOnce(&Vellum, Answer<T>) -> vellum::Result<()> + Send + 'static,
    ) -> Result<(), ApiError> {
        let job: Job = Box::new(move |store| {
            if let Err(e) = submit(store, answer.clone()) {
                answer.send(Err(e));
            }
        });
        self.queue.send(job).await.map_err(|_| Error::Closed)?;
        Ok(())
    }

    /// Runs `submit` on a writer thread and waits for the acknowledgement.
    pub async fn write<T: Send + 'static>(
        &self,
        submit: impl FnOnce(&Vellum, Done<T>) -> vellum::Result<()> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (answer, waiting) = Answer::new();
        self.submit(answer, move |store, answer| {
            submit(store, Box::new(move |result| answer.send(result)))
        })
        .await?;
        waiting.answer().await
    }
}
