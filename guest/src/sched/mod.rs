//! Kernel threads, user threads and the scheduler.
//!
//! One run queue for all CPUs under one lock, picked round-robin, as the
//! scheduler of Linux 2.4 (the i386 kernels the model comes from) kept a
//! single `runqueue_head` under `runqueue_lock`. The kernel is not
//! preemptible (CONFIG_PREEMPT_NONE): the tick sets need_resched, and a
//! thread gives the CPU up when it sleeps, exits or reaches
//! `cond_resched()`; user code is preempted on its way back to ring 3
//! (`exit_to_user_mode`). Each CPU has an idle thread (swapper/N) it runs
//! when nothing else is runnable; the boot CPU's boot context becomes
//! `init`. Each user process is a thread too, which runs on any CPU.
//!
//! The pick and every state change happen under the lock with interrupts
//! off; `arch::switch` does the switch itself and keeps a thread from being
//! resumed before the CPU it left has saved it (task->on_cpu). A user
//! thread's address space is loaded only while it runs: it leaves it just
//! before it switches away and loads it again once resumed (switch_mm();
//! kernel threads run on swapper_pg_dir), so an mm's cpumask names exactly
//! the CPUs that run it.

pub mod timer;
pub mod wait;

use core::fmt;
use core::mem::{align_of, offset_of, size_of};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use abi::boot::MAX_CPUS;
use abi::vmcoreinfo::{num, off, sym, Writer};
use spin::Mutex;

use crate::arch::irqflags::{
    irqs_enabled, local_irq_disable, local_irq_enable, local_irq_save, lock_irqsave, safe_halt,
};
use crate::arch::paging;
use crate::arch::percpu::smp_processor_id;
use crate::arch::switch::{self, current_slot, KernelStack};
use crate::kprintln;
use crate::mm::events::{count, EVENTS};
use crate::{smp, time};

pub use crate::arch::switch::MAX_THREADS;

/// The thread the boot CPU's boot context becomes.
const INIT: usize = MAX_CPUS;

/// A thread's slot and the generation of its use, so a stale id never
/// names a later thread in the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tid {
    slot: usize,
    generation: u32,
}

/// A thread's state (TASK_RUNNING and friends). A primitive
/// representation gives it a defined layout the host reads: the u32 tag
/// first, then the wait channel (see [`write_vmcoreinfo`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum State {
    Unused = tag::UNUSED,
    /// On a CPU.
    Running = tag::RUNNING,
    /// Waiting for a CPU.
    Runnable = tag::RUNNABLE,
    /// Asleep on the named wait channel.
    Sleeping(&'static str) = tag::SLEEPING,
    /// Exited; its stack is freed once it is off its CPU.
    Dead = tag::DEAD,
}

/// `State`'s discriminants, as the descriptor publishes them.
mod tag {
    pub const UNUSED: u32 = 0;
    pub const RUNNING: u32 = 1;
    pub const RUNNABLE: u32 = 2;
    pub const SLEEPING: u32 = 3;
    pub const DEAD: u32 = 4;
}

/// Where `Sleeping`'s channel lies in a `State`: a `#[repr(u32)]` enum is
/// laid out as a `#[repr(C)]` union of `#[repr(C)]` structs that each
/// start with the tag (the Reference's "primitive representation of
/// enums with fields"), so the field follows the tag at its alignment.
const WCHAN_IN_STATE: usize = size_of::<u32>().next_multiple_of(align_of::<&str>());

struct Thread {
    state: State,
    name: &'static str,
    generation: u32,
    /// The CPU it runs on or last ran on (task_cpu()).
    cpu: u32,
    /// cpus_allowed.
    allowed: u64,
    entry: Option<(fn(u64), u64)>,
    /// The user process it runs (0: a kernel thread).
    pid: u32,
    /// Ticks left of its time slice (2.4's p->counter).
    slice: u32,
}

impl Thread {
    const UNUSED: Thread = Thread {
        state: State::Unused,
        name: "",
        generation: 0,
        cpu: 0,
        allowed: 0,
        entry: None,
        pid: 0,
        slice: 0,
    };
}

/// Words of a bitmap with one bit per thread slot; a u64 has a bit for
/// each (a bitmap's summary: which of its words have a bit set).
pub const SLOT_WORDS: usize = MAX_THREADS / 64;
const _: () = assert!(MAX_THREADS.is_multiple_of(64) && SLOT_WORDS <= 64);

