//! Processes: tasks with their own address space (PML4 whose kernel quarter
//! is the shared kernel page directory), VMAs in a red-black tree, demand
//! paging, system calls. Each task runs on a thread of the scheduler, on
//! any CPU, concurrently with the others; its parent (`run_queue`, on
//! init) reaps it once it has exited.

pub mod address_space;
pub mod fault;
pub mod objects;

pub mod syscall;

use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU32, Ordering};

use mm::slub::SlabError;
use spin::Mutex;

use crate::arch::mem::SlabBox;
use crate::arch::switch::{current_slot, KernelStack, MAX_THREADS};
use crate::arch::user;
use crate::kprintln;
use crate::programs::{self, Program};
use crate::sched::{self, wait::WaitQueue, Tid};
use address_space::{AddressSpace, ExecError};
use objects::{ListHead, TaskStruct};

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// exit(code).
    Exited(i32),
    /// Killed by the kernel (a bad access: Linux would send SIGSEGV).
    Killed,
}

/// A task: it lives in its task_struct object (from task_struct_cachep),
/// whose first part is the [`TaskStruct`] the host reads.
#[repr(C)]
pub struct Task {
    pub ts: TaskStruct,
    pub name: &'static str,
    pub mm: AddressSpace,
    pub exit: Option<ExitStatus>,
    /// Its kernel stack, from fork until its thread starts on it.
    stack: Option<KernelStack>,
    /// Its thread, once started.
    thread: Option<Tid>,
    /// The next task in the list (the kernel's own, owning link; `ts.tasks`
    /// is the host's view of the same order).
    next: Option<SlabBox<Task>>,
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
        self.ts.exit_code = match status {
            ExitStatus::Exited(code) => code,
            ExitStatus::Killed => 128 + 11,
        };
    }
}

pub const TASK_RUNNABLE: u32 = 0;
pub const TASK_RUNNING: u32 = 1;
/// Exited, until its parent reaps it (EXIT_ZOMBIE).
pub const TASK_ZOMBIE: u32 = 2;

/// Every task (waiting to run, running, or finished until it is reaped),
/// in creation order, headed by init_task as Linux's list is. Adding and
/// removing walk the list (O(n)); tasks are created and reaped one at a
/// time, far less often than they fault. A started task's address space
/// is not here but with its thread (`RUNNING`), so faults and system calls
/// of different processes never wait for one another.
struct TaskList {
    /// The swapper (pid 0, no mm): `init_task.tasks` heads the list the
    /// host walks.
    init_task: TaskStruct,
    first: Option<SlabBox<Task>>,
}

static TASKS: Mutex<TaskList> = Mutex::new(TaskList {
    init_task: TaskStruct {
        pid: 0,
        state: TASK_RUNNING,
        mm: 0,
        comm: TaskStruct::comm("swapper"),
        exit_code: 0,
        _pad: 0,
        tasks: ListHead { next: 0, prev: 0 },
    },
    first: None,
});
static NEXT_PID: AtomicU32 = AtomicU32::new(1);

impl TaskList {
    /// The address of init_task.tasks, the list head.
    fn head(&self) -> u64 {
        &self.init_task.tasks as *const ListHead as u64
    }

    /// The first task, in list order, for which `pred` holds.
    fn find(&mut self, pred: impl Fn(&Task) -> bool) -> Option<&mut Task> {
        let mut cur = self.first.as_deref_mut();
        while let Some(task) = cur {
            if pred(task) {
                return Some(task);
            }
            cur = task.next.as_deref_mut();
        }
        None
    }

    /// list_add_tail(&p->tasks, &init_task.tasks).
    fn push(&mut self, task: SlabBox<Task>) {
        let mut link = &mut self.first;
        while let Some(t) = link {
            link = &mut t.next;
        }
        *link = Some(task);
        self.relink();
    }

    /// list_del(&p->tasks): takes the task with `pid` out of the list.
    fn take(&mut self, pid: u32) -> Option<SlabBox<Task>> {
        let mut link = &mut self.first;
        while link.as_ref().is_some_and(|t| t.ts.pid != pid) {
            link = &mut link.as_mut()?.next;
        }
        let mut task = link.take()?;
        *link = task.next.take();
        task.ts.tasks = ListHead::default();
        self.relink();
        Some(task)
    }

