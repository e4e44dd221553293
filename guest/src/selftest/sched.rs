//! Kernel threads on every CPU: they run where they are allowed, sleep and
//! wake (kmap on pkmap_map_wait), are caught sleeping where they may not,
//! and hammer the allocators and kernel mappings together.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use abi::boot::MAX_CPUS;
use abi::layout::{LAST_PKMAP, PAGE_SIZE};
use mm::gfp::Gfp;
use mm::slub::{CacheId, SlabFlags};
use spin::{Mutex, RwLock};

use super::highmem::alloc_highmem;
use super::slab::first_alloc_sets_up_cpu_slab;
use super::{Failure, Suite, Test, TestResult};
use crate::arch::io::clock_ms;
use crate::arch::mem::{Frames, SlabBox};
use crate::arch::percpu::{smp_processor_id, CpuId};
use crate::mm::events::EVENTS;
use crate::mm::highmem::{
    kmap, kmap_atomic, kmap_sleepers, kunmap, kunmap_atomic, with_kmap_local,
};
use crate::mm::slab::{cpu_slabs, kmem_cache_create, kmem_cache_destroy, slab_pages};
use crate::mm::vmalloc::{vfree, vmalloc};
use crate::mm::{alloc_pages, free_pages};
use crate::sched::wait::WaitQueue;
use crate::sched::{self, AtomicContext, Tid};
use crate::smp::{call_function_many, cpus_of, online_mask};

pub const SUITE: Suite = Suite {
    name: "sched",
    tick_page: false,
    tests: &[
        Test {
            name: "a thread pinned to each CPU runs there",
            run: threads_run_where_allowed,
        },
        Test {
            name: "kmap sleeps on pkmap_map_wait until a kunmap frees a slot",
            run: kmap_sleeps_until_kunmap,
        },
        Test {
            name: "sleeping in kmap_atomic or an interrupt is reported, not done",
            run: sleeping_in_atomic_context_is_reported,
        },
        Test {
            name: "each CPU sets up its own cpu_slab on its first allocation",
            run: each_cpu_sets_up_its_cpu_slab,
        },
        Test {
            name: "timed sleepers wake once the tick reaches their expiry",
            run: timed_sleepers_wake_at_expiry,
        },
    ],
};

/// Apart from `sched`, so that runs that test the scheduler's mechanics
/// at many memory sizes need not pay for it.
pub const STRESS: Suite = Suite {
    name: "stress",
    tick_page: false,
    tests: &[Test {
        name: "threads on every CPU share the allocators and highmem",
        run: stress_on_every_cpu,
    }],
};

/// How long a test waits for another thread before calling it hung.
const HANG_MS: u32 = 10_000;

fn spawn(name: &'static str, entry: fn(u64), arg: u64, allowed: u64) -> Result<Tid, Failure> {
    sched::spawn(name, entry, arg, allowed)
        .map_err(|e| Failure::new(format_args!("spawn {name}: {e:?}")))
}

fn join(tid: Tid) -> Result<(), Failure> {
    sched::join(tid).map_err(|e| Failure::new(format_args!("join: {e:?}")))
}

/// Which CPU each pinned thread found itself on.
static RAN_ON: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];

fn record_cpu(index: u64) {
    RAN_ON[index as usize].store(smp_processor_id().index() as u64, Ordering::Relaxed);
}

fn threads_run_where_allowed() -> TestResult {
    let cpus = online_mask();
    let mut tids = [None; MAX_CPUS];
    for cpu in cpus_of(cpus) {
        RAN_ON[cpu].store(u64::MAX, Ordering::Relaxed);
        tids[cpu] = Some(spawn("pinned", record_cpu, cpu as u64, 1 << cpu)?);
    }
    for tid in tids.into_iter().flatten() {
        join(tid)?;
    }
    for cpu in cpus_of(cpus) {
        check_eq!(
            RAN_ON[cpu].load(Ordering::Relaxed),
            cpu as u64,
            "the thread pinned to CPU{cpu} ran on"
        );
    }
    Ok(())
}

/// The jiffies the first timed sleeper sleeps until; the one pinned to
/// CPU N sleeps N ticks longer.
static EXPIRY_BASE: AtomicU64 = AtomicU64::new(0);
/// The jiffies each timed sleeper woke at.
static WOKE_AT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn timed_sleeper(cpu: u64) {
    let expires = EXPIRY_BASE.load(Ordering::SeqCst) + cpu;
    if sched::timer::sleep_until(expires, "selftest timer").is_ok() {
        WOKE_AT[cpu as usize].store(crate::time::jiffies(), Ordering::SeqCst);
    }
}