struct RunQueue {
    threads: [Thread; MAX_THREADS],
    /// The slots whose thread is runnable, and which of its words have
    /// any: what `pick` and the tick scan, so the table's size costs
    /// nothing when few threads run (as 2.4's runqueue_head lists only
    /// the runnable tasks).
    runnable: [u64; SLOT_WORDS],
    runnable_words: u64,
    /// The slots in use (not Unused).
    used: [u64; SLOT_WORDS],
    /// Where the round-robin scan starts next.
    cursor: usize,
}

impl RunQueue {
    /// Every change of a thread's state goes through here, so the bitmaps
    /// always say what the table says.
    fn set_state(&mut self, slot: usize, state: State) {
        self.threads[slot].state = state;
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        let mark = |bits: &mut [u64; SLOT_WORDS], on: bool| {
            if on {
                bits[word] |= bit;
            } else {
                bits[word] &= !bit;
            }
        };
        mark(&mut self.runnable, state == State::Runnable);
        mark(&mut self.used, state != State::Unused);
        if self.runnable[word] == 0 {
            self.runnable_words &= !(1 << word);
        } else {
            self.runnable_words |= 1 << word;
        }
    }

    /// Puts `thread` in `slot`, whatever was there.
    fn set(&mut self, slot: usize, thread: Thread) {
        let state = thread.state;
        self.threads[slot] = thread;
        self.set_state(slot, state);
    }

    /// The runnable slots in round-robin order from `from`.
    fn runnable_from(&self, from: usize) -> impl Iterator<Item = usize> + '_ {
        let runnable_in = move |slots: core::ops::Range<usize>| {
            let words = self.runnable_words
                & !mask_below(slots.start / 64)
                & mask_below(slots.end.div_ceil(64));
            Ones(words).flat_map(move |word| {
                let base = word * 64;
                let mut bits = self.runnable[word];
                bits &= !mask_below(slots.start.saturating_sub(base));
                bits &= mask_below(slots.end - base);
                Ones(bits).map(move |bit| base + bit)
            })
        };
        runnable_in(from..MAX_THREADS).chain(runnable_in(0..from))
    }

    /// The next thread for `cpu` after `prev`: a runnable thread allowed
    /// there (idle threads are never picked, only fallen back to), else
    /// `prev` if it still runs, else the CPU's idle thread. A thread still
    /// on another CPU (being switched out there) is not picked yet (2.4's
    /// can_schedule(): !p->has_cpu), or two CPUs swapping their threads
    /// would each wait for the other's switch to finish; `prev`, on this
    /// CPU, may be picked (woken before it got off the CPU).
    fn pick(&mut self, cpu: usize, prev: usize) -> usize {
        let found = self.runnable_from(self.cursor).find(|&slot| {
            slot >= MAX_CPUS
                && self.threads[slot].allowed & (1 << cpu) != 0
                && (slot == prev || !switch::on_cpu(slot))
        });
        if let Some(slot) = found {
            self.cursor = (slot + 1) % MAX_THREADS;
            return slot;
        }
        if self.threads[prev].state == State::Running {
            prev
        } else {
            cpu
        }
    }

    fn runnable_on(&self, cpu: usize) -> bool {
        self.runnable_from(MAX_CPUS)
            .any(|slot| slot >= MAX_CPUS && self.threads[slot].allowed & (1 << cpu) != 0)
    }

    /// A slot for a new thread: the first unused one after init's.
    fn free_slot(&self) -> Option<usize> {
        self.used.iter().enumerate().find_map(|(word, &bits)| {
            let free = !bits & !mask_below(if word == 0 { INIT + 1 } else { 0 });
            (free != 0).then(|| word * 64 + free.trailing_zeros() as usize)
        })
    }

    fn tid(&self, slot: usize) -> Tid {
        Tid {
            slot,
            generation: self.threads[slot].generation,
        }
    }
}

/// The bits below `n` (all of them for 64).
fn mask_below(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1 << n) - 1
    }
}

/// The positions of a word's set bits, lowest first.
struct Ones(u64);

