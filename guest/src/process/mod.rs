//! Processes: tasks with their own address space (PML4 whose kernel quarter
//! is the shared kernel page directory), VMAs in a red-black tree, demand
//! paging, system calls. Each task runs on a thread of the scheduler, on
//! any CPU, concurrently with the others. Tasks come from init (`spawn`,
//! the programs the command line names) or from fork, which copies its
//! parent's address space copy-on-write; exec replaces a task's address
//! space with a program from the initramfs. A task that exits stays a
//! zombie until its parent reaps it with wait4; the children of a task
//! that exits go to init, which reaps them (`run_queue`).
//!
//! How many tasks there are is a matter of memory, up to the thread
//! table's MAX_THREADS: task_structs come from their slab cache; fork
//! past the thread slots fails with EAGAIN (as past Linux's max_threads),
//! and a program init starts waits for a slot.
//!
//! A process may have several threads (clone with CLONE_THREAD): each is
//! a task of its own, with its own pid (its TID) and its process's pid as
//! its tgid, sharing the process's address space (one [`Mm`], counted in
//! mm_users) and running on any CPU. The first thread, the group leader,
//! keeps what the threads share (signal_struct's part: how many still
//! live, and the group's exit). A thread that exits goes away at once
//! (it reaps itself, as a thread's exit_signal of -1 does); the process
//! ends, and its parent may reap it, when its last thread is gone.
//! exit_group (or a fatal signal) kills the other threads: each exits at
//! its next return to user space, and one asleep is woken to do so.

pub mod address_space;
pub mod fault;
pub mod objects;
pub mod syscall;
mod table;

use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU32, Ordering};

use abi::linux::signal::SIGKILL;
use mm::slub::SlabError;
use spin::Mutex;

use crate::arch::mem::SlabBox;
use crate::arch::switch::{self, current_slot, KernelStack, MAX_THREADS};
use crate::arch::trap::TrapFrame;
use crate::arch::user;
use crate::kprintln;
use crate::mm::events::{count, EVENTS};
use crate::programs::{self, Program};
use crate::sched::{self, wait::WaitQueue, Tid};
use address_space::{AddressSpace, Args, ExecError, Mm};
use objects::TaskStruct;
use table::{Links, TaskTable};

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// exit(code).
    Exited(i32),
    /// Killed by the kernel with this signal: SIGSEGV for a bad access,
    /// SIGKILL when no memory was left for it.
    Killed(u8),
}

impl ExitStatus {
    /// The status word wait4() stores (WIFEXITED with WEXITSTATUS in bits
    /// 8-15, or WIFSIGNALED with WTERMSIG in the low 7 bits).
    pub fn wait_status(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => (code & 0xff) << 8,
            ExitStatus::Killed(signal) => i32::from(signal & 0x7f),
        }
    }
}

/// A task: it lives in its task_struct object (from task_struct_cachep),
/// whose first part is the [`TaskStruct`] the host reads.
#[repr(C)]
pub struct Task {
    pub ts: TaskStruct,
    pub name: &'static str,
    /// Its address space, until its thread starts and holds it.
    pub mm: Option<Mm>,
    /// How its process ended, once its last thread is gone (what wait4
    /// reports); set on the group leader.
    pub exit: Option<ExitStatus>,
    /// The parent's pid (0: init): its process's parent.
    pub ppid: u32,
    /// Its process's pid (the group leader's): its own for a leader.
    pub tgid: u32,
    /// What the process's threads share, kept in the leader.
    group: ThreadGroup,
    /// Where its thread enters ring 3: exec's entry point, or for fork's
    /// child its parent's registers at the fork, returning 0.
    entry: TrapFrame,
    /// The FS base it enters ring 3 with (its TLS: CLONE_SETTLS's, or its
    /// parent's).
    fs_base: u64,
    /// CLONE_CHILD_CLEARTID's address (0: none), until its thread starts.
    clear_child_tid: u64,
    /// Its kernel stack, from fork until its thread starts on it.
    stack: Option<KernelStack>,
    /// Its thread, once started.
    thread: Option<Tid>,
    /// wait_chldexit: it sleeps here in wait4() until a child exits.
    wait_chldexit: WaitQueue,
    links: Links,
    /// The next task in its pid-hash chain, which owns it.
    hash_next: Option<SlabBox<Task>>,
}

