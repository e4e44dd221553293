//! The kernel's lock-free synchronisation protocols: wait queues, the
//! sleeping lock built on them, the per-thread timers of sleeps, and the
//! record of which CPUs run an mm (cpu_tlbstate.loaded_mm, read as
//! mm_cpumask). The guest kernel runs
//! this code; the host runs the same code under the `loom` model checker
//! (`RUSTFLAGS="--cfg loom"`), which tries every interleaving and every
//! outcome the memory model allows of a few threads using it. Only the
//! atomics differ between the two builds: see [`primitives`]. What a protocol
//! needs of the scheduler (sleeping, waking a thread) is the [`Scheduler`]
//! trait, which the guest implements over its run queue.
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

/// The atomics and the busy-wait hint: `core`'s in the kernel, loom's
/// checked ones under the model checker. Loom's atomics are not
/// `const`-constructible, so the `const fn new` of each structure (for the
/// kernel's statics) exists only in the kernel build; under loom each has
/// a plain `new` instead.
mod primitives {
    #[cfg(not(loom))]
    pub use core::{
        hint::spin_loop,
        sync::atomic::{fence, AtomicBool, AtomicU64, Ordering},
    };
    #[cfg(loom)]
    pub use loom::{
        hint::spin_loop,
        sync::atomic::{fence, AtomicBool, AtomicU64, Ordering},
    };
}
