//! Wait queues (wait_queue_head_t): threads sleep on one until a waker
//! wakes them. A queue is a bitmap of thread slots, so adding and waking
//! need no allocation and no lock of their own.

use core::sync::atomic::{AtomicU64, Ordering};

use super::{
    current_slot, might_sleep, schedule, set_current_running, set_current_sleeping, wake_up_slot,
    AtomicContext, SLOT_WORDS,
};

/// Why a wait did not sleep.
pub type SleepError = AtomicContext;

pub struct WaitQueue {
    waiters: [AtomicU64; SLOT_WORDS],
    /// Which words of `waiters` may have a bit set (a waker clears what it
    /// found; a stale bit only costs a look).
    words: AtomicU64,
}

/// Where the bitmap lies in a queue (`SLOT_WORDS` u64s, slot 0 the lowest
/// bit of the first), for the host's inspector.
pub const WAITERS_OFFSET: usize = core::mem::offset_of!(WaitQueue, waiters);

/// The word and bit of the running thread's slot.
fn my_bit() -> (usize, u64) {
    let slot = current_slot();
    (slot / 64, 1 << (slot % 64))
}

impl WaitQueue {
    pub const fn new() -> Self {
        WaitQueue {
            waiters: [const { AtomicU64::new(0) }; SLOT_WORDS],
            words: AtomicU64::new(0),
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
        let (word, bit) = my_bit();
        self.waiters[word].fetch_or(bit, Ordering::SeqCst);
        self.words.fetch_or(1 << word, Ordering::SeqCst);
        Ok(())
    }

    /// finish_wait(): the running thread is awake and off the queue.
    pub fn finish_wait(&self) {
        set_current_running();
        let (word, bit) = my_bit();
        self.waiters[word].fetch_and(!bit, Ordering::SeqCst);
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
        let mut words = self.words.swap(0, Ordering::SeqCst);
        while words != 0 {
            let word = words.trailing_zeros() as usize;
            words &= words - 1;
            let mut mask = self.waiters[word].swap(0, Ordering::SeqCst);
            while mask != 0 {
                wake_up_slot(word * 64 + mask.trailing_zeros() as usize);
                mask &= mask - 1;
            }
        }
    }

    /// waitqueue_active().
    pub fn has_sleepers(&self) -> bool {
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