    /// Rewrites the `tasks` links the host walks from the owning chain, so
    /// both always give the same order: each task's next and prev, and
    /// init_task's (itself when the list is empty, as INIT_LIST_HEAD()).
    fn relink(&mut self) {
        let head = self.head();
        let mut prev = head;
        let mut cur = self.first.as_deref_mut();
        while let Some(task) = cur {
            let next = task.next.as_deref().map_or(head, links_of);
            task.ts.tasks = ListHead { next, prev };
            prev = links_of(task);
            cur = task.next.as_deref_mut();
        }
        self.init_task.tasks = ListHead {
            next: self.first.as_deref().map_or(head, links_of),
            prev,
        };
    }
}

/// The address of a task's `tasks` links.
fn links_of(task: &Task) -> u64 {
    &task.ts.tasks as *const ListHead as u64
}

/// fork_init(): the task_struct, mm_struct and vm_area_struct caches,
/// and an empty task list (INIT_LIST_HEAD(&init_task.tasks)).
pub fn fork_init() -> Result<(), SlabError> {
    objects::fork_init(TASK_STRUCT_SIZE)?;
    TASKS.lock().relink();
    Ok(())
}

/// The address of init_task, whose `tasks` heads the task list.
pub fn init_task_address() -> u64 {
    &TASKS.lock().init_task as *const TaskStruct as u64
}

/// What a running process's thread holds: its address space, locked by
/// that thread alone while it faults or makes a system call (its mm
/// lock), and by its context switches. pid 0: the thread runs none.
pub struct Running {
    pub pid: u32,
    pub name: &'static str,
    pub mm: AddressSpace,
}

/// Per thread slot, the process that thread runs, from its start to its
/// exit. The address spaces are swapped in and out in place: one is too
/// big to move through a 16 KiB kernel stack.
static RUNNING: [Mutex<Running>; MAX_THREADS] = [const {
    Mutex::new(Running {
        pid: 0,
        name: "",
        mm: AddressSpace::empty(),
    })
}; MAX_THREADS];

/// Runs `f` on the current process. Panics if the running thread runs
/// none: only the system-call and fault paths call this, and they only
/// run for a process.
pub fn with_current<R>(f: impl FnOnce(&mut Running) -> R) -> R {
    let mut running = RUNNING[current_slot()].lock();
    assert!(running.pid != 0, "no current task");
    f(&mut running)
}

/// Runs `f` on the task with `pid`, if it exists.
pub fn with_task<R>(pid: u32, f: impl FnOnce(&mut Task) -> R) -> Option<R> {
    TASKS.lock().find(|t| t.ts.pid == pid).map(f)
}

/// Creates a task running `program` (fork + exec in one step): a fresh
/// address space with the program's code, a stack and a heap base, and a
/// kernel stack, in a new task_struct with the next pid. It runs once
/// `run_queue` starts it. Out of memory is `ExecError::NoMemory`, with
/// everything taken so far given back.
pub fn spawn(program: &Program) -> Result<u32, ExecError> {
    let cache = objects::caches()
        .ok_or(ExecError::Slab(SlabError::NoSuchCache))?
        .task_struct;
    let mut mm = AddressSpace::exec(program)?;
    let stack = match KernelStack::new() {
        Ok(stack) => stack,
        Err(e) => {
            mm.exit_mmap();
            return Err(e.into());
        }
    };
    let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
    let task = Task {
        ts: TaskStruct {
            pid,
            state: TASK_RUNNABLE,
            mm: mm.mm_obj(),
            comm: TaskStruct::comm(program.name),
            ..TaskStruct::default()
        },
        name: program.name,
        mm,
        exit: None,
        stack: Some(stack),
        thread: None,
        next: None,
    };
    let task = SlabBox::new(cache, task).map_err(|(e, mut task)| {
        task.mm.exit_mmap();
        ExecError::from(e)
    })?;
    TASKS.lock().push(task);
    Ok(pid)
}

/// Woken when a task exits (the parent's wait in do_wait()).
static CHILD_EXITED: WaitQueue = WaitQueue::new();