impl Iterator for Ones {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

static RUNQUEUE: Mutex<RunQueue> = Mutex::new(RunQueue {
    threads: [Thread::UNUSED; MAX_THREADS],
    runnable: [0; SLOT_WORDS],
    runnable_words: 0,
    used: [0; SLOT_WORDS],
    cursor: MAX_CPUS,
});

/// spin_lock_irqsave(&runqueue_lock): the tick takes the lock too, so it is
/// only ever held with interrupts off.
fn with_rq<R>(f: impl FnOnce(&mut RunQueue) -> R) -> R {
    f(&mut lock_irqsave(&RUNQUEUE))
}

/// Per thread slot, a fatal signal is pending (SIGKILL from exit_group):
/// its thread exits at its next return to user space, and its sleeps end
/// early. Set under the run-queue lock (so a thread going to sleep either
/// sees it or is woken), read without it on every return to user space.
static KILLED: [AtomicBool; MAX_THREADS] = [const { AtomicBool::new(false) }; MAX_THREADS];

/// TIF_NEED_RESCHED, per CPU.
static NEED_RESCHED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Whether the scheduler runs (threads may sleep).
static RUNNING: AtomicBool = AtomicBool::new(false);

/// preempt_count(), per CPU: preemption-disable depth in the low bits,
/// hard-interrupt nesting from HARDIRQ_OFFSET, as Linux packs it.
static PREEMPT_COUNT: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
const HARDIRQ_OFFSET: u32 = 1 << 16;
/// migrate_disable() depth, per CPU (kmap_local).
static MIGRATE_DISABLE: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// Why a thread could not be started.
#[derive(Debug)]
pub enum SpawnError {
    /// Every slot of the thread table is in use.
    TooManyThreads,
    /// No memory for its kernel stack.
    NoMemory,
}

/// sched_init(): the boot context becomes `init` on the boot CPU, and the
/// boot CPU gets its idle thread. Needs the page allocator (for stacks).
pub fn init() -> Result<(), SpawnError> {
    let stack = KernelStack::new().map_err(|_| SpawnError::NoMemory)?;
    switch::install(0, stack).map_err(|_| SpawnError::TooManyThreads)?;
    switch::adopt_boot_context(INIT).expect("the init slot is free at boot");
    with_rq(|rq| {
        rq.set(
            0,
            Thread {
                state: State::Runnable,
                name: "swapper/0",
                generation: 1,
                cpu: 0,
                allowed: 1,
                entry: Some((|_| idle_loop(), 0)),
                pid: 0,
                slice: 0,
            },
        );
        rq.set(
            INIT,
            Thread {
                state: State::Running,
                name: "init",
                generation: 1,
                cpu: 0,
                allowed: 1,
                entry: None,
                pid: 0,
                slice: 0,
            },
        );
    });
    RUNNING.store(true, Ordering::Release);
    Ok(())
}

/// A started CPU's boot context becomes its idle thread, which it then
/// runs for good.
pub fn start_idle(cpu: usize) -> ! {
    switch::adopt_boot_context(cpu).expect("each CPU starts once");
    with_rq(|rq| {
        rq.set(
            cpu,
            Thread {
                state: State::Running,
                name: IDLE_NAMES[cpu],
                generation: 1,
                cpu: cpu as u32,
                allowed: 1 << cpu,
                entry: None,
                pid: 0,
                slice: 0,
            },
        )
    });
    idle_loop()
}

const IDLE_NAMES: [&str; 8] = [
    "swapper/0",
    "swapper/1",
    "swapper/2",
    "swapper/3",
    "swapper/4",
    "swapper/5",
    "swapper/6",
    "swapper/7",
];
const _: () = assert!(IDLE_NAMES.len() == MAX_CPUS);

/// cpu_idle(): runs whatever is runnable, else halts until an interrupt
/// (a tick, or the reschedule IPI a wake-up sends).
fn idle_loop() -> ! {
    loop {
        schedule();
        local_irq_disable();
        let me = smp_processor_id().index();
        if with_rq(|rq| rq.runnable_on(me)) {
            local_irq_enable();
        } else {
            // Interrupts come back on with the halt: a wake-up between the
            // check and the `hlt` still ends it. No tick meanwhile, unless
            // a timer needs it: a wake-up comes by IPI.
            let stopped = time::nohz_idle_enter();
            safe_halt();
            if stopped {
                time::nohz_idle_exit();
            }
        }
    }
}

/// kthread_create() + wake_up_process(): a thread running `entry(arg)` on
/// the CPUs of `allowed`, runnable at once.
pub fn spawn(
    name: &'static str,
    entry: fn(u64),
    arg: u64,
    allowed: u64,
) -> Result<Tid, SpawnError> {
    let stack = KernelStack::new().map_err(|_| SpawnError::NoMemory)?;
    start_thread(name, (entry, arg), allowed, 0, stack).map_err(|(e, _)| e)
}

/// wake_up_new_task() for user process `pid`, whose kernel stack fork
/// allocated: a thread running `entry(pid)` on any CPU. The stack comes
/// back when no thread slot is free.
pub fn spawn_user(
    name: &'static str,
    entry: fn(u64),
    pid: u32,
    stack: KernelStack,
) -> Result<Tid, (SpawnError, KernelStack)> {
    start_thread(name, (entry, u64::from(pid)), u64::MAX, pid, stack)
}

fn start_thread(
    name: &'static str,
    entry: (fn(u64), u64),
    allowed: u64,
    pid: u32,
    stack: KernelStack,
) -> Result<Tid, (SpawnError, KernelStack)> {
    // sched_fork(): a new thread starts out on its parent's CPU.
    let cpu = smp_processor_id().index() as u32;
    let tid = with_rq(|rq| {
        // A slot is free once its last thread's stack was released.
        let Some(slot) = rq.free_slot() else {
            return Err((SpawnError::TooManyThreads, stack));
        };
        switch::install(slot, stack).map_err(|(_, stack)| (SpawnError::TooManyThreads, stack))?;
        KILLED[slot].store(false, Ordering::SeqCst);
        let generation = rq.threads[slot].generation.wrapping_add(1);
        rq.set(
            slot,
            Thread {
                state: State::Runnable,
                name,
                generation,
                cpu,
                allowed,
                entry: Some(entry),
                pid,
                slice: 0,
            },
        );
        Ok(rq.tid(slot))
    })?;
    kick_idle_cpus(allowed);
    Ok(tid)
}

/// Where a new thread starts, on its own stack (ret_from_fork()).
pub fn kthread_entry(left: usize) -> ! {
    finish_task_switch(left);
    let me = current_slot();
    let entry = with_rq(|rq| rq.threads[me].entry.take());
    local_irq_enable();
    if let Some((func, arg)) = entry {
        func(arg);
    }
    exit()
}

/// do_exit(): the thread is done; its stack is freed by the next thread to
/// run on this CPU, which then wakes its joiners.
pub fn exit() -> ! {
    local_irq_disable();
    let me = current_slot();
    with_rq(|rq| rq.set_state(me, State::Dead));
    schedule();
    unreachable!("a dead thread was scheduled again");
}

/// Woken whenever an exited thread's stack is freed.
static EXITED: wait::WaitQueue = wait::WaitQueue::new();

/// Sleeps until thread `tid` has exited and its stack is freed.
pub fn join(tid: Tid) -> Result<(), wait::SleepError> {
    EXITED.wait_event("join", || {
        with_rq(|rq| {
            let t = &rq.threads[tid.slot];
            t.generation != tid.generation || t.state == State::Unused
        })
    })
}

/// Sleeps until `condition` holds, checking it again each time a thread
/// has exited and its slot is free (what init waits on: a child's death,
/// and room to start a task that waits for a thread).
pub fn wait_for_exits(
    wchan: &'static str,
    condition: impl FnMut() -> bool,
) -> Result<(), wait::SleepError> {
    EXITED.wait_event(wchan, condition)
}

/// Whether a thread slot is free for a new thread.
pub fn has_free_slot() -> bool {
    with_rq(|rq| rq.free_slot().is_some())
}

/// set_task_comm() for the running thread (exec): the name the host's
/// thread table shows.
pub fn set_name(name: &'static str) {
    let me = current_slot();
    with_rq(|rq| rq.threads[me].name = name);
}

/// schedule(): gives this CPU to the next runnable thread, if there is
/// another; returns when this thread runs again (on whichever CPU). A
/// thread that set itself Sleeping or Dead stays off the CPU until woken.
pub fn schedule() {
    __schedule();
}

/// schedule(), saying whether another thread ran meanwhile.
fn __schedule() -> bool {
    let irqs = local_irq_save();
    let me = smp_processor_id().index();
    let prev = current_slot();
    NEED_RESCHED[me].store(false, Ordering::Relaxed);
    let (next, pid) = with_rq(|rq| {
        let next = rq.pick(me, prev);
        if next != prev && rq.threads[prev].state == State::Running {
            rq.set_state(prev, State::Runnable);
        }
        // Also when `prev` itself was picked: it may have been woken
        // between setting itself asleep and this call.
        rq.set_state(next, State::Running);
        rq.threads[next].cpu = me as u32;
        if next != prev {
            rq.threads[next].slice = TIMESLICE_TICKS;
        }
        (next, rq.threads[prev].pid)
    });
    if next == prev {
        return false;
    }
    count(&EVENTS.context_switches, 1);
    // switch_mm(), in two halves: this thread takes the tables it runs on
    // with it, and loads them again once resumed, on whichever CPU.
    let tables = paging::suspend_user_tables();
    if pid != 0 {
        crate::process::switched_out(pid);
    }
    let left = switch::switch_to(next);
    finish_task_switch(left);
    paging::resume_user_tables(tables);
    if pid != 0 {
        crate::process::switched_in(pid);
    }
    drop(irqs);
    true
}

/// exit_to_user_mode_loop(): before a return to ring 3, a thread the tick
/// (or a wake-up) asked to give up its CPU does so, and one with a fatal
/// signal pending exits instead (get_signal() -> do_group_exit()).
/// Interrupts are off.
pub fn exit_to_user_mode() {
    while NEED_RESCHED[smp_processor_id().index()].load(Ordering::Relaxed) {
        if __schedule() {
            count(&EVENTS.user_preemptions, 1);
        }
    }
    if fatal_signal_pending() {
        // The exit sleeps for the mm's lock and sends IPIs.
        local_irq_enable();
        crate::process::exit_killed();
    }
}

/// signal_wake_up() for a SIGKILL: thread `tid` exits at its next return
/// to user space. Asleep, it is woken (its sleep ends early); running on
/// another CPU, that CPU is kicked (kick_process()) so it returns soon.
pub fn kill(tid: Tid) {
    let me = smp_processor_id().index();
    let kick = with_rq(|rq| {
        let t = &rq.threads[tid.slot];
        if t.generation != tid.generation || matches!(t.state, State::Unused | State::Dead) {
            return None;
        }
        KILLED[tid.slot].store(true, Ordering::SeqCst);
        match t.state {
            State::Sleeping(_) => {
                let allowed = t.allowed;
                rq.set_state(tid.slot, State::Runnable);
                Some(Kick::Idle(allowed))
            }
            State::Running if t.cpu as usize != me => Some(Kick::Cpu(t.cpu as usize)),
            _ => None,
        }
    });
    match kick {
        Some(Kick::Cpu(cpu)) => smp::send_reschedule(cpu),
        Some(Kick::Idle(allowed)) => kick_idle_cpus(allowed),
        None => {}
    }
}

/// Whom `kill` sends the reschedule IPI.
enum Kick {
    /// The CPU the thread runs on.
    Cpu(usize),
    /// An idle CPU that may run the thread just woken.
    Idle(u64),
}

/// fatal_signal_pending(current).
pub fn fatal_signal_pending() -> bool {
    KILLED[current_slot()].load(Ordering::SeqCst)
}

/// finish_task_switch(): on the resumed thread's stack, the thread it
/// replaced (`left`) is off its CPU; a dead one's stack is freed, and only
/// then is its slot free and its joiners woken.
fn finish_task_switch(left: usize) {
    if with_rq(|rq| rq.threads[left].state) != State::Dead {
        return;
    }
    drop(switch::release(left));
    with_rq(|rq| rq.set_state(left, State::Unused));
    EXITED.wake_up();
}

/// Makes a sleeping thread runnable (try_to_wake_up()) and kicks an idle
/// CPU that may run it.
pub fn wake_up_slot(slot: usize) {
    let allowed = with_rq(|rq| {
        if let State::Sleeping(_) = rq.threads[slot].state {
            rq.set_state(slot, State::Runnable);
            Some(rq.threads[slot].allowed)
        } else {
            None
        }
    });
    if let Some(allowed) = allowed {
        kick_idle_cpus(allowed);
    }
}

/// Sends the reschedule IPI to every other idle CPU of `allowed`
/// (resched_curr() on an idle CPU).
fn kick_idle_cpus(allowed: u64) {
    let me = smp_processor_id().index();
    let idle = smp::cpus_of(smp::online_mask() & allowed)
        .filter(|&cpu| cpu != me && switch::slot_on(cpu) == cpu);
    for cpu in idle {
        smp::send_reschedule(cpu);
    }
}

/// A time slice, in ticks: 2.4's NICE_TO_TICKS(0) at HZ 100 (60 ms).
const TIMESLICE_TICKS: u32 = 6;

/// scheduler_tick(): the running thread has used up its time slice (or is
/// the idle thread) and another waits for this CPU, so it should give the
/// CPU up at its next chance.
pub fn tick() {
    let me = smp_processor_id().index();
    let running = current_slot();
    let expired = with_rq(|rq| {
        let t = &mut rq.threads[running];
        t.slice = t.slice.saturating_sub(1);
        (t.slice == 0 || running < MAX_CPUS) && rq.runnable_on(me)
    });
    if expired {
        NEED_RESCHED[me].store(true, Ordering::Relaxed);
    }
}

/// The reschedule IPI: the idle loop picks up the woken thread.
pub fn reschedule_interrupt() {
    NEED_RESCHED[smp_processor_id().index()].store(true, Ordering::Relaxed);
}

/// cond_resched(): yields if the tick asked for it.
pub fn cond_resched() {
    let me = smp_processor_id().index();
    if NEED_RESCHED[me].load(Ordering::Relaxed) && can_sleep_here().is_ok() {
        schedule();
    }
}

/// Sets the running thread asleep on `wchan`, under the run-queue lock
/// (set_current_state(TASK_UNINTERRUPTIBLE)); it leaves the CPU at its
/// next `schedule()` unless woken first.
fn set_current_sleeping(wchan: &'static str) {
    let me = current_slot();
    with_rq(|rq| rq.set_state(me, State::Sleeping(wchan)));
}

/// set_current_state(TASK_RUNNING).
fn set_current_running() {
    let me = current_slot();
    with_rq(|rq| rq.set_state(me, State::Running));
}

/// The scheduler ksync's wait queues, sleeping locks and sleep timers
/// sleep and wake with.
pub struct Sched;

impl ksync::Scheduler for Sched {
    type NoSleep = AtomicContext;

