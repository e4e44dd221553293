//! Wait queues (wait_queue_head_t): threads sleep on one until a waker
//! wakes them. A queue is a bitmap of thread slots, so adding and waking
//! need no allocation and no lock of their own.
//!
//! The protocol (Linux's, with a bitmap for the list): a waiter sets itself
//! asleep, then queues itself, then looks at its condition once more
//! before it gives its CPU up; a waker makes the condition true, then
//! empties the queue, waking every thread it found. Whichever comes first
//! in the queue's words, no wake-up is lost: either the waker finds the
//! waiter queued (and asleep), or the waiter sees the condition.

use core::marker::PhantomData;

use crate::primitives::{fence, AtomicU64, Ordering};

/// What the protocols need of the scheduler: the running thread's slot,
/// its state, and waking another. The kernel implements it over its run
/// queue; the tests over threads that park.
pub trait Scheduler {
    /// Why the running code may not sleep.
    type NoSleep;

    /// might_sleep(): whether the running code may sleep, reporting it (as
    /// Linux reports it) where it may not.
    #[track_caller]
    fn might_sleep() -> Result<(), Self::NoSleep>;

    /// Whether the running code may sleep, without a report.
    fn can_sleep() -> bool;

    /// The running thread's slot (each thread has one, below `64 * WORDS`
    /// of the queues it sleeps on).
    fn current_slot() -> usize;

    /// set_current_state(TASK_UNINTERRUPTIBLE): the running thread is
    /// asleep on `wchan`; it leaves its CPU at its next `schedule()` unless
    /// woken first.
    fn set_current_sleeping(wchan: &'static str);

    /// set_current_state(TASK_RUNNING).
    fn set_current_running();

    /// schedule(): gives the CPU up; a thread asleep stays off it until
    /// woken.
    fn schedule();

    /// try_to_wake_up(): the thread in `slot` becomes runnable if it is
    /// asleep (a thread not asleep is left alone).
    fn wake_up_slot(slot: usize);
}

/// A wait queue of threads whose slots are below `64 * WORDS`, with
/// scheduler `S`.
pub struct WaitQueue<S, const WORDS: usize> {
    waiters: [AtomicU64; WORDS],
    /// Which words of `waiters` may have a bit set (a waker clears what it
    /// found; a stale bit only costs a look).
    words: AtomicU64,
    scheduler: PhantomData<fn() -> S>,
}

/// The word and bit of a thread slot.
fn bit_of(slot: usize) -> (usize, u64) {
    (slot / 64, 1 << (slot % 64))
}

impl<S: Scheduler, const WORDS: usize> WaitQueue<S, WORDS> {
    /// Where the bitmap lies in a queue (`WORDS` u64s, slot 0 the lowest
    /// bit of the first), for the host's inspector.
    pub const WAITERS_OFFSET: usize = core::mem::offset_of!(Self, waiters);

    /// `words` has a bit for each word.
    const WORDS_FIT: () = assert!(WORDS > 0 && WORDS <= 64);

    #[cfg(not(all(test, loom)))]
    pub const fn new() -> Self {
        let () = Self::WORDS_FIT;
        WaitQueue {
            waiters: [const { AtomicU64::new(0) }; WORDS],
            words: AtomicU64::new(0),
            scheduler: PhantomData,
        }
    }

    #[cfg(all(test, loom))]
    pub fn new() -> Self {
        let () = Self::WORDS_FIT;
        WaitQueue {
            waiters: core::array::from_fn(|_| AtomicU64::new(0)),
            words: AtomicU64::new(0),
            scheduler: PhantomData,
        }
    }

