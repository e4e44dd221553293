//! Wait queues (wait_queue_head_t): threads sleep on one until a waker
//! wakes them. A queue is a mask of thread slots (MAX_THREADS is 64), so
//! adding and waking need no allocation and no lock of their own.

use core::sync::atomic::{AtomicU64, Ordering};

use super::{
    current_slot, might_sleep, schedule, set_current_running, set_current_sleeping, wake_up_slot,
    AtomicContext, MAX_THREADS,
};

const _: () = assert!(MAX_THREADS <= 64);

/// Why a wait did not sleep.
pub type SleepError = AtomicContext;

pub struct WaitQueue {
    waiters: AtomicU64,
}

/// Where the mask lies in a queue, for the host's inspector.
pub const WAITERS_OFFSET: usize = core::mem::offset_of!(WaitQueue, waiters);

impl WaitQueue {
    pub const fn new() -> Self {
        WaitQueue {
            waiters: AtomicU64::new(0),
        }
    }

    /// prepare_to_wait(): queues the running thread and sets it asleep on
    /// `wchan`. A wake-up from here on makes it runnable again, so the
    /// caller may check its condition (or drop the lock the waker takes)
    /// and then `schedule()` without missing it.
    #[track_caller]
    pub fn prepare_to_wait(&self, wchan: &'static str) -> Result<(), SleepError> {
        might_sleep()?;
        // Asleep before queued: a waker that finds the bit finds a sleeper.
        set_current_sleeping(wchan);
        self.waiters.fetch_or(1 << current_slot(), Ordering::SeqCst);
        Ok(())
    }

    /// finish_wait(): the running thread is awake and off the queue.
    pub fn finish_wait(&self) {
        set_current_running();
        self.waiters
            .fetch_and(!(1 << current_slot()), Ordering::SeqCst);
    }

    /// wait_event(): sleeps until `condition` holds. The waker makes the
    /// condition true before it calls `wake_up`.
    #[track_caller]
    pub fn wait_event(
        &self,
        wchan: &'static str,
        mut condition: impl FnMut() -> bool,
    ) -> Result<(), SleepError> {
        while !condition() {
            self.prepare_to_wait(wchan)?;
            if !condition() {
                schedule();
            }
            self.finish_wait();
        }
        Ok(())
    }

    /// wake_up_all(): every sleeper becomes runnable.
    pub fn wake_up(&self) {
        let mask = self.waiters.swap(0, Ordering::SeqCst);
        for slot in (0..MAX_THREADS).filter(|s| mask & (1 << s) != 0) {
            wake_up_slot(slot);
        }
    }

    /// waitqueue_active().
    pub fn has_sleepers(&self) -> bool {
        self.waiters.load(Ordering::SeqCst) != 0
    }
}