    #[track_caller]
    fn might_sleep() -> Result<(), AtomicContext> {
        might_sleep()
    }

    fn can_sleep() -> bool {
        can_sleep_here().is_ok()
    }

    fn current_slot() -> usize {
        current_slot()
    }

    fn set_current_sleeping(wchan: &'static str) {
        set_current_sleeping(wchan)
    }

    fn set_current_running() {
        set_current_running()
    }

    fn schedule() {
        schedule()
    }

    fn wake_up_slot(slot: usize) {
        wake_up_slot(slot)
    }
}

/// preempt_disable().
pub fn preempt_disable() {
    PREEMPT_COUNT[smp_processor_id().index()].fetch_add(1, Ordering::Relaxed);
}

/// preempt_enable().
pub fn preempt_enable() {
    PREEMPT_COUNT[smp_processor_id().index()].fetch_sub(1, Ordering::Relaxed);
}

/// irq_enter()/irq_exit() around an interrupt handler.
pub fn irq_enter() {
    PREEMPT_COUNT[smp_processor_id().index()].fetch_add(HARDIRQ_OFFSET, Ordering::Relaxed);
}

pub fn irq_exit() {
    PREEMPT_COUNT[smp_processor_id().index()].fetch_sub(HARDIRQ_OFFSET, Ordering::Relaxed);
}

/// migrate_disable(): kmap_local slots are this CPU's, so their holder must
/// stay here (and, since a switch does not save them, awake).
pub fn migrate_disable() {
    MIGRATE_DISABLE[smp_processor_id().index()].fetch_add(1, Ordering::Relaxed);
}

pub fn migrate_enable() {
    MIGRATE_DISABLE[smp_processor_id().index()].fetch_sub(1, Ordering::Relaxed);
}

/// Why the running code may not sleep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomicContext {
    /// Before the scheduler runs, or on an idle thread: nothing to switch to.
    NoScheduler,
    Interrupt,
    PreemptDisabled,
    IrqsDisabled,
    MigrateDisabled,
}