// The host reads a task_struct from its start: OFFSET(task_struct.X) are
// TaskStruct's offsets.
const _: () = assert!(offset_of!(Task, ts) == 0);

/// Bytes of a task_struct object (SIZE(task_struct)).
pub const TASK_STRUCT_SIZE: usize = size_of::<Task>();

impl Task {
    fn set_exit(&mut self, status: ExitStatus) {
        self.exit = Some(status);
        self.ts.state = TASK_ZOMBIE;
        self.ts.exit_code = status.wait_status();
    }
}

/// The part of signal_struct a thread group shares, in its leader.
#[derive(Clone, Copy, Debug, Default)]
struct ThreadGroup {
    /// signal->live: its threads that have not exited yet.
    live: u32,
    /// SIGNAL_GROUP_EXIT with group_exit_code: exit_group() or a fatal
    /// signal ended the process, every thread with it.
    group_exit: Option<ExitStatus>,
    /// The leader's own exit() while other threads run on (a zombie
    /// leader, delay_group_leader()).
    leader_exit: Option<ExitStatus>,
}

pub const TASK_RUNNABLE: u32 = 0;
pub const TASK_RUNNING: u32 = 1;
/// Exited, until its parent reaps it (EXIT_ZOMBIE).
pub const TASK_ZOMBIE: u32 = 2;

/// Every task, until it is reaped. A started task's address space is not
/// here but with its thread (`RUNNING`), so faults and system calls of
/// different processes never wait for one another.
static TASKS: Mutex<TaskTable> = Mutex::new(TaskTable::new());
/// init's wait_chldexit: woken when one of its children (or an orphan it
/// adopts) is a zombie.
static INIT_CHLDEXIT: WaitQueue = WaitQueue::new();
static NEXT_PID: AtomicU32 = AtomicU32::new(1);

/// fork_init(): the task_struct, mm_struct and vm_area_struct caches,
/// and an empty task list (INIT_LIST_HEAD(&init_task.tasks)).
pub fn fork_init() -> Result<(), SlabError> {
    objects::fork_init(TASK_STRUCT_SIZE, Mm::OBJECT_SIZE)?;
    TASKS.lock().init();
    Ok(())
}

/// The address of init_task, whose `tasks` heads the task list.
pub fn init_task_address() -> u64 {
    TASKS.lock().init_task_address()
}

/// What a running thread of a process holds: one of the users of its
/// address space (whose own lock serializes the threads that share it).
/// Only the thread itself looks at it (a context switch takes the
/// thread's tables along without it).
pub struct Running {
    /// Its process's pid (its tgid).
    pub pid: u32,
    /// Its own (gettid()).
    pub tid: u32,
    pub name: &'static str,
    pub mm: Mm,
    /// CLONE_CHILD_CLEARTID: where its exit writes 0 (0: nowhere).
    clear_child_tid: u64,
}

/// Per thread slot, the process that thread runs, from its start to its
/// exit (None: the thread runs none).
static RUNNING: [Mutex<Option<Running>>; MAX_THREADS] = [const { Mutex::new(None) }; MAX_THREADS];

/// Runs `f` on the current thread, under its slot's spin lock: `f` must
/// not sleep (to lock the address space, take `current_mm` first).
/// Panics if the running thread runs no process: only the system-call and
/// fault paths call this, and they only run for one.
pub fn with_current<R>(f: impl FnOnce(&mut Running) -> R) -> R {
    let mut running = RUNNING[current_slot()].lock();
    f(running.as_mut().expect("no current task"))
}

/// get_task_mm(current): one more user of the current address space, to
/// lock (which may sleep) without holding the thread's slot.
pub fn current_mm() -> Mm {
    with_current(|t| t.mm.clone())
}

/// Runs `f` on the task with `pid`, if it exists.
pub fn with_task<R>(pid: u32, f: impl FnOnce(&mut Task) -> R) -> Option<R> {
    TASKS.lock().get(pid).map(f)
}

