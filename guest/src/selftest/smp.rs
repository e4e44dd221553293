//! Several CPUs: every CPU ticks and takes IPIs, and a kernel mapping
//! changed on one CPU is seen changed on every other (the shootdown).

use core::sync::atomic::{AtomicU64, Ordering};

use abi::boot::MAX_CPUS;
use abi::layout::PAGE_SIZE;
use spin::Mutex;

use super::{Failure, Suite, Test, TestResult};
use crate::arch::io::clock_ms;
use crate::arch::percpu::{smp_processor_id, CpuId};
use crate::mm::events::EVENTS;
use crate::mm::layout;
use crate::mm::vmalloc::{purge, vfree, vmalloc, Vmalloc, VmallocError};
use crate::smp::{call_function_many, cpus_of, online_mask};
use crate::{sched, time};

pub const SUITE: Suite = Suite {
    name: "smp",
    tick_page: true,
    tests: &[
        Test {
            name: "every busy CPU takes timer ticks",
            run: every_cpu_ticks,
        },
        Test {
            name: "each tick counts itself in a highmem page through kmap_atomic",
            run: tick_counts_through_kmap_atomic,
        },
        Test {
            name: "a function call reaches every other CPU by IPI",
            run: call_reaches_every_cpu,
        },
        Test {
            name: "a vmap purge shoots the old translation down on every CPU",
            run: purge_shoots_down_stale_translations,
        },
    ],
};

/// How long a test waits for another CPU before calling it hung.
const HANG_MS: u32 = 10_000;

fn other_cpus() -> u64 {
    online_mask() & !(1 << smp_processor_id().index())
}

/// The tick count each pinned spinner waits to see pass.
static TICKS_BEFORE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Keeps its CPU busy (so its tick runs: idle CPUs stop theirs) until the
/// CPU has taken a tick, or the hang deadline passes.
fn spin_until_tick(cpu: u64) {
    let id = CpuId::new(cpu as usize).expect("spawned for an online CPU");
    let start = clock_ms();
    while time::cpu_ticks(id) == TICKS_BEFORE[id.index()].load(Ordering::Relaxed)
        && clock_ms().wrapping_sub(start) < HANG_MS
    {
        sched::cond_resched();
        core::hint::spin_loop();
    }
}

/// Makes every online CPU take at least one more tick.
fn tick_everywhere() -> Result<(), Failure> {
    let mut tids = [None; MAX_CPUS];
    for cpu in cpus_of(online_mask()) {
        let id = CpuId::new(cpu).expect("an online CPU has a number");
        TICKS_BEFORE[cpu].store(time::cpu_ticks(id), Ordering::Relaxed);
        tids[cpu] = Some(
            sched::spawn("ticker", spin_until_tick, cpu as u64, 1 << cpu)
                .map_err(|e| Failure::new(format_args!("spawn: {e:?}")))?,
        );
    }
    for tid in tids.into_iter().flatten() {
        sched::join(tid).map_err(|e| Failure::new(format_args!("join: {e:?}")))?;
    }
    for cpu in cpus_of(online_mask()) {
        let id = CpuId::new(cpu).expect("an online CPU has a number");
        check!(
            time::cpu_ticks(id) > TICKS_BEFORE[cpu].load(Ordering::Relaxed),
            "CPU{cpu} took no tick in {HANG_MS} ms of work"
        );
    }
    Ok(())
}

fn every_cpu_ticks() -> TestResult {
    tick_everywhere()
}

/// Each CPU's tick page, as it read it.
static TICK_PAGES: [Mutex<Option<time::TickPage>>; MAX_CPUS] =
    [const { Mutex::new(None) }; MAX_CPUS];

fn read_tick_page(_: u64, _: u64) {
    *TICK_PAGES[smp_processor_id().index()].lock() = time::tick_page();
}

/// Every CPU's tick page as it reads it now.
fn tick_pages() -> [Option<time::TickPage>; MAX_CPUS] {
    read_tick_page(0, 0);
    call_function_many(u64::MAX, read_tick_page, (0, 0));
    core::array::from_fn(|cpu| *TICK_PAGES[cpu].lock())
}

fn tick_counts_through_kmap_atomic() -> TestResult {
    let before = tick_pages();
    tick_everywhere()?;
    let after = tick_pages();
    let l = layout();
    for cpu in cpus_of(online_mask()) {
        let (Some(before), Some(after)) = (before[cpu], after[cpu]) else {
            return Err(Failure::new(format_args!("CPU{cpu} has no tick page")));
        };
        let ticks = after.ticks - before.ticks;
        check!(ticks > 0, "CPU{cpu} has taken no tick");
        check_eq!(
            after.counted - before.counted,
            ticks,
            "CPU{cpu}'s ticks counted in its page"
        );
        if l.max_pfn > l.max_low_pfn {
            check!(
                after.pfn >= l.max_low_pfn,
                "CPU{cpu}'s tick page {:#x} is not in high memory",
                after.pfn
            );
        }
    }
    Ok(())
}

