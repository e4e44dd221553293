//! Processes: tasks with their own address space (PML4 whose kernel quarter
//! is the shared kernel page directory), VMAs in a red-black tree, demand
//! paging, system calls, and a run queue that runs them one after another.

pub mod address_space;
pub mod fault;
pub mod objects;

pub mod syscall;

use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU32, Ordering};

use mm::slub::SlabError;
use spin::Mutex;

use crate::arch::mem::SlabBox;
use crate::arch::{paging, user};
use crate::kprintln;
use crate::programs::{self, Program};
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
        self.ts.exit_code = match status {
            ExitStatus::Exited(code) => code,
            ExitStatus::Killed => 128 + 11,
        };
    }
}

pub const TASK_RUNNABLE: u32 = 0;
pub const TASK_RUNNING: u32 = 1;

/// Every task (waiting to run, running, or finished until it is reaped),
/// in creation order, headed by init_task as Linux's list is. Adding and
/// removing walk the list (O(n)); tasks are created and reaped one at a
/// time, far less often than they fault.
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
static CURRENT: AtomicU32 = AtomicU32::new(0);
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

/// Runs `f` on the current task. Panics if no task is running: only the
/// system-call and fault paths call this, and they only run for a task.
pub fn with_current<R>(f: impl FnOnce(&mut Task) -> R) -> R {
    let pid = CURRENT.load(Ordering::Relaxed);
    let mut tasks = TASKS.lock();
    let task = tasks.find(|t| t.ts.pid == pid).expect("no current task");
    f(task)
}

/// Runs `f` on the task with `pid`, if it exists.
pub fn with_task<R>(pid: u32, f: impl FnOnce(&mut Task) -> R) -> Option<R> {
    TASKS.lock().find(|t| t.ts.pid == pid).map(f)
}

/// Creates a task running `program` (fork + exec in one step): a fresh
/// address space with the program's code, a stack and a heap base, in a
/// new task_struct with the next pid. Out of memory is
/// `ExecError::NoMemory`, with everything taken so far given back.
pub fn spawn(program: &Program) -> Result<u32, ExecError> {
    let cache = objects::caches()
        .ok_or(ExecError::Slab(SlabError::NoSuchCache))?
        .task_struct;
    let mm = AddressSpace::exec(program)?;
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
        next: None,
    };
    let task = SlabBox::new(cache, task).map_err(|(e, mut task)| {
        task.mm.exit_mmap();
        ExecError::from(e)
    })?;
    TASKS.lock().push(task);
    Ok(pid)
}

/// Runs every task that has not run yet, one after another, each in its
/// own address space, and reaps it: exit_mmap() frees every user frame and
/// page-table page, and the task_struct goes back to its cache. Calls
/// `done` with (pid, name, status) for each.
pub fn run_queue(mut done: impl FnMut(u32, &'static str, ExitStatus)) {
    loop {
        // The task's tables are loaded under the lock and stay alive while
        // it runs: only the reaping below frees them.
        let next = TASKS.lock().find(|t| t.exit.is_none()).map(|t| {
            t.ts.state = TASK_RUNNING;
            t.mm.activate();
            (t.ts.pid, t.mm.entry_frame())
        });
        let Some((pid, frame)) = next else {
            return;
        };
        CURRENT.store(pid, Ordering::Relaxed);
        user::run_user(&frame);
        CURRENT.store(0, Ordering::Relaxed);
        let task = TASKS.lock().take(pid);
        let Some(mut task) = task else {
            paging::activate_kernel_tables();
            continue;
        };
        task.mm.deactivate();
        task.mm.exit_mmap();
        done(pid, task.name, task.exit.unwrap_or(ExitStatus::Killed));
    }
}

/// Ends the current task with `status` and goes back to the run queue.
/// Called from system-call and fault context, with no locks held.
pub fn exit_current(status: ExitStatus) -> ! {
    with_current(|t| t.set_exit(status));
    user::return_to_kernel()
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