/// Where a new task starts and whose it is.
struct NewTask {
    /// Its parent's pid (0: init).
    ppid: u32,
    /// The process it is a thread of; None: a new process of its own.
    thread_of: Option<u32>,
    name: &'static str,
    mm: Mm,
    entry: TrapFrame,
    fs_base: u64,
    clear_child_tid: u64,
}

/// copy_process()'s last steps: a task_struct (alloc_task_struct_node()
/// on task_struct_cachep), a kernel stack and the next pid, for a new
/// process (a child of `ppid`, 0: init) or a new thread of a process,
/// entering ring 3 with `entry` once its thread starts. Out of memory,
/// everything given and taken so far goes back.
fn new_task(new: NewTask) -> Result<u32, ExecError> {
    let cache = objects::caches()
        .ok_or(ExecError::Slab(SlabError::NoSuchCache))?
        .task_struct;
    let stack = KernelStack::new()?;
    let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
    let tgid = new.thread_of.unwrap_or(pid);
    let task = Task {
        ts: TaskStruct {
            pid,
            state: TASK_RUNNABLE,
            mm: new.mm.mm_obj(),
            comm: TaskStruct::comm(new.name),
            tgid,
            ..TaskStruct::default()
        },
        name: new.name,
        entry: new.entry,
        mm: Some(new.mm),
        exit: None,
        ppid: new.ppid,
        tgid,
        group: ThreadGroup {
            live: 1,
            ..ThreadGroup::default()
        },
        fs_base: new.fs_base,
        clear_child_tid: new.clear_child_tid,
        stack: Some(stack),
        thread: None,
        wait_chldexit: WaitQueue::new(),
        links: Links::default(),
        hash_next: None,
    };
    let task = SlabBox::new(cache, task).map_err(|(e, _)| ExecError::from(e))?;
    let mut tasks = TASKS.lock();
    if let Some(leader) = new.thread_of.and_then(|tgid| tasks.get(tgid)) {
        leader.group.live += 1;
    }
    tasks.insert(task);
    Ok(pid)
}

/// Creates a task of init's running `program` (fork + exec in one step):
/// a fresh address space with the program's code, a stack and a heap
/// base. It runs once `run_queue` starts it. Out of memory is
/// `ExecError::NoMemory`, with everything taken so far given back.
pub fn spawn(program: &Program) -> Result<u32, ExecError> {
    let mm = AddressSpace::exec(program, &Args::program(program.name))?;
    let entry = mm.lock().entry_frame();
    new_task(NewTask {
        ppid: 0,
        thread_of: None,
        name: program.name,
        mm,
        entry,
        fs_base: 0,
        clear_child_tid: 0,
    })
}

/// What the new task of a clone shares with the current one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// fork(): a new process with a copy-on-write copy of the address
    /// space (dup_mm()).
    Nothing,
    /// CLONE_VM: a new process in the same address space.
    Mm,
    /// CLONE_VM | CLONE_THREAD: a new thread of this process.
    Thread,
}

/// What clone() asks for.
pub struct CloneArgs {
    pub sharing: Sharing,
    /// The new task's registers: the caller's at the clone, on its new
    /// stack; it returns 0 from the same system call.
    pub frame: TrapFrame,
    /// Its FS base (its TLS).
    pub fs_base: u64,
    /// CLONE_PARENT_SETTID: where the new pid goes in the caller's
    /// memory (0: nowhere).
    pub parent_tid: u64,
    /// CLONE_CHILD_SETTID: where it goes in the new task's memory.
    pub child_set_tid: u64,
    /// CLONE_CHILD_CLEARTID: where the new task's exit writes 0.
    pub child_clear_tid: u64,
}

