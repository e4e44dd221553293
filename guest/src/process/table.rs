//! The task table: every task, found by pid through a hash of chains
//! (Linux's pid hash, find_task_by_pid()), listed in creation order
//! through the `tasks` links the host walks from init_task
//! (for_each_process(); threads are on it too, so the host lists them as
//! `ps -L` does, where Linux keeps them on their group's thread list),
//! a process on its parent's list of children (`children` and
//! `sibling`), which wait4() and the reparenting at exit walk, and a
//! thread on its leader's list of threads (`thread_node`). The
//! chains own the tasks; the lists link them by pid (the kernel's side)
//! and by address (the host's side), so adding, finding and removing a
//! task costs a chain walk, not a walk of every task.

use super::objects::{ListHead, TaskStruct};
use super::{Task, TASK_RUNNING};
use crate::arch::mem::SlabBox;

/// Chains in the pid hash (a power of two: pids are handed out in order,
/// so `pid % PIDHASH_SZ` spreads them evenly).
const PIDHASH_SZ: usize = 256;

/// A task's places in the table, by pid (0: none, or init for a parent).
#[derive(Clone, Copy, Debug, Default)]
pub struct Links {
    /// Its neighbours in the task list.
    prev: u32,
    next: u32,
    /// Its first child, and its neighbours among its parent's children.
    first_child: u32,
    prev_sibling: u32,
    next_sibling: u32,
    /// The next thread of its process, from the leader on (0: the last).
    next_thread: u32,
}

pub struct TaskTable {
    /// The swapper (pid 0, no mm): `init_task.tasks` heads the list the
    /// host walks, and init_task is the parent of the tasks init starts.
    pub init_task: TaskStruct,
    chains: [Option<SlabBox<Task>>; PIDHASH_SZ],
    /// The task list's ends (0: empty).
    first: u32,
    last: u32,
    /// init's first child.
    init_children: u32,
}

impl TaskTable {
    pub const fn new() -> Self {
        TaskTable {
            init_task: TaskStruct {
                pid: 0,
                state: TASK_RUNNING,
                mm: 0,
                comm: TaskStruct::comm("swapper"),
                exit_code: 0,
                tgid: 0,
                tasks: ListHead { next: 0, prev: 0 },
                real_parent: 0,
            },
            chains: [const { None }; PIDHASH_SZ],
            first: 0,
            last: 0,
            init_children: 0,
        }
    }

    /// INIT_LIST_HEAD(&init_task.tasks), once the table is where it stays.
    pub fn init(&mut self) {
        let head = self.head();
        self.init_task.tasks = ListHead {
            next: head,
            prev: head,
        };
        self.init_task.real_parent = self.init_task_address();
    }

    /// The address of init_task.tasks, the list head.
    pub fn head(&self) -> u64 {
        &self.init_task.tasks as *const ListHead as u64
    }

    /// The address of init_task.
    pub fn init_task_address(&self) -> u64 {
        &self.init_task as *const TaskStruct as u64
    }

    /// find_task_by_pid().
    pub fn get(&mut self, pid: u32) -> Option<&mut Task> {
        let mut cur = self.chains[chain(pid)].as_deref_mut();
        while let Some(task) = cur {
            if task.ts.pid == pid {
                return Some(task);
            }
            cur = task.hash_next.as_deref_mut();
        }
        None
    }

    /// Calls `f` on the tasks in list order, as long as it returns true.
    pub fn for_each(&mut self, mut f: impl FnMut(&mut Task) -> bool) {
        let mut pid = self.first;
        while let Some(task) = self.get(pid) {
            pid = task.links.next;
            if !f(task) {
                return;
            }
        }
    }

    /// Calls `f` on each thread of process `tgid`, its leader first
    /// (for_each_thread()).
    pub fn for_each_thread(&mut self, tgid: u32, mut f: impl FnMut(&mut Task)) {
        let mut pid = tgid;
        while let Some(task) = self.get(pid) {
            f(task);
            pid = task.links.next_thread;
        }
    }

    /// The first child of `ppid` (0: init) for which `pred` holds.
    pub fn find_child(&mut self, ppid: u32, pred: impl Fn(&Task) -> bool) -> Option<&mut Task> {
        let mut pid = self.first_child(ppid);
        loop {
            let task = self.get(pid)?;
            if pred(task) {
                // Found again to give it out: the loop's borrow ends here.
                return self.get(pid);
            }
            pid = task.links.next_sibling;
        }
    }

    fn first_child(&mut self, ppid: u32) -> u32 {
        if ppid == 0 {
            return self.init_children;
        }
        self.get(ppid).map_or(0, |p| p.links.first_child)
    }

    fn set_first_child(&mut self, ppid: u32, child: u32) {
        if ppid == 0 {
            self.init_children = child;
        } else if let Some(parent) = self.get(ppid) {
            parent.links.first_child = child;
        }
    }

    /// Where the host finds `pid`'s `tasks` links (0: the list head).
    fn tasks_address(&mut self, pid: u32) -> u64 {
        match pid {
            0 => self.head(),
            pid => self.get(pid).map_or(0, |t| links_of(t)),
        }
    }

