//! threads: pthread_create()'s clone from user space. Main starts three
//! threads, each on a stack of its own with a TLS block of its own (its
//! FS base, whose first word points at itself as x86-64's TCB does), and
//! works as the fourth: all four share one address space, on whichever
//! CPUs they run. Each writes its word of 4 shared pages, faults in 4
//! fresh pages of an area they all fault in at once, and adds to one
//! counter with locked increments. Main joins them (polling the TID words
//! CLONE_CHILD_CLEARTID clears: there is no futex) and checks every
//! value, that getpid() is the same everywhere and gettid() is not, and
//! that the clone flags Linux rejects are EINVAL. Exits 0, or a distinct
//! status for what went wrong.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rt::{println, CLONE_SIGHAND, CLONE_THREAD, CLONE_VFORK, CLONE_VM, EINVAL, SIGCHLD};

const PAGE: u64 = 4096;
/// Main and the threads it starts.
const WORKERS: usize = 4;
const SHARED_PAGES: u64 = 4;
/// Pages each worker faults in.
const OWN_PAGES: u64 = 4;
const INCREMENTS: u64 = 200_000;
const STACK: u64 = 16 * PAGE;

static COUNTER: AtomicU64 = AtomicU64::new(0);
/// Each thread's TID word (set at clone, cleared at its exit).
static TIDS: [AtomicU32; WORKERS] = [const { AtomicU32::new(0) }; WORKERS];
/// What each worker saw: its pid, its tid, and whether its FS base is its
/// TLS block.
static PIDS: [AtomicU64; WORKERS] = [const { AtomicU64::new(0) }; WORKERS];
static OWN_TIDS: [AtomicU64; WORKERS] = [const { AtomicU64::new(0) }; WORKERS];
static TLS_OK: [AtomicU64; WORKERS] = [const { AtomicU64::new(0) }; WORKERS];
/// The shared area and the area the workers fault in.
static AREAS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
/// Each thread's TLS block: its first word, fs:0, is its own address.
static TLS: [AtomicU64; WORKERS * 8] = [const { AtomicU64::new(0) }; WORKERS * 8];

rt::entry!(main);

/// What worker `i` writes in word `i` of shared page `p`, and in its own
/// page `k`.
fn shared_value(p: u64, i: u64) -> u64 {
    0x5_0000 + p * 0x100 + i
}
fn own_value(k: u64, i: u64) -> u64 {
    0x7_0000 + k * 0x100 + i
}

fn tls_block(i: usize) -> u64 {
    TLS[i * 8].as_ptr() as u64
}

/// fs:0, the TCB's self pointer.
fn fs0() -> u64 {
    let v: u64;
    // SAFETY: reads one word through FS, which a started thread has set to
    // its TLS block (a mapped static); main reads it only if it set one.
    unsafe { core::arch::asm!("mov {}, fs:[0]", out(reg) v, options(nostack, readonly)) };
    v
}

extern "C" fn worker(i: u64) -> u64 {
    work(i as usize);
    0
}

fn work(i: usize) {
    PIDS[i].store(rt::getpid() as u64, Ordering::Relaxed);
    OWN_TIDS[i].store(rt::gettid() as u64, Ordering::Relaxed);
    let tls_ok = i == 0 || fs0() == tls_block(i);
    TLS_OK[i].store(u64::from(tls_ok), Ordering::Relaxed);
    let (shared, own) = (
        AREAS[0].load(Ordering::Relaxed),
        AREAS[1].load(Ordering::Relaxed),
    );
    let i = i as u64;
    for p in 0..SHARED_PAGES {
        let word = (shared + p * PAGE + i * 8) as *mut u64;
        // SAFETY: inside the shared mapping; each worker has its own word.
        unsafe { write_volatile(word, shared_value(p, i)) };
    }
    for k in 0..OWN_PAGES {
        let page = (own + (k * WORKERS as u64 + i) * PAGE) as *mut u64;
        // SAFETY: inside the faulted-in area; each worker has its pages.
        unsafe { write_volatile(page, own_value(k, i)) };
    }
    for _ in 0..INCREMENTS {
        COUNTER.fetch_add(1, Ordering::Relaxed);
    }
}

fn main(_: &rt::Startup) -> i32 {
    let sigchld = u64::from(SIGCHLD);
    for flags in [
        CLONE_THREAD | CLONE_VM | sigchld,
        CLONE_SIGHAND | sigchld,
        CLONE_VFORK | CLONE_VM | sigchld,
    ] {
        if rt::clone(flags, 0) != Err(EINVAL) {
            println!("threads: clone({flags:#x}) was not EINVAL");
            return 10;
        }
    }
    let (Ok(shared), Ok(own), Ok(stacks)) = (
        rt::mmap_anon(SHARED_PAGES * PAGE),
        rt::mmap_anon(OWN_PAGES * WORKERS as u64 * PAGE),
        rt::mmap_anon(STACK * WORKERS as u64),
    ) else {
        return 11;
    };
    AREAS[0].store(shared, Ordering::Relaxed);
    AREAS[1].store(own, Ordering::Relaxed);
    let mut tids = [0u64; WORKERS];
    for (i, tid) in tids.iter_mut().enumerate().skip(1) {
        TLS[i * 8].store(tls_block(i), Ordering::Relaxed);
        let top = stacks + (i as u64 + 1) * STACK;
        match rt::spawn_thread(top, tls_block(i), &TIDS[i], worker, i as u64) {
            Ok(t) => *tid = t,
            Err(e) => {
                println!("threads: clone failed: errno {e}");
                return 12;
            }
        }
    }
    work(0);
    for t in &TIDS[1..] {
        rt::join(t);
    }
    let me = rt::getpid() as u64;
    for i in 0..WORKERS {
        if PIDS[i].load(Ordering::Relaxed) != me {
            return 20 + i as i32;
        }
        let tid = OWN_TIDS[i].load(Ordering::Relaxed);
        let expected = if i == 0 { me } else { tids[i] };
        if tid != expected || (i > 0 && tid == me) {
            return 30 + i as i32;
        }
        if TLS_OK[i].load(Ordering::Relaxed) != 1 {
            return 40 + i as i32;
        }
    }
    for p in 0..SHARED_PAGES {
        for i in 0..WORKERS as u64 {
            // SAFETY: inside the shared mapping.
            let v = unsafe { read_volatile((shared + p * PAGE + i * 8) as *const u64) };
            if v != shared_value(p, i) {
                return 50;
            }
        }
    }
    for k in 0..OWN_PAGES {
        for i in 0..WORKERS as u64 {
            let page = (own + (k * WORKERS as u64 + i) * PAGE) as *const u64;
            // SAFETY: inside the faulted-in area.
            if unsafe { read_volatile(page) } != own_value(k, i) {
                return 51;
            }
        }
    }
    let counted = COUNTER.load(Ordering::Relaxed);
    if counted != WORKERS as u64 * INCREMENTS {
        println!(
            "threads: counter {counted}, not {}",
            WORKERS as u64 * INCREMENTS
        );
        return 52;
    }
    println!(
        "threads: {WORKERS} threads of pid {me} (tids {} {} {} {}) shared one mm: counter {counted}, every page as written",
        me, tids[1], tids[2], tids[3]
    );
    0
}
