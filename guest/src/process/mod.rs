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

pub mod address_space;
pub mod fault;
pub mod objects;
pub mod syscall;
mod table;

use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU32, Ordering};

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

/// Signals a task can die of (the kernel sends no others).
pub const SIGKILL: u8 = 9;
pub const SIGSEGV: u8 = 11;

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
    pub exit: Option<ExitStatus>,
    /// The parent's pid (0: init).
    pub ppid: u32,
    /// Where its thread enters ring 3: exec's entry point, or for fork's
    /// child its parent's registers at the fork, returning 0.
    entry: TrapFrame,
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
    objects::fork_init(TASK_STRUCT_SIZE, size_of::<AddressSpace>())?;
    TASKS.lock().init();
    Ok(())
}

/// The address of init_task, whose `tasks` heads the task list.
pub fn init_task_address() -> u64 {
    TASKS.lock().init_task_address()
}

/// What a running process's thread holds: its address space, locked by
/// that thread alone while it faults or makes a system call (its mm
/// lock), and by its context switches.
pub struct Running {
    pub pid: u32,
    pub name: &'static str,
    pub mm: Mm,
}

/// Per thread slot, the process that thread runs, from its start to its
/// exit (None: the thread runs none).
static RUNNING: [Mutex<Option<Running>>; MAX_THREADS] = [const { Mutex::new(None) }; MAX_THREADS];

/// Runs `f` on the current process. Panics if the running thread runs
/// none: only the system-call and fault paths call this, and they only
/// run for a process.
pub fn with_current<R>(f: impl FnOnce(&mut Running) -> R) -> R {
    let mut running = RUNNING[current_slot()].lock();
    f(running.as_mut().expect("no current task"))
}

/// Runs `f` on the task with `pid`, if it exists.
pub fn with_task<R>(pid: u32, f: impl FnOnce(&mut Task) -> R) -> Option<R> {
    TASKS.lock().get(pid).map(f)
}

/// copy_process()'s last steps: a task_struct (alloc_task_struct_node()
/// on task_struct_cachep) for `mm`, a kernel stack and the next pid, as
/// a child of `ppid` (0: init), entering ring 3 with `entry` once its
/// thread starts. Out of memory, everything given and taken so far goes
/// back.
fn new_task(ppid: u32, name: &'static str, mm: Mm, entry: TrapFrame) -> Result<u32, ExecError> {
    let cache = objects::caches()
        .ok_or(ExecError::Slab(SlabError::NoSuchCache))?
        .task_struct;
    let stack = KernelStack::new()?;
    let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
    let task = Task {
        ts: TaskStruct {
            pid,
            state: TASK_RUNNABLE,
            mm: mm.mm_obj(),
            comm: TaskStruct::comm(name),
            ..TaskStruct::default()
        },
        name,
        entry,
        mm: Some(mm),
        exit: None,
        ppid,
        stack: Some(stack),
        thread: None,
        wait_chldexit: WaitQueue::new(),
        links: Links::default(),
        hash_next: None,
    };
    let task = SlabBox::new(cache, task).map_err(|(e, _)| ExecError::from(e))?;
    TASKS.lock().insert(task);
    Ok(pid)
}

/// Creates a task of init's running `program` (fork + exec in one step):
/// a fresh address space with the program's code, a stack and a heap
/// base. It runs once `run_queue` starts it. Out of memory is
/// `ExecError::NoMemory`, with everything taken so far given back.
pub fn spawn(program: &Program) -> Result<u32, ExecError> {
    let mm = AddressSpace::exec(program, &Args::program(program.name))?;
    let entry = mm.entry_frame();
    new_task(0, program.name, mm, entry)
}

