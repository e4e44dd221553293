//! Sleeping for a while: each thread slot has one timer, its expiry in
//! jiffies, as each sleeping task has its own hrtimer_sleeper in
//! do_nanosleep(). The tick that advances jiffies wakes the threads whose
//! timers expired (the timer softirq's run_timer_softirq() waking
//! process_timeout()); no one spins.
//!
//! The protocol is a wait queue's, with jiffies for the condition: a
//! sleeper sets itself asleep, arms its timer, then looks at jiffies once
//! more before it gives its CPU up; the tick advances jiffies, then looks
//! for expired timers. Either the tick finds the timer armed, or the
//! sleeper sees the new jiffies.

use core::marker::PhantomData;

use crate::primitives::{fence, AtomicU64, Ordering};
use crate::wait::Scheduler;

/// The timers of `SLOTS` thread slots (`WORDS` words of bits), with
/// scheduler `S`.
pub struct Timers<S, const SLOTS: usize, const WORDS: usize> {
    /// Each slot's expiry, valid while its bit in `armed` is set.
    expires: [AtomicU64; SLOTS],
    /// The slots whose timers are armed, one bit each.
    armed: [AtomicU64; WORDS],
    /// Which words of `armed` may have a bit set (whoever disarms the last
    /// timer of a word may leave its bit: a stale bit only costs a look),
    /// as a wait queue keeps them.
    armed_words: AtomicU64,
    scheduler: PhantomData<fn() -> S>,
}

impl<S: Scheduler, const SLOTS: usize, const WORDS: usize> Timers<S, SLOTS, WORDS> {
    /// A bit of `armed` for each slot, and of `armed_words` for each word.
    const SLOTS_FIT: () = assert!(SLOTS == WORDS * 64 && WORDS > 0 && WORDS <= 64);

    #[cfg(not(all(test, loom)))]
    pub const fn new() -> Self {
        let () = Self::SLOTS_FIT;
        Timers {
            expires: [const { AtomicU64::new(0) }; SLOTS],
            armed: [const { AtomicU64::new(0) }; WORDS],
            armed_words: AtomicU64::new(0),
            scheduler: PhantomData,
        }
    }

    #[cfg(all(test, loom))]
    pub fn new() -> Self {
        let () = Self::SLOTS_FIT;
        Timers {
            expires: core::array::from_fn(|_| AtomicU64::new(0)),
            armed: core::array::from_fn(|_| AtomicU64::new(0)),
            armed_words: AtomicU64::new(0),
            scheduler: PhantomData,
        }
    }

    /// The words of `armed` that may have a bit set, lowest first.
    fn armed_words(&self) -> impl Iterator<Item = usize> {
        let mut words = self.armed_words.load(Ordering::SeqCst);
        core::iter::from_fn(move || {
            (words != 0).then(|| {
                let word = words.trailing_zeros() as usize;
                words &= words - 1;
                word
            })
        })
    }

    /// Whether any thread sleeps on a timer.
    pub fn armed(&self) -> bool {
        self.armed_words()
            .any(|word| self.armed[word].load(Ordering::SeqCst) != 0)
    }

    /// Sleeps until `jiffies()` reaches `expires` (schedule_timeout() in a
    /// loop, as do_nanosleep() runs it), on the wait channel `wchan`, or
    /// until `interrupted()` (a fatal signal pending: a killable sleep,
    /// whose waker wakes the thread itself). Err, without sleeping, where
    /// the caller may not sleep.
    #[track_caller]
    pub fn sleep_until(
        &self,
        expires: u64,
        wchan: &'static str,
        jiffies: impl Fn() -> u64,
        interrupted: impl Fn() -> bool,
    ) -> Result<(), S::NoSleep> {
        let slot = S::current_slot();
        let (word, bit) = (slot / 64, 1 << (slot % 64));
        while jiffies() < expires && !interrupted() {
            S::might_sleep()?;
            // Asleep, then armed: the tick that finds the timer finds a
            // sleeper. The bit before its word's, as a wait queue's.
            S::set_current_sleeping(wchan);
            self.expires[slot].store(expires, Ordering::SeqCst);
            self.armed[word].fetch_or(bit, Ordering::SeqCst);
            self.armed_words.fetch_or(1 << word, Ordering::SeqCst);
            // set_current_state()'s smp_mb(): the look at jiffies is
            // ordered after the arming, against the tick's fence in
            // `run_timers`.
            fence(Ordering::SeqCst);
            // A kill since the loop's look found it running, not asleep.
            if jiffies() < expires && !interrupted() {
                S::schedule();
            }
            self.armed[word].fetch_and(!bit, Ordering::SeqCst);
            S::set_current_running();
        }
        Ok(())
    }