    /// The address of `ppid`'s task_struct (0: init_task).
    fn task_address(&mut self, ppid: u32) -> u64 {
        match ppid {
            0 => self.init_task_address(),
            pid => self
                .get(pid)
                .map_or(0, |t| &t.ts as *const TaskStruct as u64),
        }
    }

    /// Adds `task` (its pid, tgid and ppid set, its parent and leader in
    /// the table): list_add_tail(&p->tasks, &init_task.tasks), a process
    /// on its parent's children (list_add_tail()), a thread on its
    /// leader's threads, and the pid hash.
    pub fn insert(&mut self, mut task: SlabBox<Task>) {
        let pid = task.ts.pid;
        let ppid = task.ppid;
        let tgid = task.tgid;
        let this = links_of(&task);
        let last = self.last;
        task.links.prev = last;
        task.links.next = 0;
        task.ts.tasks = ListHead {
            next: self.head(),
            prev: self.tasks_address(last),
        };
        match self.get(last) {
            Some(before) => {
                before.links.next = pid;
                before.ts.tasks.next = this;
            }
            None => {
                self.first = pid;
                self.init_task.tasks.next = this;
            }
        }
        self.init_task.tasks.prev = this;
        self.last = pid;
        task.ts.real_parent = self.task_address(ppid);
        if tgid == pid {
            let first = self.first_child(ppid);
            task.links.prev_sibling = 0;
            task.links.next_sibling = first;
            if let Some(sibling) = self.get(first) {
                sibling.links.prev_sibling = pid;
            }
            self.set_first_child(ppid, pid);
        } else if let Some(leader) = self.get(tgid) {
            task.links.next_thread = leader.links.next_thread;
            leader.links.next_thread = pid;
        }
        let chain = &mut self.chains[chain(pid)];
        task.hash_next = chain.take();
        *chain = Some(task);
    }

    /// Takes the task with `pid` out of the table (list_del(), and off its
    /// parent's children or its leader's threads, and the pid hash); its
    /// own children go to init first.
    pub fn remove(&mut self, pid: u32) -> Option<SlabBox<Task>> {
        self.get(pid)?;
        self.reparent_children(pid);
        let (links, ppid, tgid) = self.get(pid).map(|t| (t.links, t.ppid, t.tgid))?;
        let (prev, next) = (
            self.tasks_address(links.prev),
            self.tasks_address(links.next),
        );
        match self.get(links.prev) {
            Some(before) => {
                before.links.next = links.next;
                before.ts.tasks.next = next;
            }
            None => {
                self.first = links.next;
                self.init_task.tasks.next = next;
            }
        }
        match self.get(links.next) {
            Some(after) => {
                after.links.prev = links.prev;
                after.ts.tasks.prev = prev;
            }
            None => {
                self.last = links.prev;
                self.init_task.tasks.prev = prev;
            }
        }
        if tgid == pid {
            self.unlink_sibling(ppid, pid, links);
        } else {
            self.unlink_thread(tgid, pid, links.next_thread);
        }
        let mut link = &mut self.chains[chain(pid)];
        while link.as_ref().is_some_and(|t| t.ts.pid != pid) {
            link = &mut link.as_mut()?.hash_next;
        }
        let mut task = link.take()?;
        *link = task.hash_next.take();
        task.ts.tasks = ListHead::default();
        task.links = Links::default();
        Some(task)
    }

    /// Takes thread `pid` off the threads of `tgid`.
    fn unlink_thread(&mut self, tgid: u32, pid: u32, next: u32) {
        let mut at = tgid;
        while let Some(task) = self.get(at) {
            if task.links.next_thread == pid {
                task.links.next_thread = next;
                return;
            }
            at = task.links.next_thread;
        }
    }

    /// Takes `pid` off the children of `ppid`.
    fn unlink_sibling(&mut self, ppid: u32, pid: u32, links: Links) {
        match self.get(links.prev_sibling) {
            Some(before) => before.links.next_sibling = links.next_sibling,
            None => self.set_first_child(ppid, links.next_sibling),
        }
        if let Some(after) = self.get(links.next_sibling) {
            after.links.prev_sibling = links.prev_sibling;
        }
        if let Some(task) = self.get(pid) {
            task.links.prev_sibling = 0;
            task.links.next_sibling = 0;
        }
    }

    /// forget_original_parent(): every child of `pid` becomes init's
    /// (the child reaper), with init_task as its real_parent. Returns
    /// how many there were.
    pub fn reparent_children(&mut self, pid: u32) -> usize {
        let mut moved = 0;
        let init_task = self.init_task_address();
        loop {
            let child = self.first_child(pid);
            let Some(links) = self.get(child).map(|c| c.links) else {
                return moved;
            };
            self.unlink_sibling(pid, child, links);
            let first = self.init_children;
            if let Some(adopted) = self.get(first) {
                adopted.links.prev_sibling = child;
            }
            if let Some(c) = self.get(child) {
                c.links.next_sibling = first;
            }
            // Its threads share its parent.
            self.for_each_thread(child, |t| {
                t.ppid = 0;
                t.ts.real_parent = init_task;
            });
            self.init_children = child;
            moved += 1;
        }
    }
}

fn chain(pid: u32) -> usize {
    pid as usize % PIDHASH_SZ
}

/// The address of a task's `tasks` links.
fn links_of(task: &Task) -> u64 {
    &task.ts.tasks as *const ListHead as u64
}