/// A thread pinned to each CPU sleeps on its timer, and init sleeps past
/// them all, so that for a while every CPU idles with timers armed: the
/// ticks go on, and each sleeper wakes once jiffies reach its expiry.
fn timed_sleepers_wake_at_expiry() -> TestResult {
    let cpus = online_mask();
    let base = crate::time::jiffies() + 3;
    EXPIRY_BASE.store(base, Ordering::SeqCst);
    let mut tids = [None; MAX_CPUS];
    for cpu in cpus_of(cpus) {
        WOKE_AT[cpu].store(0, Ordering::SeqCst);
        tids[cpu] = Some(spawn("sleeper", timed_sleeper, cpu as u64, 1 << cpu)?);
    }
    let last = base + MAX_CPUS as u64;
    sched::timer::sleep_until(last, "selftest timer")
        .map_err(|e| Failure::new(format_args!("init cannot sleep: {e:?}")))?;
    check!(crate::time::jiffies() >= last, "init woke early");
    for tid in tids.into_iter().flatten() {
        join(tid)?;
    }
    for cpu in cpus_of(cpus) {
        let woke = WOKE_AT[cpu].load(Ordering::SeqCst);
        check!(
            woke >= base + cpu as u64,
            "the sleeper on CPU{cpu} woke at jiffies {woke}, before {}",
            base + cpu as u64
        );
    }
    Ok(())
}

/// The cache whose cpu_slabs the pinned checkers look at.
static CPU_SLAB_CACHE: Mutex<Option<CacheId>> = Mutex::new(None);
/// The first failure a pinned checker saw.
static CPU_SLAB_FAILURE: Mutex<Option<Failure>> = Mutex::new(None);

/// A pinned thread's part: its CPU's cpu_slab of the cache is NULL until
/// it allocates, then set, and no other CPU's changes.
fn check_cpu_slab_here(cpu: u64) {
    let Some(id) = *CPU_SLAB_CACHE.lock() else {
        return;
    };
    let result = CpuId::new(cpu as usize)
        .ok_or_else(|| Failure::new(format_args!("no CPU {cpu}")))
        .and_then(|cpu| first_alloc_sets_up_cpu_slab(id, cpu));
    if let Err(failure) = result {
        CPU_SLAB_FAILURE.lock().get_or_insert(failure);
    }
}

/// For a fresh cache, a thread pinned to each CPU in turn allocates once:
/// each sets up that CPU's kmem_cache_cpu and no other, so that in the end
/// every online CPU has one (Linux's s->cpu_slab, per CPU, filled lazily
/// by ___slab_alloc()).
fn each_cpu_sets_up_its_cpu_slab() -> TestResult {
    let id = kmem_cache_create("percpu_objs", 96, 0, SlabFlags::empty(), None)
        .map_err(|e| Failure::new(format_args!("kmem_cache_create: {e:?}")))?;
    *CPU_SLAB_CACHE.lock() = Some(id);
    CPU_SLAB_FAILURE.lock().take();
    let cpus = online_mask();
    // One CPU at a time, so each sees the others' cpu_slabs hold still.
    let mut ran = Ok(());
    for cpu in cpus_of(cpus) {
        ran = spawn("cpu_slab", check_cpu_slab_here, cpu as u64, 1 << cpu).and_then(join);
        if ran.is_err() {
            break;
        }
    }
    let after = cpu_slabs(id);
    CPU_SLAB_CACHE.lock().take();
    let destroyed = kmem_cache_destroy(id);
    ran?;
    if let Some(failure) = CPU_SLAB_FAILURE.lock().take() {
        return Err(failure);
    }
    for cpu in cpus_of(cpus) {
        check!(after[cpu].is_some(), "CPU {cpu} never set up its cpu_slab");
    }
    check!(destroyed.is_ok(), "percpu_objs: {destroyed:?}");
    Ok(())
}

/// The pages the holder kmaps, lent to it for the test.
static HELD: Mutex<Option<Frames>> = Mutex::new(None);
/// Set once the holder has every pkmap slot.
static HOLDING: AtomicBool = AtomicBool::new(false);
static HOLDING_WAIT: WaitQueue = WaitQueue::new();
/// Whether the holder saw a kmap asleep before it let a slot go.
static SAW_SLEEPER: AtomicBool = AtomicBool::new(false);

