//! Processes: tasks with their own address space (PML4 whose kernel quarter
//! is the shared kernel page directory), VMAs in a red-black tree, demand
//! paging, system calls, and a run queue that runs them one after another.

pub mod address_space;
pub mod fault;
pub mod objects;

pub mod syscall;

use core::sync::atomic::{AtomicU32, Ordering};

use spin::Mutex;

use crate::arch::programs::{self, Program};
use crate::arch::{self, user};
use crate::kprintln;
use address_space::{AddressSpace, ExecError};
use objects::TaskStruct;

pub const MAX_TASKS: usize = 8;

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// exit(code).
    Exited(i32),
    /// Killed by the kernel (a bad access: Linux would send SIGSEGV).
    Killed,
}

pub struct Task {
    pub pid: u32,
    pub name: &'static str,
    pub mm: AddressSpace,
    pub exit: Option<ExitStatus>,
    /// This task's task_struct object (from task_struct_cachep).
    pub task_obj: u64,
}

impl Task {
    /// Writes the task_struct object from the task's state.
    fn sync_object(&self, state: u32) {
        let mut comm = [0u8; 16];
        let n = self.name.len().min(15);
        comm[..n].copy_from_slice(&self.name.as_bytes()[..n]);
        let exit_code = match self.exit {
            Some(ExitStatus::Exited(code)) => code,
            Some(ExitStatus::Killed) => 128 + 11,
            None => 0,
        };
        let task = TaskStruct {
            pid: self.pid,
            state,
            mm: self.mm.mm_obj(),
            comm,
            exit_code,
            _pad: 0,
        };
        objects::write(self.task_obj, &task);
    }
}

pub const TASK_RUNNABLE: u32 = 0;
pub const TASK_RUNNING: u32 = 1;

/// The task table: tasks waiting to run, the running one, and finished
/// ones until they are reaped.
static TASKS: Mutex<[Option<Task>; MAX_TASKS]> = Mutex::new([const { None }; MAX_TASKS]);
static CURRENT: AtomicU32 = AtomicU32::new(0);
static NEXT_PID: AtomicU32 = AtomicU32::new(1);

/// Runs `f` on the current task. Panics if no task is running: only the
/// system-call and fault paths call this, and they only run for a task.
pub fn with_current<R>(f: impl FnOnce(&mut Task) -> R) -> R {
    let pid = CURRENT.load(Ordering::Relaxed);
    let mut tasks = TASKS.lock();
    let task = tasks
        .iter_mut()
        .flatten()
        .find(|t| t.pid == pid)
        .expect("no current task");
    f(task)
}

/// Runs `f` on the task with `pid`, if it exists.
pub fn with_task<R>(pid: u32, f: impl FnOnce(&mut Task) -> R) -> Option<R> {
    TASKS
        .lock()
        .iter_mut()
        .flatten()
        .find(|t| t.pid == pid)
        .map(f)
}

/// Creates a task running `program` (fork + exec in one step): a pid, a
/// fresh address space with the program's code, a stack and a heap base.
pub fn spawn(program: &Program) -> Result<u32, ExecError> {
    let mut tasks = TASKS.lock();
    let slot = tasks
        .iter_mut()
        .find(|t| t.is_none())
        .ok_or(ExecError::TooManyTasks)?;
    let task_obj = objects::alloc_task_struct().map_err(ExecError::Slab)?;
    let mm = match AddressSpace::exec(program) {
        Ok(mm) => mm,
        Err(e) => {
            objects::free_task_struct(task_obj);
            return Err(e);
        }
    };
    let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
    let task = Task {
        pid,
        name: program.name,
        mm,
        exit: None,
        task_obj,
    };
    task.sync_object(TASK_RUNNABLE);
    objects::task_list_add(task_obj);
    *slot = Some(task);
    Ok(pid)
}

/// Runs every task that has not run yet, one after another, each in its
/// own address space, and reaps it: exit_mmap() frees every user frame and
/// page-table page. Returns (pid, name, status) for each.
pub fn run_queue(mut done: impl FnMut(u32, &'static str, ExitStatus)) {
    loop {
        let next = TASKS
            .lock()
            .iter()
            .flatten()
            .find(|t| t.exit.is_none())
            .map(|t| {
                t.sync_object(TASK_RUNNING);
                (t.pid, t.mm.pgd(), t.mm.entry_frame())
            });
        let Some((pid, pgd, frame)) = next else {
            return;
        };
        CURRENT.store(pid, Ordering::Relaxed);
        arch::switch_address_space(pgd);
        user::run_user(&frame);
        arch::switch_address_space(crate::mm::layout().tables.pgd);
        CURRENT.store(0, Ordering::Relaxed);
        let task = TASKS
            .lock()
            .iter_mut()
            .find(|t| t.as_ref().is_some_and(|t| t.pid == pid))
            .and_then(Option::take);
        if let Some(mut task) = task {
            task.mm.exit_mmap();
            objects::task_list_remove(task.task_obj);
            objects::free_task_struct(task.task_obj);
            done(task.pid, task.name, task.exit.unwrap_or(ExitStatus::Killed));
        }
    }
}

/// (pid, CR3) of every task in the table, for inspection and tests.
pub fn roots() -> [Option<(u32, u64)>; MAX_TASKS] {
    TASKS
        .lock()
        .each_ref()
        .map(|t| t.as_ref().map(|t| (t.pid, t.mm.pgd())))
}

/// Ends the current task with `status` and goes back to the run queue.
/// Called from system-call and fault context, with no locks held.
pub fn exit_current(status: ExitStatus) -> ! {
    with_current(|t| t.exit = Some(status));
    user::return_to_kernel()
}

/// Runs the programs named on the command line (`run=demo,segv,...`), or the
/// default workload, and prints how each ended.
pub fn run_programs(names: &str) -> usize {
    let mut failures = 0;
    for name in names.split(',').filter(|n| !n.is_empty()) {
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
