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
    MAX_THREADS,
};
use crate::time::jiffies;

const _: () = assert!(MAX_THREADS <= 64);

/// Each slot's expiry, valid while its bit in `ARMED` is set.
static EXPIRES: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];
/// The slots whose timers are armed, one bit each.
static ARMED: AtomicU64 = AtomicU64::new(0);

/// Whether any thread sleeps on a timer.
pub fn armed() -> bool {
    ARMED.load(Ordering::SeqCst) != 0
}

/// Sleeps until jiffies reaches `expires` (schedule_timeout() in a loop,
/// as do_nanosleep() runs it), on the wait channel `wchan`. Err, without
/// sleeping, where the caller may not sleep.
#[track_caller]
pub fn sleep_until(expires: u64, wchan: &'static str) -> Result<(), super::AtomicContext> {
    let slot = current_slot();
    let bit = 1 << slot;
    while jiffies() < expires {
        might_sleep()?;
        // Asleep, then armed: the tick that finds the timer finds a sleeper.
        set_current_sleeping(wchan);
        EXPIRES[slot].store(expires, Ordering::SeqCst);
        ARMED.fetch_or(bit, Ordering::SeqCst);
        if jiffies() < expires {
            schedule();
        }
        ARMED.fetch_and(!bit, Ordering::SeqCst);
        set_current_running();
    }
    Ok(())
}

/// From the tick that advanced jiffies to `now`: wakes every thread whose
/// timer expired. A timer is disarmed by whoever clears its bit first, so
/// a thread is woken only while it still sleeps on it.
pub fn run_timers(now: u64) {
    let mut armed = ARMED.load(Ordering::SeqCst);
    while armed != 0 {
        let slot = armed.trailing_zeros() as usize;
        let bit = 1 << slot;
        armed &= !bit;
        if EXPIRES[slot].load(Ordering::SeqCst) <= now
            && ARMED.fetch_and(!bit, Ordering::SeqCst) & bit != 0
        {
            wake_up_slot(slot);
        }
    }
}
