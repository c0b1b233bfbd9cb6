//! Per-channel task scheduling: CryptPad's `ordered` / `unordered` /
//! `blocking` classes (`lib/schedule.js`) as a synchronous *lane*.
//!
//! A task runs on the caller's thread. [`Lane::enter`] blocks until the task
//! may run and returns a [`LaneGuard`]. Dropping the guard ends the task and
//! wakes the waiters.
//!
//! - **Ordered** tasks (appends, metadata writes, remove, clear, restore,
//!   size) and **blocking** tasks (trim, delete line) share one FIFO of
//!   tickets, served strictly in the order `enter` was called. Only the FIFO
//!   head runs, so at most one of them runs at a time. An ordered head runs at
//!   once, even beside unordered tasks.
//! - **Unordered** tasks (reads, metadata reads, archive, weak locks) run at
//!   once and in parallel, unless a blocking task is at the FIFO head (waiting
//!   for readers to drain, or running). Then they are *parked* and admitted
//!   when that blocking task ends. A blocking task queued behind an ordered
//!   one does not park readers yet; CryptPad takes its lock only when the
//!   write queue reaches the blocking task.
//! - A **blocking** head waits until the running unordered tasks end, then
//!   runs alone. No unordered task is admitted while it waits, so a stream of
//!   readers cannot starve it. The FIFO cannot starve, and parked readers
//!   wait for one task only, so every task completes as long as every guard
//!   is eventually dropped.
//!
//! Never enter a lane while holding one of its guards on the same thread.
//! A second ordered or blocking entry waits for the guard you hold. An
//! unordered entry deadlocks as soon as a blocking task reaches the head.

use std::collections::VecDeque;

use parking_lot::{Condvar, Mutex};

/// One channel's scheduling lane.
#[derive(Debug, Default)]
pub struct Lane {
    state: Mutex<State>,
    /// Notified when a task ends. Every waiter re-checks its own condition,
    /// so one `notify_all` covers all the classes.
    released: Condvar,
}

/// The scheduling class of a task (CryptPad's `schedule.ordered`,
/// `schedule.unordered`, `schedule.blocking`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskClass {
    /// FIFO with the blocking tasks. One at a time. May run beside unordered tasks.
    Ordered,
    /// Parallel with other unordered tasks and with an ordered task.
    Unordered,
    /// FIFO with the ordered tasks. Runs alone.
    Blocking,
}

/// A running task. Dropping it ends the task and lets waiting tasks run.
///
/// It is `Send`: a task may start on one thread and end on another.
#[derive(Debug)]
#[must_use = "the task ends when the guard is dropped"]
pub struct LaneGuard<'a> {
    lane: &'a Lane,
    class: TaskClass,
}

#[derive(Debug, Default)]
struct State {
    /// The next FIFO ticket to hand out (ordered and blocking tasks).
    next_ticket: u64,
    /// The FIFO head: the ticket that runs or may run next. Every lower
    /// ticket has ended. The FIFO is empty when `serving == next_ticket`.
    serving: u64,
    /// Tickets of the blocking tasks that have not ended, in ticket order.
    /// This tells whether the head is blocking without storing every class.
    blocking: VecDeque<u64>,
    /// Admitted unordered tasks that have not ended.
    unordered: usize,
    /// Unordered tasks parked behind the blocking task at the head.
    parked: usize,
}

impl State {
    /// The ticket of the blocking task at the FIFO head (waiting or running).
    fn blocking_head(&self) -> Option<u64> {
        self.blocking
            .front()
            .copied()
            .filter(|&t| t == self.serving)
    }
}

/// A task that has taken its place in the lane but may not have started yet.
///
/// Admission is split from waiting so that the place (the FIFO ticket, or
/// the decision to park) is fixed under the mutex when the task is
/// submitted. `enter` waits right after submitting. The tests submit from
/// one thread and wait on others, which makes submission order
/// deterministic. A `Pending` must be waited for: dropping it instead would
/// leave its ticket in the FIFO forever.
#[must_use = "a pending task keeps its place until it is waited for"]
struct Pending<'a> {
    lane: &'a Lane,
    turn: Turn,
}