/// The CPUs that ran `record_cpu`.
static REACHED: AtomicU64 = AtomicU64::new(0);

fn record_cpu(_: u64, _: u64) {
    REACHED.fetch_or(1 << smp_processor_id().index(), Ordering::Relaxed);
}

fn call_reaches_every_cpu() -> TestResult {
    let others = other_cpus();
    if others == 0 {
        skip!("one CPU online");
    }
    REACHED.store(0, Ordering::Relaxed);
    let ipis = EVENTS.ipis_sent.load(Ordering::Relaxed);
    let ran = call_function_many(u64::MAX, record_cpu, (0, 0));
    check_eq!(ran, others, "CPUs called");
    check_eq!(
        REACHED.load(Ordering::Relaxed),
        others,
        "CPUs that ran the function"
    );
    check_eq!(
        EVENTS.ipis_sent.load(Ordering::Relaxed) - ipis,
        u64::from(others.count_ones()),
        "IPIs sent, one per CPU"
    );
    Ok(())
}

/// The area every CPU reads through.
static PROBE: Mutex<Option<Vmalloc>> = Mutex::new(None);
/// What each CPU last read through the probe area.
static SEEN: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn read_probe(_: u64, _: u64) {
    let seen = PROBE
        .lock()
        .as_ref()
        .and_then(|area| area.page(0))
        .map_or(0, |page| page.read_u64(0));
    SEEN[smp_processor_id().index()].store(seen, Ordering::Relaxed);
}

/// Every other CPU reads the probe area (and so caches its translation);
/// fails unless each saw `expected`.
fn others_read(expected: u64) -> Result<(), Failure> {
    for cpu in cpus_of(other_cpus()) {
        SEEN[cpu].store(0, Ordering::Relaxed);
    }
    call_function_many(u64::MAX, read_probe, (0, 0));
    for cpu in cpus_of(other_cpus()) {
        check_eq!(
            SEEN[cpu].load(Ordering::Relaxed),
            expected,
            "CPU{cpu} read through the probe address"
        );
    }
    Ok(())
}

/// Makes `area` the probe, writing `value` at its start; returns its address.
fn set_probe(area: Vmalloc, value: u64) -> u64 {
    if let Some(page) = area.page(0) {
        page.write_u64(0, value);
    }
    let addr = area.addr();
    *PROBE.lock() = Some(area);
    addr
}

fn fail(what: &str, e: VmallocError) -> Failure {
    Failure::new(format_args!("{what}: {e:?}"))
}

/// Stale-TLB probe: every CPU caches a vmalloc translation, the boot CPU
/// frees the area and purges (the lazy flush, shot down), and the address,
/// reused for a new frame, reads the new frame's contents everywhere.
/// PVM's shadow paging keeps every TLB coherent with PTE writes (with no
/// flush at all the new frame is read), so on this host only the counters
/// can tell a missing shootdown; hardware KVM with EPT/NPT shows the stale
/// frame.
fn purge_shoots_down_stale_translations() -> TestResult {
    if other_cpus() == 0 {
        skip!("one CPU online");
    }
    const OLD: u64 = 0x01d_f4a3e;
    const NEW: u64 = 0x0e4_f4a3e;
    purge();
    let area = vmalloc(PAGE_SIZE, "selftest").map_err(|e| fail("vmalloc", e))?;
    let a = set_probe(area, OLD);
    let result = others_read(OLD);
    if let Some(area) = PROBE.lock().take() {
        vfree(area).map_err(|e| fail("vfree", e))?;
    }
    result?;
    let shootdowns = EVENTS.tlb_remote_flush.load(Ordering::Relaxed);
    let received = EVENTS.tlb_remote_flush_received.load(Ordering::Relaxed);
    purge();
    let area = vmalloc(PAGE_SIZE, "selftest").map_err(|e| fail("vmalloc", e))?;
    let b = set_probe(area, NEW);
    let result = others_read(NEW);
    if let Some(area) = PROBE.lock().take() {
        let _ = vfree(area);
    }
    check_eq!(b, a, "the purged address was reused");
    result?;
    check_eq!(
        EVENTS.tlb_remote_flush.load(Ordering::Relaxed) - shootdowns,
        1,
        "shootdowns by the purge"
    );
    check_eq!(
        EVENTS.tlb_remote_flush_received.load(Ordering::Relaxed) - received,
        u64::from(other_cpus().count_ones()),
        "shot-down flushes run by the other CPUs"
    );
    Ok(())
}