/// Holds LAST_PKMAP pages until a kmap sleeps for a slot, then lets them
/// go.
fn hold_every_slot(_: u64) {
    let Some(block) = HELD.lock().take() else {
        HOLDING_WAIT.wake_up();
        return;
    };
    let mut mapped = 0;
    while mapped < LAST_PKMAP as u64 && kmap(&block, mapped).is_ok() {
        mapped += 1;
    }
    HOLDING.store(mapped == LAST_PKMAP as u64, Ordering::SeqCst);
    HOLDING_WAIT.wake_up();
    if mapped == LAST_PKMAP as u64 {
        let start = clock_ms();
        while !kmap_sleepers() && clock_ms().wrapping_sub(start) < HANG_MS {
            sched::cond_resched();
            core::hint::spin_loop();
        }
        SAW_SLEEPER.store(kmap_sleepers(), Ordering::SeqCst);
    }
    for index in 0..mapped {
        let _ = kunmap(&block, index);
    }
    *HELD.lock() = Some(block);
}

fn kmap_sleeps_until_kunmap() -> TestResult {
    let block = alloc_highmem(9)?;
    let extra = match alloc_highmem(0) {
        Ok(extra) => extra,
        Err(e) => {
            let _ = free_pages(block);
            return Err(e);
        }
    };
    HOLDING.store(false, Ordering::SeqCst);
    SAW_SLEEPER.store(false, Ordering::SeqCst);
    *HELD.lock() = Some(block);
    let sleeps = EVENTS.kmap_sleeps.load(Ordering::Relaxed);
    let result = (|| {
        let holder = spawn("kmap-holder", hold_every_slot, 0, u64::MAX)?;
        let ready = HOLDING_WAIT.wait_event("selftest", || {
            HOLDING.load(Ordering::SeqCst)
                || matches!(sched::state(holder), None | Some(sched::State::Unused))
        });
        check!(ready.is_ok(), "waiting for the holder: {ready:?}");
        check!(
            HOLDING.load(Ordering::SeqCst),
            "the holder could not kmap every slot"
        );
        let overflow = kmap(&extra, 0);
        if overflow.is_ok() {
            let _ = kunmap(&extra, 0);
        }
        join(holder)?;
        check!(overflow.is_ok(), "the 513th kmap: {overflow:?}");
        check!(
            SAW_SLEEPER.load(Ordering::SeqCst),
            "the holder never saw the kmap asleep"
        );
        check_eq!(
            EVENTS.kmap_sleeps.load(Ordering::Relaxed) - sleeps,
            1,
            "kmaps that slept"
        );
        Ok(())
    })();
    if let Some(block) = HELD.lock().take() {
        let _ = free_pages(block);
    }
    let _ = free_pages(extra);
    result
}

static NEVER: WaitQueue = WaitQueue::new();
/// Whether a wait in the IPI handler was refused as interrupt context.
static IN_INTERRUPT: AtomicU64 = AtomicU64::new(0);

fn sleep_in_interrupt(_: u64, _: u64) {
    let refused = NEVER.wait_event("selftest", || false) == Err(AtomicContext::Interrupt);
    IN_INTERRUPT.store(u64::from(refused), Ordering::Relaxed);
}

fn sleeping_in_atomic_context_is_reported() -> TestResult {
    let Ok(frame) = alloc_pages(Gfp::HIGHUSER, 0) else {
        skip!("no page");
    };
    let reports = EVENTS.sleep_in_atomic.load(Ordering::Relaxed);
    let in_atomic = match kmap_atomic(frame.pfn()) {
        Ok(va) => {
            let waited = NEVER.wait_event("selftest", || false);
            let _ = kunmap_atomic(va);
            waited
        }
        Err(e) => {
            let _ = free_pages(frame);
            return Err(Failure::new(format_args!("kmap_atomic: {e:?}")));
        }
    };
    let _ = free_pages(frame);
    check_eq!(
        in_atomic,
        Err(AtomicContext::PreemptDisabled),
        "a wait inside kmap_atomic"
    );
    let mut expected = 1;
    let others = online_mask() & !(1 << smp_processor_id().index());
    if others != 0 {
        IN_INTERRUPT.store(0, Ordering::Relaxed);
        let one = 1 << others.trailing_zeros();
        call_function_many(one, sleep_in_interrupt, (0, 0));
        check_eq!(
            IN_INTERRUPT.load(Ordering::Relaxed),
            1,
            "a wait in an IPI handler refused"
        );
        expected += 1;
    }
    check_eq!(
        EVENTS.sleep_in_atomic.load(Ordering::Relaxed) - reports,
        expected,
        "reports of sleeping in atomic context"
    );
    Ok(())
}

/// Rounds each stress thread runs.
const STRESS_ROUNDS: u64 = 40;
/// Highmem pages every stress thread reads and writes through kmap and
/// kmap_local: thread `n` owns word `n` of each.
static SHARED: RwLock<Option<Frames>> = RwLock::new(None);
const SHARED_ORDER: u32 = 2;
/// The cache the stress threads' objects come from.
static STRESS_CACHE: Mutex<Option<CacheId>> = Mutex::new(None);
/// Wrong values the stress threads read, and calls that failed.
static STRESS_ERRORS: AtomicU64 = AtomicU64::new(0);