/// Whether the running code may sleep (as `might_sleep`, without the
/// report).
pub fn can_sleep_here() -> Result<(), AtomicContext> {
    if !RUNNING.load(Ordering::Acquire) {
        return Err(AtomicContext::NoScheduler);
    }
    let me = smp_processor_id().index();
    let count = PREEMPT_COUNT[me].load(Ordering::Relaxed);
    if count >= HARDIRQ_OFFSET {
        Err(AtomicContext::Interrupt)
    } else if count != 0 {
        Err(AtomicContext::PreemptDisabled)
    } else if !irqs_enabled() {
        Err(AtomicContext::IrqsDisabled)
    } else if MIGRATE_DISABLE[me].load(Ordering::Relaxed) != 0 {
        Err(AtomicContext::MigrateDisabled)
    } else if current_slot() < MAX_CPUS {
        Err(AtomicContext::NoScheduler)
    } else {
        Ok(())
    }
}

/// might_sleep() / __might_sleep(): checks that the caller may sleep, and
/// reports it as Linux does when it may not. The caller must then not
/// sleep (the report is the whole consequence: nothing is corrupted).
#[track_caller]
pub fn might_sleep() -> Result<(), AtomicContext> {
    let why = match can_sleep_here() {
        Ok(()) => return Ok(()),
        // Boot code and idle threads never sleep; not a bug to report.
        Err(AtomicContext::NoScheduler) => return Err(AtomicContext::NoScheduler),
        Err(why) => why,
    };
    let me = smp_processor_id().index();
    let location = core::panic::Location::caller();
    let preempt = PREEMPT_COUNT[me].load(Ordering::Relaxed);
    let slot = current_slot();
    let name = with_rq(|rq| rq.threads[slot].name);
    count(&EVENTS.sleep_in_atomic, 1);
    kprintln!(
        "BUG: sleeping function called from invalid context at {}:{}",
        location.file(),
        location.line()
    );
    kprintln!(
        "in_atomic(): {}, irqs_disabled(): {}, non_block: 0, pid: {slot}, name: {name}",
        u32::from(preempt != 0),
        u32::from(!irqs_enabled()),
    );
    kprintln!("preempt_count: {preempt:#x}, {why:?}");
    Err(why)
}