/// copy_process() + wake_up_new_task(): a new task as `args` asks, its
/// pid stored where asked before it runs (on any CPU). Returns that pid
/// (the TID of a thread). Out of memory, or of thread slots (EAGAIN),
/// everything taken for it goes back.
pub fn clone(args: &CloneArgs) -> Result<u32, ExecError> {
    if !sched::has_free_slot() {
        return Err(ExecError::NoThread);
    }
    let (tgid, name, mm) = with_current(|t| (t.pid, t.name, t.mm.clone()));
    let (ppid, thread_of, child_mm) = match args.sharing {
        Sharing::Nothing => (tgid, None, mm.lock().dup()?),
        Sharing::Mm => (tgid, None, mm.clone()),
        Sharing::Thread => (
            with_task(tgid, |t| t.ppid).unwrap_or(0),
            Some(tgid),
            mm.clone(),
        ),
    };
    let pid = new_task(NewTask {
        ppid,
        thread_of,
        name,
        mm: child_mm.clone(),
        entry: TrapFrame {
            rax: 0,
            ..args.frame
        },
        fs_base: args.fs_base,
        clear_child_tid: args.child_clear_tid,
    })?;
    // As copy_process() and schedule_tail() store them; a bad address
    // changes nothing (Linux ignores the fault too).
    let tid = pid.to_le_bytes();
    if args.parent_tid != 0 {
        let _ = syscall::copy_to_user_in(&mm, args.parent_tid, &tid);
    }
    if args.child_set_tid != 0 {
        let _ = syscall::copy_to_user_in(&child_mm, args.child_set_tid, &tid);
    }
    drop((mm, child_mm));
    if !wake_up_new_task(pid) {
        // Another fork took the last slot meanwhile.
        let child = unhash_task(&mut TASKS.lock(), pid);
        drop(child);
        return Err(ExecError::NoThread);
    }
    count(&EVENTS.forks, 1);
    Ok(pid)
}

/// Takes task `pid` out of the table (__unhash_process()), one thread
/// fewer for its process.
fn unhash_task(tasks: &mut TaskTable, pid: u32) -> Option<SlabBox<Task>> {
    let task = tasks.remove(pid)?;
    if task.tgid != pid {
        if let Some(leader) = tasks.get(task.tgid) {
            leader.group.live -= 1;
        }
    }
    Some(task)
}

/// execve(): the current task runs `program` with `args` from now on, in
/// a new address space; the old one goes away (exec_mmap() + mmput()).
/// Returns the frame its thread enters ring 3 with. On failure the task
/// goes on in its old address space.
pub fn exec(program: &Program, args: &Args) -> Result<TrapFrame, ExecError> {
    let me = current_pid();
    if with_task(me, |t| t.group.live) != Some(1) {
        // de_thread() is not implemented: the other threads would have
        // to be killed first.
        return Err(ExecError::Threads);
    }
    let mm = AddressSpace::exec(program, args)?;
    let frame = mm.lock().entry_frame();
    let mm_obj = mm.mm_obj();
    let (pid, old) = with_current(|t| {
        t.name = program.name;
        (t.pid, core::mem::replace(&mut t.mm, mm.clone()))
    });
    old.lock().deactivate();
    mm.lock().activate();
    drop((old, mm));
    with_task(pid, |t| {
        t.name = program.name;
        t.ts.comm = TaskStruct::comm(program.name);
        t.ts.mm = mm_obj;
    });
    sched::set_name(program.name);
    switch::clear_user_segments();
    Ok(frame)
}

/// getpid(): the current process's pid (its threads' tgid).
pub fn current_pid() -> u32 {
    with_current(|t| t.pid)
}

/// gettid(): the current thread's own pid.
pub fn current_tid() -> u32 {
    with_current(|t| t.tid)
}

/// getppid(): the parent's pid, 0 for init's children.
pub fn current_ppid() -> u32 {
    let pid = current_pid();
    with_task(pid, |t| t.ppid).unwrap_or(0)
}

/// Which children wait4() may reap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitFor {
    Any,
    Pid(u32),
}

/// Why wait4() returned without a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitError {
    /// ECHILD: no child matches.
    NoChild,
    /// WNOHANG, and none of the matching children has exited yet.
    NoneExited,
    /// EINTR: a fatal signal ended the wait.
    Interrupted,
}