#[derive(Debug, Clone, Copy)]
enum Turn {
    /// Unordered, admitted on submission and already counted in `State::unordered`.
    Unordered,
    /// Unordered, parked behind the blocking task with this ticket. That
    /// task's release counts it in `State::unordered` in the same critical
    /// section that advances `serving`. So once `serving` has passed the
    /// ticket, a blocking task at the next head already waits for it.
    UnorderedAfter(u64),
    /// Ordered, with this FIFO ticket.
    Ordered(u64),
    /// Blocking, with this FIFO ticket.
    Blocking(u64),
}

impl Turn {
    fn is_ready(self, st: &State) -> bool {
        match self {
            Turn::Unordered => true,
            Turn::UnorderedAfter(b) => st.serving > b,
            // The head may run next to unordered tasks. A running blocking
            // task would itself be the head, so none runs now.
            Turn::Ordered(t) => st.serving == t,
            Turn::Blocking(t) => st.serving == t && st.unordered == 0,
        }
    }

    fn class(self) -> TaskClass {
        match self {
            Turn::Unordered | Turn::UnorderedAfter(_) => TaskClass::Unordered,
            Turn::Ordered(_) => TaskClass::Ordered,
            Turn::Blocking(_) => TaskClass::Blocking,
        }
    }
}

impl Lane {
    /// An idle lane.
    pub fn new() -> Self {
        Self::default()
    }

    /// Blocks until a task of `class` may run, then returns its guard.
    pub fn enter(&self, class: TaskClass) -> LaneGuard<'_> {
        self.submit(class).wait()
    }

    /// `enter(TaskClass::Ordered)`.
    pub fn ordered(&self) -> LaneGuard<'_> {
        self.enter(TaskClass::Ordered)
    }

    /// An ordered task's guard if it may run at once (nothing ahead of it in the
    /// FIFO); `None`, changing nothing, if it would have to wait.
    pub fn try_ordered(&self) -> Option<LaneGuard<'_>> {
        let mut st = self.state.lock();
        if st.serving != st.next_ticket {
            return None;
        }
        st.next_ticket += 1;
        Some(LaneGuard {
            lane: self,
            class: TaskClass::Ordered,
        })
    }

    /// `enter(TaskClass::Unordered)`.
    pub fn unordered(&self) -> LaneGuard<'_> {
        self.enter(TaskClass::Unordered)
    }

    /// `enter(TaskClass::Blocking)`.
    pub fn blocking(&self) -> LaneGuard<'_> {
        self.enter(TaskClass::Blocking)
    }

    /// True when no task runs or waits (the channel cache may then evict the channel).
    ///
    /// Only a snapshot: keep the lane reachable only through the cache's own
    /// lock so that nobody can enter it after it is found idle.
    pub fn is_idle(&self) -> bool {
        let st = self.state.lock();
        st.serving == st.next_ticket && st.unordered == 0 && st.parked == 0
    }

    /// Takes the task's place without waiting (see [`Pending`]).
    fn submit(&self, class: TaskClass) -> Pending<'_> {
        let mut st = self.state.lock();
        let turn = match class {
            TaskClass::Unordered => match st.blocking_head() {
                Some(b) => {
                    st.parked += 1;
                    Turn::UnorderedAfter(b)
                }
                None => {
                    st.unordered += 1;
                    Turn::Unordered
                }
            },
            TaskClass::Ordered | TaskClass::Blocking => {
                let t = st.next_ticket;
                st.next_ticket += 1;
                if class == TaskClass::Blocking {
                    st.blocking.push_back(t);
                    Turn::Blocking(t)
                } else {
                    Turn::Ordered(t)
                }
            }
        };
        Pending { lane: self, turn }
    }
}

