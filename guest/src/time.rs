//! The tick: each CPU's local APIC timer interrupts HZ times a second
//! (Linux's periodic tick, tick_handle_periodic()). The VMM reports the
//! timer's clock and every CPU programs the same period from it. An idle CPU stops its tick until
//! something wakes it (NO_HZ_IDLE).
//!
//! One CPU's tick at a time also advances jiffies and runs the timers
//! (tick_do_timer_cpu): the first CPU that ticks while no CPU keeps the
//! time takes the job, and gives it up when it stops its tick. While every
//! CPU idles with no timer armed, no tick runs and jiffies stands still
//! (Linux's tick_nohz_update_jiffies() catches up from a clocksource,
//! which this kernel does not have: its clock is the tick).
//!
//! Each tick also counts itself in a page of high memory the CPU owns,
//! through kmap_atomic: the case kmap_atomic exists for, a mapping taken
//! and dropped in interrupt context.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use abi::boot::MAX_CPUS;

use mm::gfp::Gfp;

use crate::arch::apic;
use crate::arch::mem::Frames;
use crate::arch::percpu::{smp_processor_id, CpuId, PerCpu};
use crate::mm::alloc_pages;
use crate::mm::events::{count, mod_stat, EVENTS, VM_STAT};
use crate::mm::highmem::with_kmap_atomic;

/// Ticks per second (CONFIG_HZ_100): every tick costs emulated kernel
/// instructions on this host, so the slowest rate Linux offers.
pub const HZ: u64 = 100;

/// Timer counts (at the APIC_TDR_DIV_16 rate) between two ticks.
static PERIOD: AtomicU32 = AtomicU32::new(0);

/// jiffies: ticks since boot, of the CPU keeping the time.
static JIFFIES: AtomicU64 = AtomicU64::new(0);

/// tick_do_timer_cpu: the CPU whose tick advances jiffies, or `NO_CPU`.
static DO_TIMER_CPU: AtomicU32 = AtomicU32::new(NO_CPU);
const NO_CPU: u32 = u32::MAX;

/// Ticks each CPU has taken.
static CPU_TICKS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Holders of `with_tick_page_paused`: while any, no tick touches its page.
static TICK_PAGE_PAUSED: AtomicU32 = AtomicU32::new(0);

/// Each CPU's tick page (GFP_HIGHUSER: high memory when there is any),
/// whose first word counts the ticks that found it.
static TICK_PAGE: PerCpu<Option<Frames>> = PerCpu::new([const { None }; MAX_CPUS]);

/// The boot info's APIC timer clock, in Hz, gives no usable tick period.
#[derive(Debug)]
pub struct BadTimerClock {
    pub hz: u64,
}

/// setup_boot_APIC_clock(): the tick's period from the timer clock the
/// VMM reports (as Hyper-V and VMware guests are told lapic_timer_period,
/// so calibrate_APIC_clock() has nothing to measure; timing the timer
/// against the VMM's millisecond clock took 40 ms of exits and was off by
/// up to 20% on a loaded host), then the boot CPU's tick. Interrupts stay
/// off until the caller enables them.
pub fn init(apic_timer_hz: u64) -> Result<(), BadTimerClock> {
    let period = u32::try_from(apic_timer_hz / apic::TIMER_DIVISOR / HZ)
        .ok()
        .filter(|&p| p > 0)
        .ok_or(BadTimerClock { hz: apic_timer_hz })?;
    PERIOD.store(period, Ordering::Relaxed);
    start_tick();
    Ok(())
}

/// Starts this CPU's periodic tick with the boot CPU's period, with a tick
/// page if one can be had (the tick runs without one otherwise).
pub fn start_tick() {
    if let Ok(page) = alloc_pages(Gfp::HIGHUSER | Gfp::ZERO, 0) {
        TICK_PAGE.with(|slot| *slot = Some(page));
        mod_stat(&VM_STAT.percpu_pages, 1);
    }
    apic::timer_start_periodic(PERIOD.load(Ordering::Relaxed));
}