/// do_wait(): reaps a child of the current process that matches `which`
/// and has exited, sleeping until one does unless `nohang` (any thread
/// of the process may reap its children; they sleep on the leader's
/// wait_chldexit). Returns its pid and how it ended.
pub fn wait(which: WaitFor, nohang: bool) -> Result<(u32, ExitStatus), WaitError> {
    let me = current_pid();
    let matches = |t: &Task| which == WaitFor::Any || which == WaitFor::Pid(t.ts.pid);
    loop {
        let mut tasks = TASKS.lock();
        if let Some(pid) = tasks
            .find_child(me, |t| matches(t) && t.exit.is_some())
            .map(|t| t.ts.pid)
        {
            let task = tasks.remove(pid);
            drop(tasks);
            return task.map(release_task).ok_or(WaitError::NoChild);
        }
        if tasks.find_child(me, matches).is_none() {
            return Err(WaitError::NoChild);
        }
        if nohang {
            return Err(WaitError::NoneExited);
        }
        // Queued while the table is locked, so the child that exits (it
        // takes the lock to say so) finds this task asleep.
        let queued = tasks
            .get(me)
            .map(|t| t.wait_chldexit.prepare_to_wait("wait4"));
        drop(tasks);
        if queued != Some(Ok(())) {
            // Only process context calls this, and it may sleep.
            panic!("wait4 where it cannot sleep");
        }
        // A kill since the table was locked found this thread awake.
        if !sched::fatal_signal_pending() {
            sched::schedule();
        }
        if let Some(t) = TASKS.lock().get(me) {
            t.wait_chldexit.finish_wait();
        }
        if sched::fatal_signal_pending() {
            return Err(WaitError::Interrupted);
        }
    }
}

/// release_task(): a reaped task's thread stack is freed once the thread
/// is off its CPU, then its task_struct goes back to its cache. Returns
/// its pid and how it ended.
fn release_task(task: SlabBox<Task>) -> (u32, ExitStatus) {
    if let Some(tid) = task.thread {
        let _ = sched::join(tid);
    }
    (
        task.ts.pid,
        task.exit.unwrap_or(ExitStatus::Killed(SIGKILL)),
    )
}