fn stress(seed: u64) {
    let Some(cache) = *STRESS_CACHE.lock() else {
        STRESS_ERRORS.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let shared = SHARED.read();
    let Some(pages) = shared.as_ref() else {
        STRESS_ERRORS.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut errors = 0;
    let offset = (seed as usize % 512) * 8;
    for round in 0..STRESS_ROUNDS {
        let tag = (seed << 32) | round;
        match SlabBox::new(cache, [tag; 8]) {
            Ok(obj) => errors += u64::from(*obj != [tag; 8]),
            Err(_) => errors += 1,
        }
        if round % 8 == 0 {
            match vmalloc(2 * PAGE_SIZE, "stress") {
                Ok(area) => {
                    let seen = area.page(1).map(|page| {
                        page.write_u64(8, tag);
                        page.read_u64(8)
                    });
                    errors += u64::from(seen != Some(tag));
                    let _ = vfree(area);
                }
                Err(_) => errors += 1,
            }
        }
        let index = round % (1 << SHARED_ORDER);
        let mapped = kmap(pages, index).is_ok();
        errors += u64::from(!mapped);
        let written = with_kmap_local(pages, index, |page| {
            page.write_u64(offset, tag);
            page.read_u64(offset)
        });
        errors += u64::from(written != Ok(tag));
        if mapped {
            let _ = kunmap(pages, index);
        }
        sched::cond_resched();
    }
    STRESS_ERRORS.fetch_add(errors, Ordering::Relaxed);
}

fn stress_on_every_cpu() -> TestResult {
    let Ok(pages) = alloc_pages(Gfp::HIGHUSER | Gfp::ZERO, SHARED_ORDER) else {
        skip!("no shared pages");
    };
    let cache = match kmem_cache_create("stress", 64, 8, SlabFlags::empty(), None) {
        Ok(cache) => cache,
        Err(e) => {
            let _ = free_pages(pages);
            return Err(Failure::new(format_args!("kmem_cache_create: {e:?}")));
        }
    };
    *SHARED.write() = Some(pages);
    *STRESS_CACHE.lock() = Some(cache);
    STRESS_ERRORS.store(0, Ordering::Relaxed);
    let before = (EVENTS.snapshot(), slab_pages());
    let threads = 2 * online_mask().count_ones() as usize;
    let mut tids = [None; 2 * MAX_CPUS];
    let mut spawned = Ok(());
    for (i, tid) in tids.iter_mut().enumerate().take(threads) {
        match spawn("stress", stress, i as u64, u64::MAX) {
            Ok(t) => *tid = Some(t),
            Err(e) => {
                spawned = Err(e);
                break;
            }
        }
    }
    for tid in tids.into_iter().flatten() {
        join(tid)?;
    }
    crate::mm::vmalloc::purge();
    let after = (EVENTS.snapshot(), slab_pages());
    // Each thread's word of every shared page holds its last tag there.
    let mut last_words = Ok(());
    if let Some(pages) = SHARED.write().take() {
        for index in 0..1u64 << SHARED_ORDER {
            let _ = with_kmap_local(&pages, index, |page| {
                for n in 0..threads as u64 {
                    let rounds = (index..STRESS_ROUNDS).step_by(1 << SHARED_ORDER);
                    let last = (n << 32) | rounds.last().unwrap_or(0);
                    if page.read_u64(n as usize * 8) != last {
                        last_words = Err(Failure::new(format_args!(
                            "word {n} of shared page {index} is not thread {n}'s last write"
                        )));
                    }
                }
            });
        }
        let _ = free_pages(pages);
    }
    STRESS_CACHE.lock().take();
    let destroyed = kmem_cache_destroy(cache);
    spawned?;
    check_eq!(
        STRESS_ERRORS.load(Ordering::Relaxed),
        0,
        "wrong values or failed calls"
    );
    last_words?;
    check!(destroyed.is_ok(), "the stress cache: {destroyed:?}");
    // Every page the threads took (stacks, vmalloc, objects) is back, but
    // for the slabs SLUB keeps and the page tables vmalloc space keeps.
    check_eq!(
        after.0.pages_allocated - before.0.pages_allocated,
        after.0.pages_freed - before.0.pages_freed
            + (after.1 - before.1)
            + (after.0.pt_pages - before.0.pt_pages),
        "pages allocated against pages freed plus slab and page-table pages kept"
    );
    check!(
        after.0.context_switches > before.0.context_switches,
        "no context switch while {threads} threads ran"
    );
    Ok(())
}