/// The state of thread `tid`, if it is still that thread.
pub fn state(tid: Tid) -> Option<State> {
    with_rq(|rq| {
        let t = &rq.threads[tid.slot];
        (t.generation == tid.generation).then_some(t.state)
    })
}

/// The thread table for the host's inspector (the vmcoreinfo descriptor):
/// where it is, each slot's layout and state values, the slot each CPU
/// runs. Written once at boot; the running kernel never touches it.
pub fn write_vmcoreinfo<W: fmt::Write>(w: &mut Writer<W>) -> fmt::Result {
    w.symbol(sym::THREADS, with_rq(|rq| rq.threads.as_ptr() as u64))?;
    w.length(off::THREAD, MAX_THREADS)?;
    w.size(off::THREAD, size_of::<Thread>())?;
    w.offset(off::THREAD_NAME, offset_of!(Thread, name))?;
    w.offset(off::THREAD_STATE, offset_of!(Thread, state))?;
    w.offset(
        off::THREAD_WCHAN,
        offset_of!(Thread, state) + WCHAN_IN_STATE,
    )?;
    w.offset(off::THREAD_CPU, offset_of!(Thread, cpu))?;
    w.offset(off::THREAD_ALLOWED, offset_of!(Thread, allowed))?;
    for (name, value) in [
        (num::THREAD_UNUSED, tag::UNUSED),
        (num::THREAD_RUNNING, tag::RUNNING),
        (num::THREAD_RUNNABLE, tag::RUNNABLE),
        (num::THREAD_SLEEPING, tag::SLEEPING),
        (num::THREAD_DEAD, tag::DEAD),
    ] {
        w.number(name, value.into())?;
    }
    w.symbol(sym::CURRENT_SLOT, switch::current_slots_address())?;
    w.length(off::CURRENT_SLOT, MAX_CPUS)?;
    w.offset(off::WAIT_QUEUE_WAITERS, wait::WAITERS_OFFSET)?;
    w.length(off::WAIT_QUEUE_WAITERS, SLOT_WORDS)
}
