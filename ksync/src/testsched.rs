//! A scheduler for the tests: each thread of a test has a slot and a
//! state; `schedule()` parks a thread while it is asleep and a wake-up
//! unparks it. Under loom the threads, atomics and parking are loom's, so
//! a thread left asleep for good is a deadlock loom reports. The state
//! changes are read-modify-writes of the thread's own word, as the
//! kernel's are made under its run-queue lock; the kernel's one lock for
//! all threads orders more than that, so a protocol that holds here
//! holds there.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::vec::Vec;

#[cfg(loom)]
use loom::{
    sync::atomic::{AtomicU8, Ordering},
    thread::{self, Thread},
};
#[cfg(not(loom))]
use std::{
    sync::atomic::{AtomicU8, Ordering},
    thread::{self, Thread},
};

use crate::wait::Scheduler;

const RUNNING: u8 = 0;
const SLEEPING: u8 = 1;
const RUNNABLE: u8 = 2;

struct Slot {
    number: usize,
    state: AtomicU8,
    /// The thread, once it has entered its slot: the test's bookkeeping,
    /// outside the model (set before the thread touches any protocol).
    thread: Mutex<Option<Thread>>,
}

/// The threads of one test (one loom execution), by slot number.
pub struct Threads {
    slots: Vec<Slot>,
}

type Current = RefCell<Option<(Arc<Threads>, usize)>>;

#[cfg(loom)]
loom::thread_local! {
    static CURRENT: Current = RefCell::new(None);
}
#[cfg(not(loom))]
std::thread_local! {
    static CURRENT: Current = const { RefCell::new(None) };
}

impl Threads {
    /// Threads for the given slot numbers, all running.
    pub fn new(slots: &[usize]) -> Arc<Self> {
        Arc::new(Threads {
            slots: slots
                .iter()
                .map(|&number| Slot {
                    number,
                    state: AtomicU8::new(RUNNING),
                    thread: Mutex::new(None),
                })
                .collect(),
        })
    }

    fn slot(&self, number: usize) -> &Slot {
        self.slots
            .iter()
            .find(|s| s.number == number)
            .expect("a test thread's slot")
    }

    /// The running thread is the one in slot `number`, from here on.
    pub fn enter(self: &Arc<Self>, number: usize) {
        *self.slot(number).thread.lock().unwrap() = Some(thread::current());
        CURRENT.with(|c| *c.borrow_mut() = Some((Arc::clone(self), number)));
    }

    /// Whether the thread in slot `number` was woken (and has not yet run).
    pub fn runnable(&self, number: usize) -> bool {
        self.slot(number).state.load(Ordering::SeqCst) == RUNNABLE
    }
}

/// The running thread's scheduler state and slot number.
fn with_current<R>(f: impl FnOnce(&Threads, &Slot) -> R) -> R {
    CURRENT.with(|c| {
        let current = c.borrow();
        let (threads, number) = current.as_ref().expect("a thread that entered its slot");
        f(threads, threads.slot(*number))
    })
}

/// The scheduler over the running test's `Threads`.
pub struct TestScheduler;

impl Scheduler for TestScheduler {
    type NoSleep = ();

    fn might_sleep() -> Result<(), ()> {
        Ok(())
    }

    fn can_sleep() -> bool {
        true
    }

    fn current_slot() -> usize {
        with_current(|_, slot| slot.number)
    }

    fn set_current_sleeping(_wchan: &'static str) {
        with_current(|_, slot| slot.state.swap(SLEEPING, Ordering::SeqCst));
    }

    fn set_current_running() {
        with_current(|_, slot| slot.state.swap(RUNNING, Ordering::SeqCst));
    }

    fn schedule() {
        with_current(|_, slot| {
            while slot.state.load(Ordering::SeqCst) == SLEEPING {
                thread::park();
            }
        });
    }

    fn wake_up_slot(number: usize) {
        with_current(|threads, _| {
            let slot = threads.slot(number);
            let woken = slot
                .state
                .compare_exchange(SLEEPING, RUNNABLE, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
            if woken {
                let thread = slot.thread.lock().unwrap().clone();
                thread.expect("a sleeper entered its slot").unpark();
            }
        });
    }
}