    /// prepare_to_wait(): queues the running thread and sets it asleep on
    /// `wchan`. A wake-up from here on makes it runnable again, so the
    /// caller may check its condition (or drop the lock the waker takes)
    /// and then `schedule()` without missing it.
    #[track_caller]
    pub fn prepare_to_wait(&self, wchan: &'static str) -> Result<(), S::NoSleep> {
        S::might_sleep()?;
        // Asleep before queued: a waker that finds the bit finds a sleeper.
        S::set_current_sleeping(wchan);
        let (word, bit) = bit_of(S::current_slot());
        // The bit before its word's: a waker takes the word's bit, then the
        // word, so it cannot take the word before this bit is in it.
        self.waiters[word].fetch_or(bit, Ordering::SeqCst);
        self.words.fetch_or(1 << word, Ordering::SeqCst);
        // set_current_state()'s smp_mb(): the caller's next look at its
        // condition is ordered after the queueing, against a waker's look
        // at the queue (`has_sleepers`) after it changed the condition.
        fence(Ordering::SeqCst);
        Ok(())
    }

    /// finish_wait(): the running thread is awake and off the queue.
    pub fn finish_wait(&self) {
        S::set_current_running();
        let (word, bit) = bit_of(S::current_slot());
        self.waiters[word].fetch_and(!bit, Ordering::SeqCst);
    }

    /// wait_event(): sleeps until `condition` holds. The waker makes the
    /// condition true before it calls `wake_up`.
    #[track_caller]
    pub fn wait_event(
        &self,
        wchan: &'static str,
        mut condition: impl FnMut() -> bool,
    ) -> Result<(), S::NoSleep> {
        while !condition() {
            self.prepare_to_wait(wchan)?;
            if !condition() {
                S::schedule();
            }
            self.finish_wait();
        }
        Ok(())
    }

    /// wake_up_all(): every sleeper becomes runnable. Its swaps read the
    /// latest words: a waiter queued after them saw the waker's condition.
    pub fn wake_up(&self) {
        let mut words = self.words.swap(0, Ordering::SeqCst);
        while words != 0 {
            let word = words.trailing_zeros() as usize;
            words &= words - 1;
            let mut mask = self.waiters[word].swap(0, Ordering::SeqCst);
            while mask != 0 {
                S::wake_up_slot(word * 64 + mask.trailing_zeros() as usize);
                mask &= mask - 1;
            }
        }
    }

    /// wq_has_sleeper(): whether a thread is queued. The fence orders the
    /// caller's change of the condition before the look, against a
    /// waiter's fence in `prepare_to_wait`: either the waiter sees the
    /// change or this sees the waiter.
    pub fn has_sleepers(&self) -> bool {
        fence(Ordering::SeqCst);
        let mut words = self.words.load(Ordering::SeqCst);
        while words != 0 {
            let word = words.trailing_zeros() as usize;
            if self.waiters[word].load(Ordering::SeqCst) != 0 {
                return true;
            }
            words &= words - 1;
        }
        false
    }
}

impl<S: Scheduler, const WORDS: usize> Default for WaitQueue<S, WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;
    use std::{thread, vec::Vec};

    use super::WaitQueue;
    use crate::testsched::{TestScheduler, Threads};

    type Queue = WaitQueue<TestScheduler, 2>;

    #[test]
    fn queued_until_finished() {
        let threads = Threads::new(&[70]);
        threads.enter(70);
        let queue = Queue::new();
        assert!(!queue.has_sleepers());
        queue.prepare_to_wait("test").unwrap();
        assert!(queue.has_sleepers());
        queue.finish_wait();
        // The word's bit is stale now; the look finds no sleeper behind it.
        assert!(!queue.has_sleepers());
    }

    #[test]
    fn wake_up_takes_every_sleeper() {
        let threads = Threads::new(&[3, 64, 127]);
        threads.enter(3);
        let queue = Arc::new(Queue::new());
        for slot in [64, 127] {
            let (threads, queue) = (Arc::clone(&threads), Arc::clone(&queue));
            thread::spawn(move || {
                threads.enter(slot);
                queue.prepare_to_wait("test").unwrap();
            })
            .join()
            .unwrap();
        }
        queue.wake_up();
        assert!(threads.runnable(64) && threads.runnable(127));
        assert!(!queue.has_sleepers());
    }