/// init's side of every task it started and every orphan it adopted:
/// starts the tasks waiting for a thread, and reaps each of its children
/// once it has exited, until it has none. Calls `done` with (pid, name,
/// status) for each, in the order they end.
pub fn run_queue(mut done: impl FnMut(u32, &'static str, ExitStatus)) {
    loop {
        start_tasks();
        let waiting = waiting_for_thread(&mut TASKS.lock());
        let ready = || {
            let mut tasks = TASKS.lock();
            tasks.find_child(0, |t| t.exit.is_some()).is_some()
                || tasks.find_child(0, |_| true).is_none()
                || (waiting && sched::has_free_slot())
        };
        // A task waiting for a thread needs a slot: any thread's exit may
        // free one. Else only a child's death concerns init.
        let slept = if waiting {
            sched::wait_for_exits("wait4", ready)
        } else {
            INIT_CHLDEXIT.wait_event("wait4", ready)
        };
        if slept.is_err() {
            // Only init calls this, and it may sleep: a bug, not a state.
            panic!("run_queue called where it cannot sleep");
        }
        let reaped = {
            let mut tasks = TASKS.lock();
            match tasks.find_child(0, |t| t.exit.is_some()).map(|t| t.ts.pid) {
                Some(pid) => tasks.remove(pid),
                None if tasks.find_child(0, |_| true).is_none() => return,
                None => None,
            }
        };
        if let Some(task) = reaped {
            let name = task.name;
            let (pid, status) = release_task(task);
            done(pid, name, status);
        }
    }
}

/// Whether some task still waits for a thread.
fn waiting_for_thread(tasks: &mut TaskTable) -> bool {
    let mut waiting = false;
    tasks.for_each(|t| {
        waiting = t.stack.is_some();
        !waiting
    });
    waiting
}

/// wake_up_new_task(): `pid` runs on a thread of its own, on any CPU.
/// False when no thread slot is free (the task keeps its stack).
fn wake_up_new_task(pid: u32) -> bool {
    let mut tasks = TASKS.lock();
    let Some(task) = tasks.get(pid) else {
        return false;
    };
    let Some(stack) = task.stack.take() else {
        return false;
    };
    match sched::spawn_user(task.name, user_thread, pid, stack) {
        Ok(tid) => {
            task.thread = Some(tid);
            true
        }
        Err((_, stack)) => {
            task.stack = Some(stack);
            false
        }
    }
}

/// Starts every task that waits for a thread, as long as thread slots
/// last. A task that cannot get one while no other task runs never will,
/// and is ended.
fn start_tasks() {
    let mut tasks = TASKS.lock();
    let mut running = false;
    let mut waiting = [0u32; 16];
    let mut n = 0;
    tasks.for_each(|t| {
        running |= t.thread.is_some() && t.exit.is_none();
        if t.stack.is_some() && n < waiting.len() {
            waiting[n] = t.ts.pid;
            n += 1;
        }
        true
    });
    for &pid in &waiting[..n] {
        let Some(task) = tasks.get(pid) else { continue };
        let Some(stack) = task.stack.take() else {
            continue;
        };
        match sched::spawn_user(task.name, user_thread, pid, stack) {
            Ok(tid) => {
                task.thread = Some(tid);
                running = true;
            }
            Err((_, stack)) if running => {
                task.stack = Some(stack);
                break;
            }
            Err((e, _)) => {
                kprintln!("[{pid}:{}] cannot start: {e:?}", task.name);
                task.mm = None;
                task.set_exit(ExitStatus::Killed(SIGKILL));
                let ppid = Some(task.ppid);
                wake_parent(&mut tasks, ppid);
            }
        }
    }
}

/// A task's thread: takes its address space from the task, loads it and
/// enters ring 3 for good (the exec half of start_thread(), or
/// ret_from_fork()). It leaves only through `exit_thread` or
/// `exit_group`.
fn user_thread(tid: u64) {
    let tid = tid as u32;
    let taken = with_task(tid, |t| {
        t.ts.state = TASK_RUNNING;
        let start = (t.entry, t.fs_base);
        (t.mm.take(), t.tgid, t.name, t.clear_child_tid, start)
    });
    let Some((Some(mm), tgid, name, clear_child_tid, (entry, fs_base))) = taken else {
        return;
    };
    mm.lock().activate();
    *RUNNING[current_slot()].lock() = Some(Running {
        pid: tgid,
        tid,
        name,
        mm,
        clear_child_tid,
    });
    if with_task(tgid, |leader| leader.group.group_exit.is_some()) == Some(true) {
        // exit_group() ran while this thread was being made.
        exit_killed();
    }
    user::enter_user(&entry, fs_base);
}

/// __wake_up_parent(): the parent (`ppid`, 0 for init) of a task that
/// just became a zombie may reap it now.
fn wake_parent(tasks: &mut TaskTable, ppid: Option<u32>) {
    match ppid {
        Some(0) => INIT_CHLDEXIT.wake_up(),
        Some(ppid) => {
            if let Some(parent) = tasks.get(ppid) {
                parent.wait_chldexit.wake_up();
            }
        }
        None => {}
    }
}

/// task_struct.state for the host, unless the task has exited.
fn set_state(pid: u32, state: u32) {
    if let Some(t) = TASKS.lock().get(pid) {
        if t.exit.is_none() {
            t.ts.state = state;
        }
    }
}

/// Task `pid`'s thread leaves its CPU: its task_struct says so.
pub fn switched_out(pid: u32) {
    set_state(pid, TASK_RUNNABLE);
}

/// Task `pid`'s thread runs again.
pub fn switched_in(pid: u32) {
    set_state(pid, TASK_RUNNING);
}

/// exit(): ends the current thread; its process ends with `status`
/// if it was the last (or the leader's `status`, if it went first).
pub fn exit_thread(status: ExitStatus) -> ! {
    do_exit(status, false)
}

/// do_group_exit(): ends the current process with `status`: every other
/// thread is killed (zap_other_threads()), then this one exits.
pub fn exit_group(status: ExitStatus) -> ! {
    do_exit(status, true)
}

/// The exit of a thread that a fatal signal (another thread's
/// exit_group) caught: its process's status is the group's.
pub fn exit_killed() -> ! {
    do_exit(ExitStatus::Killed(SIGKILL), true)
}

/// do_exit(): ends the current thread (and with `group` its process's
/// other threads). mm_release() writes 0 at its clear_child_tid (no futex
/// is woken: this kernel has none; a joiner polls), exit_mm() leaves the
/// address space (its last user tears it down). exit_notify(): the last
/// thread of a process makes it a zombie, gives its children to init and
/// wakes its parent to reap it; a thread that is not the leader reaps
/// itself. The scheduler frees the kernel stack once the thread is off
/// its CPU. Called from system-call and fault context, with no locks
/// held.
fn do_exit(status: ExitStatus, group: bool) -> ! {
    let running = RUNNING[current_slot()]
        .lock()
        .take()
        .expect("no current task");
    let Running {
        pid: tgid,
        tid,
        mm,
        clear_child_tid,
        ..
    } = running;
    if group {
        zap_other_threads(&mut TASKS.lock(), tgid, tid, status);
    }
    if clear_child_tid != 0 && mm.users() > 1 {
        // A fault here changes nothing: the thread is going anyway.
        let _ = syscall::copy_to_user_in(&mm, clear_child_tid, &0u32.to_le_bytes());
    }
    mm.lock().deactivate();
    drop(mm);
    let reaped = {
        let mut tasks = TASKS.lock();
        let reaped = if tid == tgid {
            if let Some(leader) = tasks.get(tgid) {
                leader.group.leader_exit = Some(status);
                leader.ts.state = TASK_ZOMBIE;
            }
            None
        } else {
            unhash_task(&mut tasks, tid)
        };
        let last = tasks.get(tgid).map(|leader| {
            if tid == tgid {
                leader.group.live -= 1;
            }
            leader.group.live == 0
        });
        if last == Some(true) {
            process_exit_notify(&mut tasks, tgid, status);
        }
        reaped
    };
    // A thread's task_struct goes now; its stack once it is off its CPU.
    drop(reaped);
    sched::exit()
}

/// zap_other_threads(): the process `tgid` ends with `status` (unless it
/// is ending already: the first exit_group's status stands), and each of
/// its threads but `me` gets a SIGKILL.
fn zap_other_threads(tasks: &mut TaskTable, tgid: u32, me: u32, status: ExitStatus) {
    let Some(leader) = tasks.get(tgid) else {
        return;
    };
    leader.group.group_exit.get_or_insert(status);
    tasks.for_each_thread(tgid, |t| {
        if t.ts.pid != me {
            if let Some(thread) = t.thread {
                sched::kill(thread);
            }
        }
    });
}

/// exit_notify() for the last thread of process `tgid`: the process is a
/// zombie with its status (the group's exit, else the leader's own, else
/// the last thread's `status`), its children go to init, and its parent
/// is woken to reap it.
fn process_exit_notify(tasks: &mut TaskTable, tgid: u32, status: ExitStatus) {
    if tasks.reparent_children(tgid) > 0 {
        // Some may be zombies already, init's to reap now.
        INIT_CHLDEXIT.wake_up();
    }
    let ppid = tasks.get(tgid).map(|leader| {
        let group = leader.group;
        leader.set_exit(group.group_exit.or(group.leader_exit).unwrap_or(status));
        leader.ppid
    });
    wake_parent(tasks, ppid);
}

/// Runs the programs named on the command line (`run=demo,segv,...`), or the
/// default workload, and prints how each ended. Returns how many could not
/// start.
pub fn run_programs<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    let mut failures = 0;
    for name in names {
        let Some(program) = programs::find(name) else {
            kprintln!("run: no program named '{name}'");
            failures += 1;
            continue;
        };
        if let Err(e) = spawn(&program) {
            kprintln!("run: cannot start '{name}': {e}");
            failures += 1;
        }
    }
    run_queue(|pid, name, status| match status {
        ExitStatus::Exited(code) => kprintln!("[{pid}:{name}] exited with status {code}"),
        ExitStatus::Killed(_) => kprintln!("[{pid}:{name}] was killed"),
    });
    failures
}
