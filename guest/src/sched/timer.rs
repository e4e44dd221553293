//! Sleeping for a while: each thread slot has one timer, its expiry in
//! jiffies (ksync's protocol, over this kernel's scheduler). The tick that
//! advances jiffies wakes the threads whose timers expired; no one spins.
//!
//! While a timer is armed, an idle CPU keeps its tick (tick_nohz_stop_tick()
//! stops it only until the next timer), so the time a sleeper waits for
//! keeps coming.

use super::{fatal_signal_pending, AtomicContext, Sched, MAX_THREADS, SLOT_WORDS};
use crate::time::jiffies;

static TIMERS: ksync::Timers<Sched, MAX_THREADS, SLOT_WORDS> = ksync::Timers::new();

/// Whether any thread sleeps on a timer.
pub fn armed() -> bool {
    TIMERS.armed()
}

/// Sleeps until jiffies reaches `expires` on the wait channel `wchan`, or
/// until a fatal signal is pending (a killable sleep). Err, without
/// sleeping, where the caller may not sleep.
#[track_caller]
pub fn sleep_until(expires: u64, wchan: &'static str) -> Result<(), AtomicContext> {
    TIMERS.sleep_until(expires, wchan, jiffies, fatal_signal_pending)
}

/// From the tick that advanced jiffies to `now`: wakes every thread whose
/// timer expired.
pub fn run_timers(now: u64) {
    TIMERS.run_timers(now)
}
