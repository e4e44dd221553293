//! Wait queues (wait_queue_head_t): the protocol is ksync's, over this
//! kernel's scheduler and its thread slots.

use super::{AtomicContext, Sched, SLOT_WORDS};

/// Why a wait did not sleep.
pub type SleepError = AtomicContext;

pub type WaitQueue = ksync::WaitQueue<Sched, SLOT_WORDS>;

/// Where the bitmap lies in a queue (`SLOT_WORDS` u64s, slot 0 the lowest
/// bit of the first), for the host's inspector.
pub const WAITERS_OFFSET: usize = WaitQueue::WAITERS_OFFSET;