    /// From the tick that advanced jiffies to `now`: wakes every thread
    /// whose timer expired. A timer is disarmed by whoever clears its bit
    /// first, so a thread is woken only while it still sleeps on it.
    pub fn run_timers(&self, now: u64) {
        // The new jiffies before the look at the timers: a sleeper this
        // misses sees them.
        fence(Ordering::SeqCst);
        for word in self.armed_words() {
            let mut armed = self.armed[word].load(Ordering::SeqCst);
            if armed == 0 {
                self.armed_words.fetch_and(!(1 << word), Ordering::SeqCst);
                // A timer armed since the load sets the word's bit again.
                armed = self.armed[word].load(Ordering::SeqCst);
                if armed != 0 {
                    self.armed_words.fetch_or(1 << word, Ordering::SeqCst);
                }
            }
            while armed != 0 {
                let bit = armed & armed.wrapping_neg();
                armed &= !bit;
                let slot = word * 64 + bit.trailing_zeros() as usize;
                if self.expires[slot].load(Ordering::SeqCst) <= now
                    && self.armed[word].fetch_and(!bit, Ordering::SeqCst) & bit != 0
                {
                    S::wake_up_slot(slot);
                }
            }
        }
    }
}

impl<S: Scheduler, const SLOTS: usize, const WORDS: usize> Default for Timers<S, SLOTS, WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::{thread, vec::Vec};

    use super::Timers;
    use crate::testsched::{TestScheduler, Threads};

    type TestTimers = Timers<TestScheduler, 128, 2>;

    #[test]
    fn armed_while_asleep_only() {
        let threads = Threads::new(&[0, 100]);
        let timers = Arc::new(TestTimers::new());
        let jiffies = Arc::new(AtomicU64::new(0));
        assert!(!timers.armed());
        let sleeper = {
            let (threads, timers, jiffies) = (
                Arc::clone(&threads),
                Arc::clone(&timers),
                Arc::clone(&jiffies),
            );
            thread::spawn(move || {
                threads.enter(100);
                timers
                    .sleep_until(1, "test", || jiffies.load(Ordering::SeqCst), || false)
                    .unwrap();
            })
        };
        threads.enter(0);
        // Polls for the arming; a sleeper that never arms hangs the test.
        while !timers.armed() {
            thread::yield_now();
        }
        jiffies.store(1, Ordering::SeqCst);
        timers.run_timers(1);
        sleeper.join().unwrap();
        assert!(!timers.armed());
    }

    /// Sleepers in both words sleep for one tick after another while a
    /// ticker advances jiffies until they are done: each wakes every time.
    #[test]
    fn stress_every_sleeper_wakes() {
        const SLEEPS: u64 = 500;
        let slots = [1, 2, 64, 127];
        let threads = Threads::new(&[0, 1, 2, 64, 127]);
        let timers = Arc::new(TestTimers::new());
        let jiffies = Arc::new(AtomicU64::new(0));
        let sleepers: Vec<_> = slots
            .iter()
            .map(|&slot| {
                let (threads, timers, jiffies) = (
                    Arc::clone(&threads),
                    Arc::clone(&timers),
                    Arc::clone(&jiffies),
                );
                thread::spawn(move || {
                    threads.enter(slot);
                    let now = || jiffies.load(Ordering::SeqCst);
                    for _ in 0..SLEEPS {
                        let expires = now() + 1;
                        timers.sleep_until(expires, "test", now, || false).unwrap();
                        assert!(now() >= expires);
                    }
                })
            })
            .collect();
        let done = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (threads, timers, jiffies, done) = (
                Arc::clone(&threads),
                Arc::clone(&timers),
                Arc::clone(&jiffies),
                Arc::clone(&done),
            );
            thread::spawn(move || {
                threads.enter(0);
                while !done.load(Ordering::SeqCst) {
                    let now = jiffies.fetch_add(1, Ordering::SeqCst) + 1;
                    timers.run_timers(now);
                    thread::yield_now();
                }
            })
        };
        for sleeper in sleepers {
            sleeper.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        ticker.join().unwrap();
    }
}

/// Loom models of a sleeper and the tick.
#[cfg(all(test, loom))]
mod models {
    use loom::sync::atomic::{AtomicU64, Ordering};
    use loom::thread;
    use std::sync::Arc;

    use super::Timers;
    use crate::testsched::{TestScheduler, Threads};

    type TestTimers = Timers<TestScheduler, 64, 1>;

    /// A sleeper sleeps once for each expiry of `sleeps` while the tick
    /// advances jiffies to the last: each sleep ends (a timer the tick
    /// missed leaves its sleeper parked for good, a deadlock loom reports).
    fn sleep_against_ticks(sleeps: &'static [u64]) {
        let threads = Threads::new(&[0, 5]);
        let timers = Arc::new(TestTimers::new());
        let jiffies = Arc::new(AtomicU64::new(0));
        let sleeper = {
            let (threads, timers, jiffies) = (
                Arc::clone(&threads),
                Arc::clone(&timers),
                Arc::clone(&jiffies),
            );
            thread::spawn(move || {
                threads.enter(5);
                for &expires in sleeps {
                    timers
                        .sleep_until(expires, "test", || jiffies.load(Ordering::SeqCst), || false)
                        .unwrap();
                }
            })
        };
        threads.enter(0);
        for _ in 0..*sleeps.last().unwrap() {
            let now = jiffies.fetch_add(1, Ordering::SeqCst) + 1;
            timers.run_timers(now);
        }
        sleeper.join().unwrap();
    }

    #[test]
    fn expired_sleeper_is_woken() {
        loom::model(|| sleep_against_ticks(&[1]));
    }

    /// The second sleep arms while the second tick may find the word's
    /// bit stale and clear it: the third tick still finds the timer.
    #[test]
    fn rearmed_timer_is_found_by_a_later_tick() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| sleep_against_ticks(&[1, 3]));
    }
}