/// Starts every task spawned so far on a thread of its own (they run
/// concurrently, on every CPU), and reaps each once it has exited: its
/// task_struct goes back to its cache once its thread's stack is freed.
/// Calls `done` with (pid, name, status) for each, in the order they end.
pub fn run_queue(mut done: impl FnMut(u32, &'static str, ExitStatus)) {
    loop {
        start_tasks();
        let zombie = || {
            let mut tasks = TASKS.lock();
            tasks.first.is_none() || tasks.find(|t| t.exit.is_some()).is_some()
        };
        if CHILD_EXITED.wait_event("wait4", zombie).is_err() {
            // Only init calls this, and it may sleep: a bug, not a state.
            panic!("run_queue called where it cannot sleep");
        }
        let reaped = {
            let mut tasks = TASKS.lock();
            let pid = tasks.find(|t| t.exit.is_some()).map(|t| t.ts.pid);
            match pid {
                Some(pid) => tasks.take(pid),
                None => return,
            }
        };
        let Some(task) = reaped else { continue };
        // release_task(): the thread's stack is freed once it is off its
        // CPU; every frame is back when this returns.
        if let Some(tid) = task.thread {
            let _ = sched::join(tid);
        }
        done(
            task.ts.pid,
            task.name,
            task.exit.unwrap_or(ExitStatus::Killed),
        );
    }
}

/// wake_up_new_task() for every task that has no thread yet, as long as
/// thread slots last. A task that cannot get one while no other task
/// runs never will, and is ended.
fn start_tasks() {
    let mut tasks = TASKS.lock();
    let mut running = tasks.find(|t| t.thread.is_some()).is_some();
    while let Some(task) = tasks.find(|t| t.stack.is_some()) {
        let Some(stack) = task.stack.take() else {
            break;
        };
        match sched::spawn_user(task.name, user_thread, task.ts.pid, stack) {
            Ok(tid) => {
                task.thread = Some(tid);
                running = true;
            }
            Err((_, stack)) if running => {
                task.stack = Some(stack);
                break;
            }
            Err((e, _)) => {
                kprintln!("[{}:{}] cannot start: {e:?}", task.ts.pid, task.name);
                task.mm.exit_mmap();
                task.set_exit(ExitStatus::Killed);
            }
        }
    }
}

/// A task's thread: takes its address space from the task, loads it and
/// enters ring 3 for good (the exec half of start_thread()). It leaves
/// only through `exit_current`.
fn user_thread(pid: u64) {
    let pid = pid as u32;
    let mut running = RUNNING[current_slot()].lock();
    let taken = with_task(pid, |t| {
        t.ts.state = TASK_RUNNING;
        core::mem::swap(&mut t.mm, &mut running.mm);
        running.pid = pid;
        running.name = t.name;
    });
    if taken.is_none() {
        return;
    }
    running.mm.activate();
    let frame = running.mm.entry_frame();
    drop(running);
    user::enter_user(&frame);
}

/// task_struct.state for the host, unless the task has exited.
fn set_state(pid: u32, state: u32) {
    if let Some(t) = TASKS.lock().find(|t| t.ts.pid == pid) {
        if t.exit.is_none() {
            t.ts.state = state;
        }
    }
}

/// The first half of switch_mm(), on a user thread about to leave its CPU:
/// this CPU goes back to swapper_pg_dir and leaves the mm's cpumask.
pub fn switch_mm_out(pid: u32) {
    RUNNING[current_slot()].lock().mm.deactivate();
    set_state(pid, TASK_RUNNABLE);
}

/// The second half, on the user thread just resumed: this CPU joins the
/// mm's cpumask and loads its tables.
pub fn switch_mm_in(pid: u32) {
    RUNNING[current_slot()].lock().mm.activate();
    set_state(pid, TASK_RUNNING);
}

/// do_exit(): ends the current task with `status`. exit_mm() runs here
/// (the CPU leaves the address space, then every user frame and table is
/// freed); the parent reaps the task_struct, and the scheduler frees the
/// kernel stack once the thread is off its CPU. Called from system-call
/// and fault context, with no locks held.
pub fn exit_current(status: ExitStatus) -> ! {
    let pid = with_current(|running| {
        running.mm.deactivate();
        running.mm.exit_mmap();
        core::mem::replace(&mut running.pid, 0)
    });
    with_task(pid, |t| t.set_exit(status));
    CHILD_EXITED.wake_up();
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
        ExitStatus::Killed => kprintln!("[{pid}:{name}] was killed"),
    });
    failures
}