    /// Waiters in both words wait for a counter to reach each value in turn
    /// while a waker counts up, `ROUNDS` times: none is left asleep.
    #[test]
    fn stress_no_lost_wake_up() {
        const ROUNDS: u64 = 2000;
        let slots = [1, 2, 65, 100];
        let threads = Threads::new(&[0, 1, 2, 65, 100]);
        let queue = Arc::new(Queue::new());
        let count = Arc::new(AtomicU64::new(0));
        let (done, finished) = mpsc::channel();
        let waiters: Vec<_> = slots
            .iter()
            .map(|&slot| {
                let (threads, queue, count, done) = (
                    Arc::clone(&threads),
                    Arc::clone(&queue),
                    Arc::clone(&count),
                    done.clone(),
                );
                thread::spawn(move || {
                    threads.enter(slot);
                    for round in 1..=ROUNDS {
                        queue
                            .wait_event("test", || count.load(Ordering::Acquire) >= round)
                            .unwrap();
                    }
                    done.send(slot).unwrap();
                })
            })
            .collect();
        threads.enter(0);
        for _ in 0..ROUNDS {
            count.fetch_add(1, Ordering::Release);
            if queue.has_sleepers() {
                queue.wake_up();
            }
        }
        // Only a hang is caught by the deadline.
        for _ in slots {
            finished
                .recv_timeout(Duration::from_secs(60))
                .expect("a waiter was left asleep");
        }
        for waiter in waiters {
            waiter.join().unwrap();
        }
    }
}

/// Loom models: every interleaving of a waiter and a waker, and every
/// value each load may read.
#[cfg(all(test, loom))]
mod models {
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::thread;
    use std::sync::Arc;

    use super::WaitQueue;
    use crate::testsched::{TestScheduler, Threads};

    type Queue = WaitQueue<TestScheduler, 2>;

    /// A queue, its condition, and a waiter in slot 70 that runs
    /// wait_event() until it reads the condition true with `order`. The
    /// caller is slot 0.
    fn queue_with_waiter(
        order: Ordering,
    ) -> (
        Arc<Threads>,
        Arc<Queue>,
        Arc<AtomicBool>,
        thread::JoinHandle<()>,
    ) {
        let threads = Threads::new(&[0, 70]);
        let queue = Arc::new(Queue::new());
        let ready = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (threads, queue, ready) =
                (Arc::clone(&threads), Arc::clone(&queue), Arc::clone(&ready));
            thread::spawn(move || {
                threads.enter(70);
                queue.wait_event("test", || ready.load(order)).unwrap();
            })
        };
        (threads, queue, ready, waiter)
    }

    /// wait_event() against a waker that makes the condition true, then
    /// wakes the queue: the waiter returns (a lost wake-up leaves it
    /// parked for good, which loom reports as a deadlock).
    #[test]
    fn wait_event_is_woken() {
        loom::model(|| {
            let (threads, queue, ready, waiter) = queue_with_waiter(Ordering::Acquire);
            threads.enter(0);
            ready.store(true, Ordering::Release);
            queue.wake_up();
            waiter.join().unwrap();
        });
    }

    /// The same with a waker that wakes only when it finds a sleeper
    /// (wq_has_sleeper(), as mutex_unlock() and kunmap() do).
    #[test]
    fn has_sleepers_then_wake_up_is_not_lost() {
        loom::model(|| {
            let (threads, queue, ready, waiter) = queue_with_waiter(Ordering::Relaxed);
            threads.enter(0);
            ready.store(true, Ordering::Relaxed);
            if queue.has_sleepers() {
                queue.wake_up();
            }
            waiter.join().unwrap();
        });
    }

    /// A waiter queued while a waker empties the queue: once both are
    /// done, it was woken or the queue still shows it.
    #[test]
    fn queued_sleeper_is_woken_or_seen() {
        loom::model(|| {
            let threads = Threads::new(&[0, 70]);
            let queue = Arc::new(Queue::new());
            let waiter = {
                let (threads, queue) = (Arc::clone(&threads), Arc::clone(&queue));
                thread::spawn(move || {
                    threads.enter(70);
                    queue.prepare_to_wait("test").unwrap();
                })
            };
            threads.enter(0);
            queue.wake_up();
            waiter.join().unwrap();
            assert!(threads.runnable(70) || queue.has_sleepers());
        });
    }
}
