//! A sleeping lock (struct mutex, or an rw_semaphore taken for write):
//! a waiter sleeps on the lock's wait queue instead of spinning, so it
//! may be held across work that takes a while and sends IPIs (a TLB
//! shootdown) while the CPUs of the waiters keep serving interrupts.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::sched::{self, wait::WaitQueue};

/// The data first, so a `#[repr(C)]` value that starts with it starts
/// with the data (the mm_struct the host reads).
#[repr(C)]
pub struct SleepLock<T> {
    data: UnsafeCell<T>,
    locked: AtomicBool,
    waiters: WaitQueue,
    wchan: &'static str,
}

// SAFETY: the data is reached only through a guard, and one guard exists
// at a time (the `locked` flag, taken by compare-exchange).
unsafe impl<T: Send> Sync for SleepLock<T> {}
// SAFETY: moving the lock moves the data, which may move (T: Send).
unsafe impl<T: Send> Send for SleepLock<T> {}

impl<T> SleepLock<T> {
    pub const fn new(data: T, wchan: &'static str) -> Self {
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
    pub fn lock(&self) -> SleepLockGuard<'_, T> {
        while !self.try_lock() {
            // Queued and asleep before the second look: the holder's
            // unlock after it wakes this thread.
            if sched::can_sleep_here().is_err() || self.waiters.prepare_to_wait(self.wchan).is_err()
            {
                core::hint::spin_loop();
                continue;
            }
            if self.try_lock() {
                self.waiters.finish_wait();
                break;
            }
            sched::schedule();
            self.waiters.finish_wait();
        }
        SleepLockGuard { lock: self }
    }

    /// The data, through exclusive access to the lock itself.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

pub struct SleepLockGuard<'a, T> {
    lock: &'a SleepLock<T>,
}

impl<T> Deref for SleepLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard is the one holder of the lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for SleepLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as `deref`, and `&mut self` makes the access exclusive.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for SleepLockGuard<'_, T> {
    /// mutex_unlock(): frees the lock, then wakes its sleepers (each takes
    /// its turn at it). The store is SeqCst, so it is not ordered after
    /// the look at the queue: a waiter queues itself, then tries the lock,
    /// so either it sees the lock free or this sees it queued.
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::SeqCst);
        if self.lock.waiters.has_sleepers() {
            self.lock.waiters.wake_up();
        }
    }
}