/// tick_nohz_idle_enter(): an idle CPU stops its tick (CONFIG_NO_HZ_IDLE),
/// so it sleeps until an IPI instead of waking HZ times a second; but not
/// while a timer is armed, whose expiry only a tick can notice. Says
/// whether the tick stopped.
pub fn nohz_idle_enter() -> bool {
    if crate::sched::timer::armed() {
        return false;
    }
    stop_tick();
    true
}

/// lapic_shutdown()'s part for the tick: this CPU's timer stops for good.
/// A CPU that stops ticking stops keeping the time (tick_nohz_stop_tick()).
pub fn stop_tick() {
    apic::timer_stop();
    let me = smp_processor_id().index() as u32;
    let _ = DO_TIMER_CPU.compare_exchange(me, NO_CPU, Ordering::SeqCst, Ordering::SeqCst);
}

/// tick_nohz_idle_exit(): the CPU has work again; the tick restarts.
pub fn nohz_idle_exit() {
    apic::timer_start_periodic(PERIOD.load(Ordering::Relaxed));
}

/// The timer interrupt (tick_handle_periodic()).
pub fn tick() {
    let me = smp_processor_id().index();
    CPU_TICKS[me].fetch_add(1, Ordering::Relaxed);
    count(&EVENTS.timer_ticks, 1);
    // tick_sched_do_timer(): take the time keeping if no CPU has it.
    let cpu = me as u32;
    let keeper = DO_TIMER_CPU
        .compare_exchange(NO_CPU, cpu, Ordering::SeqCst, Ordering::SeqCst)
        .unwrap_or_else(|holder| holder);
    if keeper == NO_CPU || keeper == cpu {
        let now = JIFFIES.fetch_add(1, Ordering::SeqCst) + 1;
        crate::sched::timer::run_timers(now);
    }
    if TICK_PAGE_PAUSED.load(Ordering::Relaxed) == 0 {
        TICK_PAGE.with(|page| {
            if let Some(frames) = page {
                let _ = with_kmap_atomic(frames, 0, |p| p.write_u64(0, p.read_u64(0) + 1));
            }
        });
    }
    crate::sched::tick();
}

/// jiffies.
pub fn jiffies() -> u64 {
    JIFFIES.load(Ordering::SeqCst)
}

/// Jiffies that cover at least `ns` nanoseconds, rounded up
/// (nsecs_to_jiffies64() rounding up, as timespec64_to_jiffies() does).
pub const fn ns_to_jiffies(ns: u64) -> u64 {
    ns.div_ceil(NSEC_PER_JIFFY)
}

/// Nanoseconds per tick (TICK_NSEC).
pub const NSEC_PER_JIFFY: u64 = 1_000_000_000 / HZ;

/// Ticks `cpu` has taken.
pub fn cpu_ticks(cpu: CpuId) -> u64 {
    CPU_TICKS[cpu.index()].load(Ordering::Relaxed)
}

/// Runs `f` while no CPU's tick maps its page: the page-table writes and
/// TLB flushes the counters then show are `f`'s alone (the ticks still
/// count). The tick pages lag behind CPU_TICKS afterwards.
pub fn with_tick_page_paused<R>(f: impl FnOnce() -> R) -> R {
    TICK_PAGE_PAUSED.fetch_add(1, Ordering::SeqCst);
    let result = f();
    TICK_PAGE_PAUSED.fetch_sub(1, Ordering::SeqCst);
    result
}

/// What this CPU's tick page says, read with interrupts off.
#[derive(Clone, Copy, Debug)]
pub struct TickPage {
    /// Ticks counted in the page.
    pub counted: u64,
    /// Ticks counted in CPU_TICKS.
    pub ticks: u64,
    pub pfn: u64,
}

/// This CPU's tick page; None without one.
pub fn tick_page() -> Option<TickPage> {
    TICK_PAGE.with(|page| {
        let frames = page.as_ref()?;
        let counted = with_kmap_atomic(frames, 0, |p| p.read_u64(0)).ok()?;
        Some(TickPage {
            counted,
            ticks: cpu_ticks(smp_processor_id()),
            pfn: frames.pfn(),
        })
    })
}
