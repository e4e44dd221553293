//! Sleeping for a while: each thread slot has one timer, its expiry in
//! jiffies, as each sleeping task has its own hrtimer_sleeper in
//! do_nanosleep(). The tick that advances jiffies wakes the threads whose
//! timers expired (the timer softirq's run_timer_softirq() waking
//! process_timeout()); no one spins.
//!
//! While a timer is armed, an idle CPU keeps its tick (tick_nohz_stop_tick()
//! stops it only until the next timer), so the time a sleeper waits for
//! keeps coming.

use core::sync::atomic::{AtomicU64, Ordering};

use super::{
    current_slot, might_sleep, schedule, set_current_running, set_current_sleeping, wake_up_slot,
    MAX_THREADS, SLOT_WORDS,
};
use crate::time::jiffies;

/// Each slot's expiry, valid while its bit in `ARMED` is set.
static EXPIRES: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];
/// The slots whose timers are armed, one bit each, and which words of it
/// may have a bit set (whoever disarms the last timer of a word may leave
/// its bit: a stale bit only costs a look), as a wait queue keeps them.
static ARMED: [AtomicU64; SLOT_WORDS] = [const { AtomicU64::new(0) }; SLOT_WORDS];
static ARMED_WORDS: AtomicU64 = AtomicU64::new(0);

/// The words of `ARMED` that may have a bit set, lowest first.
fn armed_words() -> impl Iterator<Item = usize> {
    let mut words = ARMED_WORDS.load(Ordering::SeqCst);
    core::iter::from_fn(move || {
        (words != 0).then(|| {
            let word = words.trailing_zeros() as usize;
            words &= words - 1;
            word
        })
    })
}

/// Whether any thread sleeps on a timer.
pub fn armed() -> bool {
    armed_words().any(|word| ARMED[word].load(Ordering::SeqCst) != 0)
}

/// Sleeps until jiffies reaches `expires` (schedule_timeout() in a loop,
/// as do_nanosleep() runs it), on the wait channel `wchan`, or until a
/// fatal signal is pending (a killable sleep). Err, without sleeping,
/// where the caller may not sleep.
#[track_caller]
pub fn sleep_until(expires: u64, wchan: &'static str) -> Result<(), super::AtomicContext> {
    let slot = current_slot();
    let (word, bit) = (slot / 64, 1 << (slot % 64));
    while jiffies() < expires && !super::fatal_signal_pending() {
        might_sleep()?;
        // Asleep, then armed: the tick that finds the timer finds a sleeper.
        set_current_sleeping(wchan);
        EXPIRES[slot].store(expires, Ordering::SeqCst);
        ARMED[word].fetch_or(bit, Ordering::SeqCst);
        ARMED_WORDS.fetch_or(1 << word, Ordering::SeqCst);
        // A kill since the loop's look found it running, not asleep.
        if jiffies() < expires && !super::fatal_signal_pending() {
            schedule();
        }
        ARMED[word].fetch_and(!bit, Ordering::SeqCst);
        set_current_running();
    }
    Ok(())
}

/// From the tick that advanced jiffies to `now`: wakes every thread whose
/// timer expired. A timer is disarmed by whoever clears its bit first, so
/// a thread is woken only while it still sleeps on it.
pub fn run_timers(now: u64) {
    for word in armed_words() {
        let mut armed = ARMED[word].load(Ordering::SeqCst);
        if armed == 0 {
            ARMED_WORDS.fetch_and(!(1 << word), Ordering::SeqCst);
            // A timer armed since the load sets the word's bit again.
            armed = ARMED[word].load(Ordering::SeqCst);
            if armed != 0 {
                ARMED_WORDS.fetch_or(1 << word, Ordering::SeqCst);
            }
        }
        while armed != 0 {
            let bit = armed & armed.wrapping_neg();
            armed &= !bit;
            let slot = word * 64 + bit.trailing_zeros() as usize;
            if EXPIRES[slot].load(Ordering::SeqCst) <= now
                && ARMED[word].fetch_and(!bit, Ordering::SeqCst) & bit != 0
            {
                wake_up_slot(slot);
            }
        }
    }
}
