//! A sleeping lock (struct mutex, or an rw_semaphore taken for write):
//! a waiter sleeps on the lock's wait queue instead of spinning, so it
//! may be held across work that takes a while and sends IPIs (a TLB
//! shootdown) while the CPUs of the waiters keep serving interrupts.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};

use crate::primitives::{spin_loop, AtomicBool, Ordering};
use crate::wait::{Scheduler, WaitQueue};

/// The data first, so a `#[repr(C)]` value that starts with it starts
/// with the data (the mm_struct the host reads).
#[repr(C)]
pub struct SleepLock<T, S, const WORDS: usize> {
    data: UnsafeCell<T>,
    locked: AtomicBool,
    waiters: WaitQueue<S, WORDS>,
    wchan: &'static str,
}

// SAFETY: the data is reached only through a guard, and one guard exists
// at a time (the `locked` flag, taken by compare-exchange).
unsafe impl<T: Send, S, const WORDS: usize> Sync for SleepLock<T, S, WORDS> {}
// SAFETY: moving the lock moves the data, which may move (T: Send).
unsafe impl<T: Send, S, const WORDS: usize> Send for SleepLock<T, S, WORDS> {}

impl<T, S: Scheduler, const WORDS: usize> SleepLock<T, S, WORDS> {
    /// A lock whose sleepers sleep on `wchan`.
    #[cfg(not(all(test, loom)))]
    pub const fn new(data: T, wchan: &'static str) -> Self {
        SleepLock {
            data: UnsafeCell::new(data),
            locked: AtomicBool::new(false),
            waiters: WaitQueue::new(),
            wchan,
        }
    }

    #[cfg(all(test, loom))]
    pub fn new(data: T, wchan: &'static str) -> Self {
        SleepLock {
            data: UnsafeCell::new(data),
            locked: AtomicBool::new(false),
            waiters: WaitQueue::new(),
            wchan,
        }
    }

    fn try_lock(&self) -> bool {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// mutex_lock() / down_write(): sleeps until the lock is free. Where
    /// the caller cannot sleep (boot code, before the scheduler runs), it
    /// spins instead.
    pub fn lock(&self) -> SleepLockGuard<'_, T, S, WORDS> {
        while !self.try_lock() {
            // Queued and asleep before the second look: the holder's
            // unlock after it wakes this thread.
            if !S::can_sleep() || self.waiters.prepare_to_wait(self.wchan).is_err() {
                spin_loop();
                continue;
            }
            if self.try_lock() {
                self.waiters.finish_wait();
                break;
            }
            S::schedule();
            self.waiters.finish_wait();
        }
        SleepLockGuard { lock: self }
    }

    /// The data, through exclusive access to the lock itself.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

pub struct SleepLockGuard<'a, T, S: Scheduler, const WORDS: usize> {
    lock: &'a SleepLock<T, S, WORDS>,
}

impl<T, S: Scheduler, const WORDS: usize> Deref for SleepLockGuard<'_, T, S, WORDS> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard is the one holder of the lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T, S: Scheduler, const WORDS: usize> DerefMut for SleepLockGuard<'_, T, S, WORDS> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as `deref`, and `&mut self` makes the access exclusive.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T, S: Scheduler, const WORDS: usize> Drop for SleepLockGuard<'_, T, S, WORDS> {
    /// mutex_unlock(): frees the lock, then wakes its sleepers (each takes
    /// its turn at it). The look at the queue is ordered after the store
    /// (`has_sleepers`' fence): a waiter queues itself, then tries the
    /// lock, so either it sees the lock free or this sees it queued.
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
        if self.lock.waiters.has_sleepers() {
            self.lock.waiters.wake_up();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::{thread, vec::Vec};

    use super::SleepLock;
    use crate::testsched::{TestScheduler, Threads};

    /// Threads taking the lock in turn: one at a time inside, and every
    /// increment counted.
    #[test]
    fn stress_mutual_exclusion() {
        const THREADS: usize = 4;
        const ROUNDS: usize = 5000;
        let threads = Threads::new(&[0, 1, 2, 3]);
        let lock = Arc::new(SleepLock::<usize, TestScheduler, 1>::new(0, "test"));
        let inside = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..THREADS)
            .map(|slot| {
                let (threads, lock, inside) =
                    (Arc::clone(&threads), Arc::clone(&lock), Arc::clone(&inside));
                thread::spawn(move || {
                    threads.enter(slot);
                    for _ in 0..ROUNDS {
                        let mut count = lock.lock();
                        assert_eq!(inside.fetch_add(1, Ordering::Relaxed), 0);
                        *count += 1;
                        inside.fetch_sub(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(*lock.lock(), THREADS * ROUNDS);
    }
}

/// Loom models of threads contending for the lock.
#[cfg(all(test, loom))]
mod models {
    use loom::cell::UnsafeCell;
    use loom::thread;
    use std::sync::Arc;

    use super::SleepLock;
    use crate::testsched::{TestScheduler, Threads};

    /// Each thread adds one under the lock. Loom's cell reports two
    /// accesses not ordered by the lock (no mutual exclusion); a lost
    /// wake-up leaves a waiter parked for good (a deadlock); the count
    /// shows a lost update.
    fn contend(lockers: usize) {
        let threads = Threads::new(&[0, 1, 2]);
        let lock = Arc::new(SleepLock::<UnsafeCell<usize>, TestScheduler, 1>::new(
            UnsafeCell::new(0),
            "test",
        ));
        let workers: std::vec::Vec<_> = (1..lockers)
            .map(|slot| {
                let (threads, lock) = (Arc::clone(&threads), Arc::clone(&lock));
                thread::spawn(move || {
                    threads.enter(slot);
                    // SAFETY: the guard is held, so no other thread has the cell.
                    lock.lock().with_mut(|count| unsafe { *count += 1 });
                })
            })
            .collect();
        threads.enter(0);
        // SAFETY: as above.
        lock.lock().with_mut(|count| unsafe { *count += 1 });
        for worker in workers {
            worker.join().unwrap();
        }
        // SAFETY: as above.
        let count = lock.lock().with(|count| unsafe { *count });
        assert_eq!(count, lockers);
    }

    #[test]
    fn two_lockers() {
        loom::model(|| contend(2));
    }

    #[test]
    fn three_lockers() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        builder.check(|| contend(3));
    }
}