impl<'a> Pending<'a> {
    /// Blocks until the task may run.
    fn wait(self) -> LaneGuard<'a> {
        let mut st = self.lane.state.lock();
        // The loop also absorbs spurious wake-ups.
        while !self.turn.is_ready(&st) {
            self.lane.released.wait(&mut st);
        }
        LaneGuard {
            lane: self.lane,
            class: self.turn.class(),
        }
    }

    /// Whether `wait` would return at once.
    #[cfg(test)]
    fn is_ready(&self) -> bool {
        self.turn.is_ready(&self.lane.state.lock())
    }
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.lane.state.lock();
        let wake = match self.class {
            TaskClass::Unordered => {
                st.unordered -= 1;
                // Only a blocking head waits on this count, and only for zero.
                st.unordered == 0
            }
            TaskClass::Ordered => {
                debug_assert!(st.serving < st.next_ticket && st.blocking_head().is_none());
                st.serving += 1;
                true
            }
            TaskClass::Blocking => {
                let ended = st.blocking.pop_front();
                debug_assert_eq!(ended, Some(st.serving));
                st.serving += 1;
                // Admit the parked readers while still holding the mutex, so a
                // blocking task at the new head waits for them (see `Turn`).
                st.unordered += st.parked;
                st.parked = 0;
                true
            }
        };
        drop(st);
        if wake {
            self.lane.released.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, mpsc};
    use std::thread;
    use std::time::Duration;

    use TaskClass::{Blocking, Ordered, Unordered};

    /// How long a test waits for something that must happen before it
    /// declares a hang. This detects failures and never sequences anything.
    const LIVENESS: Duration = Duration::from_secs(5);

    /// A `'static` lane, so that a pending task can move to a detached
    /// thread and a broken lane fails the test instead of hanging it.
    fn leaked_lane() -> &'static Lane {
        Box::leak(Box::new(Lane::new()))
    }

    /// Waits for `task` on a detached thread, runs it (empty) and reports on
    /// the returned channel.
    fn run_in_background(task: Pending<'static>) -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            drop(task.wait());
            tx.send(()).unwrap();
        });
        rx
    }

    // ---- unit tests -------------------------------------------------------

    #[test]
    fn unordered_tasks_run_in_parallel() {
        let lane = leaked_lane();
        let a = lane.unordered();
        let b = lane.submit(Unordered);
        assert!(b.is_ready(), "a reader waited for a reader");
        let b = b.wait();
        // Beside an ordered task too, whichever came first.
        let o = lane.submit(Ordered);
        assert!(o.is_ready(), "an ordered task waited for readers");
        let o = o.wait();
        let c = lane.submit(Unordered);
        assert!(c.is_ready(), "a reader waited for an ordered task");
        let c = c.wait();
        drop((a, b, c, o));
        assert!(lane.is_idle());

        // Four threads hold a reader guard at the same time.
        const N: usize = 4;
        let (in_tx, in_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let go_rx = Arc::new(Mutex::new(go_rx));
        for _ in 0..N {
            let (in_tx, go_rx) = (in_tx.clone(), Arc::clone(&go_rx));
            thread::spawn(move || {
                let guard = lane.unordered();
                in_tx.send(()).unwrap();
                let _ = go_rx.lock().recv();
                drop(guard);
            });
        }
        for k in 0..N {
            in_rx
                .recv_timeout(LIVENESS)
                .unwrap_or_else(|_| panic!("only {k} of {N} readers got in together"));
        }
        drop(go_tx); // every `recv` now fails at once, so the readers finish
        let done = lane.submit(Blocking);
        let rx = run_in_background(done);
        rx.recv_timeout(LIVENESS)
            .expect("the readers never finished");
        assert!(lane.is_idle());
    }

    #[test]
    fn blocking_waits_for_running_readers() {
        let lane = leaked_lane();
        let r1 = lane.unordered();
        let r2 = lane.unordered();
        let w = lane.submit(Blocking);
        assert!(!w.is_ready(), "blocking task ready while two readers run");
        drop(r1);
        assert!(!w.is_ready(), "blocking task ready while a reader runs");
        drop(r2);
        assert!(
            w.is_ready(),
            "blocking task not ready after the readers left"
        );
        drop(w.wait());

        // The same on threads: the writer wakes when the last reader leaves,
        // and not before.
        let held = Arc::new(AtomicUsize::new(2));
        let r1 = lane.unordered();
        let r2 = lane.unordered();
        let w = lane.submit(Blocking);
        let (tx, rx) = mpsc::channel();
        let seen = Arc::clone(&held);
        thread::spawn(move || {
            let guard = w.wait();
            tx.send(seen.load(Ordering::SeqCst)).unwrap();
            drop(guard);
        });
        held.store(1, Ordering::SeqCst);
        drop(r1);
        assert!(
            rx.try_recv().is_err(),
            "blocking task started while a reader runs"
        );
        held.store(0, Ordering::SeqCst);
        drop(r2);
        let readers = rx
            .recv_timeout(LIVENESS)
            .expect("blocking task never started");
        assert_eq!(
            readers, 0,
            "blocking task started while {readers} readers ran"
        );
    }

    #[test]
    fn blocking_waits_for_the_ordered_task_ahead_and_excludes_everything() {
        let lane = leaked_lane();
        let o = lane.ordered();
        let w = lane.submit(Blocking);
        assert!(
            !w.is_ready(),
            "blocking task ready while an ordered task runs"
        );
        drop(o);
        assert!(w.is_ready());
        let w = w.wait();
        let o2 = lane.submit(Ordered);
        let u = lane.submit(Unordered);
        assert!(
            !o2.is_ready(),
            "ordered task ready while a blocking task runs"
        );
        assert!(!u.is_ready(), "reader ready while a blocking task runs");
        drop(w);
        assert!(o2.is_ready() && u.is_ready());
        drop((o2.wait(), u.wait()));
        assert!(lane.is_idle());
    }

    #[test]
    fn readers_arriving_during_blocking_run_after_it() {
        let lane = leaked_lane();
        // Arriving while the blocking task runs.
        let w = lane.blocking();
        let u = lane.submit(Unordered);
        assert!(!u.is_ready(), "reader ready while a blocking task runs");
        drop(w);
        assert!(
            u.is_ready(),
            "parked reader not released after the blocking task"
        );
        drop(u.wait());

        // Arriving while the blocking task waits at the head for an older
        // reader: the new reader must not overtake it.
        let old = lane.unordered();
        let w = lane.submit(Blocking);
        let new = lane.submit(Unordered);
        assert!(!new.is_ready(), "reader overtook a waiting blocking task");
        drop(old);
        assert!(w.is_ready());
        assert!(!new.is_ready(), "reader ready before the blocking task ran");
        // A second blocking task behind the first one waits for the readers
        // that the first one released.
        let w2 = lane.submit(Blocking);
        let w = w.wait();
        drop(w);
        assert!(new.is_ready());
        assert!(!w2.is_ready(), "blocking task ignored a released reader");

        // On threads: the parked reader wakes when the blocking task ends.
        let rx = run_in_background(new);
        rx.recv_timeout(LIVENESS)
            .expect("released reader never ran");
        assert!(w2.is_ready());
        let w2 = w2.wait();
        let late = lane.submit(Unordered);
        let rx = run_in_background(late);
        assert!(rx.try_recv().is_err(), "reader ran during a blocking task");
        drop(w2);
        rx.recv_timeout(LIVENESS).expect("parked reader never woke");
        assert!(lane.is_idle());
    }

    #[test]
    fn readers_are_not_parked_by_a_blocking_task_queued_behind_an_ordered_one() {
        let lane = leaked_lane();
        let o = lane.ordered();
        let w = lane.submit(Blocking);
        let u = lane.submit(Unordered);
        assert!(
            u.is_ready(),
            "reader parked behind a blocking task not at the head"
        );
        let u = u.wait();
        drop(o);
        assert!(!w.is_ready(), "blocking task ready while the reader runs");
        drop(u);
        drop(w.wait());
        assert!(lane.is_idle());
    }

    #[test]
    fn ordered_is_fifo() {
        let lane = leaked_lane();
        let first = lane.ordered();
        let second = lane.submit(Ordered);
        let third = lane.submit(Ordered);
        assert!(!second.is_ready() && !third.is_ready());
        drop(first);
        assert!(second.is_ready());
        assert!(
            !third.is_ready(),
            "third ordered task ready before the second ran"
        );
        drop(second.wait());
        assert!(third.is_ready());
        drop(third.wait());

        // On threads, waiting in reverse order: they still run in submission order.
        const N: usize = 12;
        let order = Arc::new(Mutex::new(Vec::new()));
        let head = lane.ordered();
        let pending: Vec<_> = (0..N).map(|_| lane.submit(Ordered)).collect();
        let (tx, rx) = mpsc::channel();
        for (i, p) in pending.into_iter().enumerate().rev() {
            let (order, tx) = (Arc::clone(&order), tx.clone());
            thread::spawn(move || {
                let guard = p.wait();
                order.lock().push(i);
                drop(guard);
                tx.send(()).unwrap();
            });
        }
        drop(head);
        for _ in 0..N {
            rx.recv_timeout(LIVENESS)
                .expect("an ordered task never ran");
        }
        assert_eq!(*order.lock(), (0..N).collect::<Vec<_>>(), "out of order");
    }

    #[test]
    fn idle_after_all_guards_drop() {
        let lane = leaked_lane();
        assert!(lane.is_idle());
        let u = lane.unordered();
        assert!(!lane.is_idle(), "idle while a reader runs");
        let o = lane.ordered();
        let w = lane.submit(Blocking);
        drop(u);
        drop(o);
        assert!(!lane.is_idle(), "idle while a blocking task waits");
        let w = w.wait();
        let parked = lane.submit(Unordered);
        let queued = lane.submit(Ordered);
        drop(w);
        assert!(
            !lane.is_idle(),
            "idle with a released reader and a queued task"
        );
        let parked = parked.wait();
        drop(queued.wait());
        assert!(!lane.is_idle(), "idle while the released reader runs");
        drop(parked);
        assert!(lane.is_idle(), "not idle after every guard dropped");
    }

    // ---- scripted and random scripts (CryptPad's test-scheduler.js) -------

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Event {
        /// The task holds its guard.
        Start(usize),
        /// The task is about to drop its guard.
        End(usize),
        /// The task dropped its guard.
        Released(usize),
    }

    #[derive(Debug, Clone, Copy)]
    enum Step {
        /// Submit the next task (tasks are numbered from 0 in script order).
        Task(TaskClass, Work),
        /// Submit nothing more until this task has started.
        AwaitStart(usize),
        /// Submit nothing more until this task has released its guard.
        AwaitRelease(usize),
        /// Let this `Work::Hold` task end (it may not have started yet).
        Finish(usize),
    }

    /// What a task does while it holds its guard.
    #[derive(Debug, Clone, Copy)]
    enum Work {
        /// Sleeps this many microseconds: the task's work, which nothing waits on.
        Sleep(u64),
        /// Holds the guard until the script's `Step::Finish` for this task,
        /// which makes a lane state deterministic while later steps run.
        Hold,
    }

    #[derive(Default)]
    struct Log {
        events: Mutex<Vec<Event>>,
        changed: Condvar,
    }

    impl Log {
        fn push(&self, event: Event) {
            self.events.lock().push(event);
            self.changed.notify_all();
        }

        fn await_event(&self, script: &str, event: Event) {
            let mut events = self.events.lock();
            while !events.contains(&event) {
                if self.changed.wait_for(&mut events, LIVENESS).timed_out() {
                    panic!("{script}: {event:?} never happened; log so far: {events:?}");
                }
            }
        }
    }

    /// The first ordered or blocking task (by index) that has not released
    /// its guard, if it is blocking. Every FIFO task before it has released,
    /// so it is at the head of the lane, or it has ended already.
    fn blocking_head(classes: &[TaskClass], events: &[Event]) -> Option<usize> {
        classes
            .iter()
            .enumerate()
            .find(|&(i, &c)| c != Unordered && !events.contains(&Event::Released(i)))
            .filter(|&(_, &c)| c == Blocking)
            .map(|(i, _)| i)
    }

    /// Runs a script on one lane: each task on its own thread, submitted in
    /// script order. Checks the log and returns how many readers were
    /// submitted behind a blocking head (so callers can check coverage).
    fn run_script(script: &str, steps: &[Step]) -> usize {
        let lane = leaked_lane();
        let log = Arc::new(Log::default());
        let mut classes = Vec::new();
        // For each reader: the blocking task that was at the head when it was submitted.
        let mut behind = Vec::new();
        let mut threads = Vec::new();
        // For each task: the sender that ends it, while it is a `Work::Hold` task not yet finished.
        let mut holds: Vec<Option<mpsc::Sender<()>>> = Vec::new();
        for &step in steps {
            match step {
                Step::AwaitStart(j) => log.await_event(script, Event::Start(j)),
                Step::AwaitRelease(j) => log.await_event(script, Event::Released(j)),
                Step::Finish(j) => {
                    let finish = holds[j].take();
                    finish
                        .expect("script bug: Finish of a task that does not hold")
                        .send(())
                        .unwrap();
                }
                Step::Task(class, work) => {
                    let i = classes.len();
                    // Read before submitting: a blocking task seen at the head
                    // here is still at the head (or has ended) at submission.
                    let head = match class {
                        Unordered => blocking_head(&classes, &log.events.lock()),
                        Ordered | Blocking => None,
                    };
                    classes.push(class);
                    behind.push(head);
                    let (finish, finished) = mpsc::channel();
                    holds.push(matches!(work, Work::Hold).then_some(finish));
                    let pending = lane.submit(class);
                    let log = Arc::clone(&log);
                    let script = script.to_owned();
                    threads.push(thread::spawn(move || {
                        let guard = pending.wait();
                        log.push(Event::Start(i));
                        match work {
                            Work::Sleep(micros) => thread::sleep(Duration::from_micros(micros)),
                            Work::Hold => finished
                                .recv_timeout(LIVENESS)
                                .unwrap_or_else(|_| panic!("{script}: task {i} never finished")),
                        }
                        log.push(Event::End(i));
                        drop(guard);
                        log.push(Event::Released(i));
                    }));
                }
            }
        }
        assert!(
            holds.iter().all(Option::is_none),
            "script bug: a task holds forever"
        );
        for i in 0..classes.len() {
            log.await_event(script, Event::Released(i));
        }
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            lane.is_idle(),
            "{script}: lane not idle after every task ended"
        );
        let events = log.events.lock().clone();
        check_log(script, &classes, &behind, &events);
        behind.iter().flatten().count()
    }

    fn check_log(script: &str, classes: &[TaskClass], behind: &[Option<usize>], events: &[Event]) {
        let n = classes.len();
        assert_eq!(events.len(), 3 * n, "{script}: skipped tasks: {events:?}");
        let pos = |e: Event| {
            events
                .iter()
                .position(|&x| x == e)
                .unwrap_or_else(|| panic!("{script}: {e:?} missing (skipped task)"))
        };
        // A log position span. Start is logged after acquiring and End before
        // releasing, so spans overlapping in the log overlapped for real.
        let span: Vec<(usize, usize)> = (0..n)
            .map(|i| (pos(Event::Start(i)), pos(Event::End(i))))
            .collect();
        let overlap = |a: usize, b: usize| span[a].0 < span[b].1 && span[b].0 < span[a].1;
        let fifo: Vec<usize> = (0..n).filter(|&i| classes[i] != Unordered).collect();
        for w in fifo.windows(2) {
            let (a, b) = (w[0], w[1]);
            assert!(
                span[a].1 < span[b].0,
                "{script}: out of order: {:?} {b} started before {:?} {a} ended",
                classes[b],
                classes[a]
            );
        }
        for b in (0..n).filter(|&i| classes[i] == Blocking) {
            for x in (0..n).filter(|&x| x != b) {
                assert!(
                    !overlap(b, x),
                    "{script}: too much parallel: {:?} {x} overlaps blocking {b}",
                    classes[x]
                );
            }
        }
        for (u, head) in behind.iter().enumerate() {
            if let Some(b) = *head {
                assert!(
                    span[b].1 < span[u].0,
                    "{script}: reader {u} submitted behind blocking {b} started before it ended"
                );
            }
        }
    }

    #[test]
    fn scripted_readers_around_a_writer() {
        use Step::*;
        use Work::*;
        let parked = run_script(
            "readers around a writer",
            &[
                Task(Unordered, Hold),
                Task(Unordered, Sleep(1000)),
                Task(Blocking, Hold),        // 2: at the head, waits for 0 and 1
                Task(Unordered, Sleep(200)), // 3: parked while 2 waits
                Finish(0),
                AwaitStart(2),
                Task(Unordered, Sleep(200)), // 4: parked while 2 runs
                Task(Ordered, Sleep(300)),   // 5
                Task(Unordered, Sleep(100)), // 6: parked while 2 runs
                Finish(2),
                AwaitRelease(2),
                Task(Unordered, Hold), // 7: runs at once
                AwaitStart(7),
                Task(Blocking, Sleep(300)), // 8: waits for 7
                AwaitRelease(5),
                Task(Ordered, Sleep(100)),   // 9
                Task(Unordered, Sleep(100)), // 10: parked while 8 waits
                Finish(7),
            ],
        );
        assert_eq!(
            parked, 4,
            "readers 3, 4, 6 and 10 were submitted behind a blocking head"
        );
    }

    #[test]
    fn scripted_appends_with_rewrites_between() {
        use Step::*;
        use Work::*;
        let parked = run_script(
            "appends with rewrites between",
            &[
                Task(Ordered, Hold),
                Task(Ordered, Sleep(200)),
                Task(Blocking, Sleep(300)), // 2
                Task(Unordered, Hold),      // 3: not parked, 2 is not at the head
                AwaitStart(3),              // runs beside ordered 0
                Finish(0),
                Task(Ordered, Sleep(100)),   // 4
                AwaitRelease(1),             // 2 is at the head, waiting for 3
                Task(Unordered, Sleep(100)), // 5: parked
                Finish(3),
                AwaitStart(2),
                Task(Blocking, Sleep(200)),  // 6
                Task(Unordered, Sleep(100)), // 7
                Task(Ordered, Sleep(100)),   // 8
                AwaitRelease(4),
                Task(Blocking, Sleep(100)), // 9
                Task(Ordered, Hold),        // 10
                Task(Unordered, Sleep(50)), // 11
                Finish(10),
                AwaitRelease(10),
                Task(Unordered, Sleep(50)), // 12: the FIFO is empty
            ],
        );
        assert!(parked >= 1, "reader 5 was submitted behind a blocking head");
    }

    /// splitmix64 (Steele, Lea, Flood 2014).
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_script(rng: &mut SplitMix64) -> Vec<Step> {
        let tasks = 6 + rng.below(15) as usize;
        let mut steps = Vec::new();
        for i in 0..tasks {
            // Sometimes let the lane catch up, so readers also arrive while
            // a blocking task runs or after the FIFO drained.
            if i > 0 && rng.below(100) < 20 {
                let j = rng.below(i as u64) as usize;
                steps.push(if rng.below(2) == 0 {
                    Step::AwaitStart(j)
                } else {
                    Step::AwaitRelease(j)
                });
            }
            let class = match rng.below(100) {
                0..40 => Ordered,
                40..75 => Unordered,
                _ => Blocking,
            };
            steps.push(Step::Task(class, Work::Sleep(rng.below(2001))));
        }
        steps
    }

    #[test]
    fn random_scripts_keep_fifo_exclusivity_and_complete() {
        const SCRIPTS: u64 = 60;
        let mut parked = 0;
        for s in 0..SCRIPTS {
            let seed = 0x5EED_0000 + s;
            let steps = random_script(&mut SplitMix64(seed));
            parked += run_script(&format!("random script seed {seed:#x}"), &steps);
        }
        assert!(
            parked >= 10,
            "only {parked} readers were submitted behind a blocking head"
        );
    }

    #[test]
    fn splitmix64_matches_the_reference_values() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut rng = SplitMix64(1234567);
        assert_eq!(rng.next(), 6457827717110365317);
        assert_eq!(rng.next(), 3203168211198807973);
    }
}