/// fork(): a child of the current task with a copy-on-write copy of its
/// address space (dup_mm()), which returns 0 from the same system call
/// (`frame`, the caller's registers) once its thread runs on any CPU.
/// Returns the child's pid. Out of memory, or of thread slots (EAGAIN),
/// everything taken for the child goes back.
pub fn fork(frame: &TrapFrame) -> Result<u32, ExecError> {
    if !sched::has_free_slot() {
        return Err(ExecError::NoThread);
    }
    let (ppid, name, mm) = with_current(|t| Ok::<_, ExecError>((t.pid, t.name, t.mm.dup()?)))?;
    let child = TrapFrame { rax: 0, ..*frame };
    let pid = new_task(ppid, name, mm, child)?;
    if !wake_up_new_task(pid) {
        // Another fork took the last slot meanwhile.
        let child = TASKS.lock().remove(pid);
        drop(child);
        return Err(ExecError::NoThread);
    }
    count(&EVENTS.forks, 1);
    Ok(pid)
}

/// execve(): the current task runs `program` with `args` from now on, in
/// a new address space; the old one goes away (exec_mmap() + mmput()).
/// Returns the frame its thread enters ring 3 with. On failure the task
/// goes on in its old address space.
pub fn exec(program: &Program, args: &Args) -> Result<TrapFrame, ExecError> {
    let mm = AddressSpace::exec(program, args)?;
    let frame = mm.entry_frame();
    let mm_obj = mm.mm_obj();
    let (pid, old) = with_current(|t| {
        t.mm.deactivate();
        mm.activate();
        t.name = program.name;
        (t.pid, core::mem::replace(&mut t.mm, mm))
    });
    drop(old);
    with_task(pid, |t| {
        t.name = program.name;
        t.ts.comm = TaskStruct::comm(program.name);
        t.ts.mm = mm_obj;
    });
    sched::set_name(program.name);
    switch::clear_user_segments();
    Ok(frame)
}

/// The current task's pid (getpid(), and gettid(): each task is one
/// thread).
pub fn current_pid() -> u32 {
    with_current(|t| t.pid)
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
}

/// do_wait(): reaps a child of the current task that matches `which` and
/// has exited, sleeping until one does unless `nohang`. Returns its pid
/// and how it ended.
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
        sched::schedule();
        if let Some(t) = TASKS.lock().get(me) {
            t.wait_chldexit.finish_wait();
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
/// ret_from_fork()). It leaves only through `exit_current`.
fn user_thread(pid: u64) {
    let pid = pid as u32;
    let mut slot = RUNNING[current_slot()].lock();
    let taken = with_task(pid, |t| {
        t.ts.state = TASK_RUNNING;
        (t.mm.take(), t.name, t.entry)
    });
    let Some((Some(mm), name, entry)) = taken else {
        return;
    };
    mm.activate();
    *slot = Some(Running { pid, name, mm });
    drop(slot);
    user::enter_user(&entry);
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

/// The first half of switch_mm(), on a user thread about to leave its CPU:
/// this CPU goes back to swapper_pg_dir and leaves the mm's cpumask.
pub fn switch_mm_out(pid: u32) {
    match RUNNING[current_slot()].lock().as_ref() {
        Some(t) => t.mm.deactivate(),
        None => crate::arch::paging::activate_kernel_tables(),
    }
    set_state(pid, TASK_RUNNABLE);
}

/// The second half, on the user thread just resumed: this CPU joins the
/// mm's cpumask and loads its tables.
pub fn switch_mm_in(pid: u32) {
    if let Some(t) = RUNNING[current_slot()].lock().as_ref() {
        t.mm.activate();
    }
    set_state(pid, TASK_RUNNING);
}

/// do_exit(): ends the current task with `status`. exit_mm() runs here
/// (the CPU leaves the address space, whose last holder this is: every
/// mapping and table goes), its children go to init, and its parent is
/// woken to reap it; the scheduler frees the kernel stack once the
/// thread is off its CPU. Called from system-call and fault context, with
/// no locks held.
pub fn exit_current(status: ExitStatus) -> ! {
    let running = RUNNING[current_slot()]
        .lock()
        .take()
        .expect("no current task");
    running.mm.deactivate();
    let pid = running.pid;
    drop(running);
    {
        let mut tasks = TASKS.lock();
        if tasks.reparent_children(pid) > 0 {
            // Some may be zombies already, init's to reap now.
            INIT_CHLDEXIT.wake_up();
        }
        let ppid = tasks.get(pid).map(|t| {
            t.set_exit(status);
            t.ppid
        });
        wake_parent(&mut tasks, ppid);
    }
    sched::exit()
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
