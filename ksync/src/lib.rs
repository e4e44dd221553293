//! The kernel's lock-free synchronisation protocols: wait queues, the
//! sleeping lock built on them, the per-thread timers of sleeps, and the
//! record of which CPUs run an mm (cpu_tlbstate.loaded_mm, read as
//! mm_cpumask). The guest kernel runs this code; its unit tests built with
//! `RUSTFLAGS="--cfg loom"` run the same code under the `loom` model
//! checker, which tries every interleaving of a few threads using it and
//! every value the memory model lets each of their loads read. Only the
//! atomics differ between the two builds: see [`primitives`]. What a
//! protocol needs of the scheduler (sleeping, waking a thread) is the
//! [`Scheduler`] trait, which the guest implements over its run queue.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod cpumask;
pub mod sleeplock;
pub mod timer;
pub mod wait;

#[cfg(test)]
mod testsched;

pub use cpumask::LoadedTables;
pub use sleeplock::{SleepLock, SleepLockGuard};
pub use timer::Timers;
pub use wait::{Scheduler, WaitQueue};

/// The atomics and the busy-wait hint: `core`'s in the kernel (and in any
/// build but the tests under `--cfg loom`), loom's checked ones in those
/// tests. Loom's atomics are not `const`-constructible, so the `const fn
/// new` of each structure (for the kernel's statics) exists only in the
/// kernel build; under loom each has a plain `new` instead.
mod primitives {
    #[cfg(not(all(test, loom)))]
    pub use core::{
        hint::spin_loop,
        sync::atomic::{fence, AtomicBool, AtomicU64, Ordering},
    };
    #[cfg(all(test, loom))]
    pub use loom::{
        hint::spin_loop,
        sync::atomic::{fence, AtomicBool, AtomicU64, Ordering},
    };
}
