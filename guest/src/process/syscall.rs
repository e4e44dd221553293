//! System calls, with the x86-64 Linux numbers and registers: RAX is the
//! number and the return value (-errno on failure); RDI, RSI, RDX, R10, R8,
//! R9 carry the arguments. Both entry paths (the `syscall` instruction on
//! hardware, and the page-fault fallback this host needs) arrive here.

use abi::layout::PAGE_SIZE;
use mm::vma::{Placement, VmFlags, VmaKind};

use mm::slub::SlabError;

use super::fault::kill;
use super::{exit_current, with_current, ExitStatus};
use crate::arch::mem::KernelPage;
use crate::arch::trap::{PageFaultError, TrapFrame};
use crate::console::print;
use crate::kprintln;
use crate::mm::events::{count, EVENTS};
use core::sync::atomic::{AtomicU64, Ordering};

const SYS_WRITE: u64 = 1;
const SYS_MMAP: u64 = 9;
const SYS_MUNMAP: u64 = 11;
const SYS_BRK: u64 = 12;
const SYS_GETPID: u64 = 39;
const SYS_EXIT: u64 = 60;
const SYS_EXIT_GROUP: u64 = 231;

const EFAULT: i64 = 14;
const EINVAL: i64 = 22;
const ENOSYS: i64 = 38;

const PROT_READ: u64 = 1;
const PROT_WRITE: u64 = 2;
const PROT_EXEC: u64 = 4;
const MAP_PRIVATE: u64 = 0x02;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;

/// The most a single write() copies to the console.
const WRITE_MAX: u64 = 4096;

pub fn dispatch(frame: &mut TrapFrame) {
    count(&EVENTS.syscalls, 1);
    if frame.vector != crate::arch::user::SYSCALL_VECTOR {
        count(&EVENTS.syscall_fallbacks, 1);
    }
    let args = [
        frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9,
    ];
    let ret = match frame.rax {
        SYS_WRITE => Ok(sys_write(args[0], args[1], args[2])),
        SYS_MMAP => sys_mmap(args[0], args[1], args[2], args[3], args[4] as i64),
        SYS_MUNMAP => sys_munmap(args[0], args[1]),
        SYS_BRK => sys_brk(args[0]),
        SYS_GETPID => Ok(with_current(|t| i64::from(t.pid))),
        SYS_EXIT | SYS_EXIT_GROUP => exit_current(ExitStatus::Exited(args[0] as i32)),
        nr => Ok(sys_ni_syscall(nr)),
    };
    match ret {
        Ok(ret) => frame.rax = ret as u64,
        Err(_) => kill(
            frame,
            format_args!("out of memory for its vm_area_struct objects"),
        ),
    }
}

/// System-call numbers reported so far, one bit each; the numbers past
/// the bitmap share its last bit.
static REPORTED: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

/// sys_ni_syscall(): -ENOSYS, and a kernel message the first time a number
/// is asked for, naming the task that asked.
fn sys_ni_syscall(nr: u64) -> i64 {
    let bit = nr.min(REPORTED.len() as u64 * 64 - 1);
    let mask = 1 << (bit % 64);
    let seen = REPORTED[(bit / 64) as usize].fetch_or(mask, Ordering::Relaxed);
    if seen & mask == 0 {
        let (pid, name) = with_current(|t| (t.pid, t.name));
        kprintln!("[{pid}:{name}] unsupported system call {nr}: returns -ENOSYS (reported once)");
    }
    -ENOSYS
}

/// write(fd, buf, count) to the console (fd 1 and 2). The bytes are read
/// through the page tables, faulting pages in as a user access would.
fn sys_write(fd: u64, buf: u64, len: u64) -> i64 {
    if fd != 1 && fd != 2 {
        return -EINVAL;
    }
    let len = len.min(WRITE_MAX);
    let mut text = [0u8; WRITE_MAX as usize];
    let mut done = 0;
    while done < len {
        let va = buf.wrapping_add(done);
        let in_page = (PAGE_SIZE - va % PAGE_SIZE).min(len - done);
        let chunk = &mut text[done as usize..(done + in_page) as usize];
        let read = with_user_page(va, |page| page.read_bytes((va % PAGE_SIZE) as usize, chunk));
        if read.is_none() {
            return -EFAULT;
        }
        done += in_page;
    }
    let text = &text[..len as usize];
    match core::str::from_utf8(text) {
        Ok(s) => print(format_args!("{s}")),
        Err(_) => print(format_args!("{text:?}")),
    }
    len as i64
}

/// The frame behind a readable user address, faulting it in if needed
/// (copy_from_user's job, done by walking instead of touching), lent to
/// `f`.
fn with_user_page<R>(va: u64, f: impl FnOnce(KernelPage<'_>) -> R) -> Option<R> {
    with_current(|t| {
        if va >= mm::vma::TASK_SIZE {
            return None;
        }
        if t.mm.translate(va).is_none() {
            t.mm.handle_fault(va, PageFaultError::USER.bits()).ok()?;
        }
        t.mm.with_user_page(va, f)
    })
}

/// mmap(addr, len, prot, flags, fd, off): anonymous private mappings only.
/// This and the other calls that change VMAs fail when no slab object is
/// left to publish them, and the task is then killed.
fn sys_mmap(addr: u64, len: u64, prot: u64, flags: u64, fd: i64) -> Result<i64, SlabError> {
    if flags & MAP_ANONYMOUS == 0 || flags & MAP_PRIVATE == 0 || fd != -1 {
        return Ok(-EINVAL);
    }
    let vm_flags = VmFlags::from_prot(
        prot & PROT_READ != 0,
        prot & PROT_WRITE != 0,
        prot & PROT_EXEC != 0,
        false,
    );
    let placement = if flags & MAP_FIXED != 0 {
        Placement::Fixed(addr)
    } else {
        Placement::Hint(addr)
    };
    let result = with_current(|t| {
        t.mm.change_vmas(|vmas, unmap| vmas.mmap(placement, len, vm_flags, VmaKind::Anon, unmap))
    })?;
    Ok(match result {
        Ok(addr) => addr as i64,
        Err(e) => -i64::from(e.errno()),
    })
}

fn sys_munmap(addr: u64, len: u64) -> Result<i64, SlabError> {
    let result = with_current(|t| {
        t.mm.change_vmas(|vmas, unmap| vmas.munmap(addr, len, unmap))
    })?;
    Ok(match result {
        Ok(()) => 0,
        Err(e) => -i64::from(e.errno()),
    })
}

/// brk(addr): the new break, or the current one when it cannot move.
fn sys_brk(addr: u64) -> Result<i64, SlabError> {
    with_current(|t| t.mm.change_vmas(|vmas, unmap| vmas.brk(addr, unmap))).map(|brk| brk as i64)
}
