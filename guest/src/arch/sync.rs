//! The sleeping lock (struct mutex, or an rw_semaphore taken for write):
//! ksync's, sleeping on this kernel's wait queues. `#[repr(C)]` with the
//! data first, so a value that starts with it starts with the data (the
//! mm_struct the host reads).

use crate::sched::{Sched, SLOT_WORDS};

pub type SleepLock<T> = ksync::SleepLock<T, Sched, SLOT_WORDS>;
pub type SleepLockGuard<'a, T> = ksync::SleepLockGuard<'a, T, Sched, SLOT_WORDS>;
