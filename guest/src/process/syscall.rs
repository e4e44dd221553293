//! System calls, with the x86-64 Linux numbers and registers: RAX is the
//! number and the return value (-errno on failure); RDI, RSI, RDX, R10, R8,
//! R9 carry the arguments. Both entry paths (the `syscall` instruction on
//! hardware, and the page-fault fallback this host needs) arrive here.

use abi::layout::PAGE_SIZE;
use abi::linux::errno::*;
use abi::linux::nr;
use abi::linux::sched::*;
use abi::linux::signal::SIGKILL;
use abi::linux::time::{CLOCK_BOOTTIME, CLOCK_MONOTONIC, CLOCK_MONOTONIC_COARSE};
use abi::linux::wait::{WCONTINUED, WNOHANG, WUNTRACED};
use mm::slub::SlabError;
use mm::vma::{Access, MapFlags, Prot};

use super::address_space::{Args, ExecError, Mm};
use super::fault::kill;
use super::{
    current_mm, current_pid, current_ppid, current_tid, exit_group, exit_thread, with_current,
    CloneArgs, ExitStatus, Sharing, WaitError, WaitFor,
};
use crate::arch::irqflags::{local_irq_disable, local_irq_enable};
use crate::arch::mem::KernelPage;
use crate::arch::switch;
use crate::arch::trap::TrapFrame;
use crate::console::print;
use crate::kprintln;
use crate::mm::events::{count, EVENTS};
use crate::{programs, sched, time};
use core::sync::atomic::{AtomicU64, Ordering};

/// The flags clone() takes: pthread_create()'s and fork()'s (an exit
/// signal, CLONE_CHILD_SETTID, CLONE_CHILD_CLEARTID). CLONE_FS,
/// CLONE_FILES, CLONE_SIGHAND and CLONE_SYSVSEM share what this kernel
/// keeps no copy of per process (a cwd, a descriptor table beyond the
/// console, signal handlers, SysV semaphores), so they cost nothing;
/// Linux ignores CLONE_DETACHED. Any other flag (CLONE_VFORK,
/// CLONE_PARENT, the namespaces, ...) is EINVAL.
const CLONE_SUPPORTED: u64 =
    CLONE_PTHREAD | CSIGNAL | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | CLONE_DETACHED;
/// wait4() options: WNOHANG is honoured; no child is ever stopped or
/// continued, so WUNTRACED and WCONTINUED change nothing.
const WAIT4_OPTIONS: u64 = WNOHANG | WUNTRACED | WCONTINUED;
/// Clocks clock_gettime() reads: the tick's, as on a machine whose only
/// clocksource is jiffies (no suspend: boot time is monotonic time).
const TICK_CLOCKS: [u64; 3] = [CLOCK_MONOTONIC, CLOCK_MONOTONIC_COARSE, CLOCK_BOOTTIME];

const NSEC_PER_SEC: u64 = 1_000_000_000;
/// sizeof(struct rusage) on x86-64: wait4() reports no usage (zeros).
const RUSAGE_SIZE: usize = 144;

/// The most a single write() copies to the console.
const WRITE_MAX: u64 = 4096;
/// The longest program path execve() takes, with its NUL.
const PATH_MAX: usize = 256;

pub fn dispatch(frame: &mut TrapFrame) {
    // Process context, with interrupts on as do_syscall_64() turns them
    // on: a call may sleep (wait4). The way back to ring 3 turns them off.
    crate::arch::irqflags::local_irq_enable();
    count(&EVENTS.syscalls, 1);
    if frame.vector != crate::arch::user::SYSCALL_VECTOR {
        count(&EVENTS.syscall_fallbacks, 1);
    }
    let args = [
        frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9,
    ];
    let ret = match frame.rax {
        nr::WRITE => Ok(sys_write(args[0], args[1], args[2])),
        nr::MMAP => sys_mmap(args[0], args[1], args[2], args[3], args[4], args[5]),
        nr::MPROTECT => sys_mprotect(args[0], args[1], args[2]),
        nr::MUNMAP => sys_munmap(args[0], args[1]),
        nr::BRK => sys_brk(args[0]),
        nr::SCHED_YIELD => Ok(sys_sched_yield()),
        nr::NANOSLEEP => Ok(sys_nanosleep(args[0])),
        nr::CLOCK_GETTIME => Ok(sys_clock_gettime(args[0], args[1])),
        nr::GETPID => Ok(i64::from(current_pid())),
        nr::GETTID => Ok(i64::from(current_tid())),
        nr::GETPPID => Ok(i64::from(current_ppid())),
        nr::FORK => Ok(sys_clone(frame, [0; 5])),
        nr::CLONE => Ok(sys_clone(
            frame,
            [args[0], args[1], args[2], args[3], args[4]],
        )),
        nr::EXECVE => match sys_execve(args[0], args[1]) {
            Ok(entry) => {
                *frame = entry;
                return;
            }
            Err(errno) => Ok(-errno),
        },
        nr::WAIT4 => Ok(sys_wait4(args[0] as i32, args[1], args[2], args[3])),
        nr::EXIT => exit_thread(ExitStatus::Exited(args[0] as i32)),
        nr::EXIT_GROUP => exit_group(ExitStatus::Exited(args[0] as i32)),
        number => Ok(sys_ni_syscall(number)),
    };
    match ret {
        Ok(ret) => frame.rax = ret as u64,
        Err(_) => kill(
            frame,
            SIGKILL,
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
/// Not inlined: its buffer stays off the kernel stack of the other calls.
#[inline(never)]
fn sys_write(fd: u64, buf: u64, len: u64) -> i64 {
    if fd != 1 && fd != 2 {
        return -EINVAL;
    }
    let len = len.min(WRITE_MAX);
    let mut text = [0u8; WRITE_MAX as usize];
    let text = &mut text[..len as usize];
    if let Err(errno) = copy_from_user(buf, text) {
        return -errno;
    }
    match core::str::from_utf8(text) {
        Ok(s) => print(format_args!("{s}")),
        Err(_) => print(format_args!("{text:?}")),
    }
    len as i64
}

/// clone(flags, newsp, parent_tid, child_tid, tls) (x86-64's order) and
/// fork(): a new process, or with CLONE_VM a new task in this address
/// space, and with CLONE_THREAD a thread of this process; it returns 0
/// on `newsp` (0: this stack's pointer), its FS base `tls` with
/// CLONE_SETTLS (else this thread's). Returns its pid (a thread's TID).
/// copy_process()'s checks: CLONE_THREAD needs CLONE_SIGHAND, which
/// needs CLONE_VM (EINVAL otherwise), as does a flag not supported; a
/// TLS beyond user space is EPERM (do_arch_prctl_64()'s check).
fn sys_clone(frame: &TrapFrame, [flags, newsp, parent_tid, child_tid, tls]: [u64; 5]) -> i64 {
    let has = |flag| flags & flag != 0;
    if flags & !CLONE_SUPPORTED != 0
        || (has(CLONE_THREAD) && !has(CLONE_SIGHAND))
        || (has(CLONE_SIGHAND) && !has(CLONE_VM))
    {
        return -EINVAL;
    }
    let fs_base = if has(CLONE_SETTLS) {
        if tls >= mm::vma::TASK_SIZE {
            return -EPERM;
        }
        tls
    } else {
        switch::user_fs_base()
    };
    let sharing = match (has(CLONE_VM), has(CLONE_THREAD)) {
        (false, _) => Sharing::Nothing,
        (true, false) => Sharing::Mm,
        (true, true) => Sharing::Thread,
    };
    let pick = |flag, at| if has(flag) { at } else { 0 };
    let args = CloneArgs {
        sharing,
        frame: TrapFrame {
            rsp: if newsp != 0 { newsp } else { frame.rsp },
            ..*frame
        },
        fs_base,
        parent_tid: pick(CLONE_PARENT_SETTID, parent_tid),
        child_set_tid: pick(CLONE_CHILD_SETTID, child_tid),
        child_clear_tid: pick(CLONE_CHILD_CLEARTID, child_tid),
    };
    match super::clone(&args) {
        Ok(pid) => i64::from(pid),
        Err(e) => -e.errno(),
    }
}

/// execve(path, argv, envp): runs the program at `path` in the initramfs
/// (a leading `/` names its root) with the argument strings of `argv`
/// (NULL: none) and an empty environment. Returns the frame the new
/// program starts from, or the errno with this program left as it was.
/// Not inlined, for its buffers (as `sys_write`).
#[inline(never)]
fn sys_execve(path: u64, argv: u64) -> Result<TrapFrame, i64> {
    let mut name = [0u8; PATH_MAX];
    let len = strncpy_from_user(path, &mut name).map_err(|e| match e {
        CopyError::Fault => EFAULT,
        CopyError::TooLong => ENAMETOOLONG,
    })?;
    let name = core::str::from_utf8(&name[..len]).map_err(|_| ENOENT)?;
    let program = programs::find(name.strip_prefix('/').unwrap_or(name)).ok_or(ENOENT)?;
    let mut args = Args::new();
    let mut next = argv;
    while next != 0 {
        let mut pointer = [0u8; 8];
        copy_from_user(next, &mut pointer)?;
        let arg = u64::from_le_bytes(pointer);
        if arg == 0 {
            break;
        }
        let len = strncpy_from_user(arg, args.room()).map_err(|e| match e {
            CopyError::Fault => EFAULT,
            CopyError::TooLong => ExecError::TooBig.errno(),
        })?;
        args.commit(len).map_err(|e| e.errno())?;
        next = next.checked_add(8).ok_or(EFAULT)?;
    }
    super::exec(&program, &args).map_err(|e| e.errno())
}

/// wait4(pid, wstatus, options, rusage): reaps an exited child (`pid` -1
/// or 0: any, there being one process group; > 0: that one; < -1: a
/// group this kernel does not have, so none), sleeping until one exits
/// unless WNOHANG. Stores its wait status and a zero rusage where asked.
/// Returns its pid, 0 for WNOHANG with none exited yet, or -ECHILD.
fn sys_wait4(pid: i32, wstatus: u64, options: u64, rusage: u64) -> i64 {
    if options & !WAIT4_OPTIONS != 0 {
        return -EINVAL;
    }
    let which = match pid {
        -1 | 0 => WaitFor::Any,
        pid if pid > 0 => WaitFor::Pid(pid as u32),
        _ => return -ECHILD,
    };
    let (child, status) = match super::wait(which, options & WNOHANG != 0) {
        Ok(reaped) => reaped,
        Err(WaitError::NoChild) => return -ECHILD,
        Err(WaitError::NoneExited) => return 0,
        Err(WaitError::Interrupted) => return -EINTR,
    };
    if wstatus != 0 {
        if let Err(errno) = copy_to_user(wstatus, &status.wait_status().to_le_bytes()) {
            return -errno;
        }
    }
    if rusage != 0 {
        if let Err(errno) = copy_to_user(rusage, &[0; RUSAGE_SIZE]) {
            return -errno;
        }
    }
    i64::from(child)
}

/// Why a string could not be copied from user memory.
enum CopyError {
    Fault,
    /// No NUL within the buffer.
    TooLong,
}

/// strncpy_from_user(): the NUL-terminated string at user address `va`
/// into `buf`; returns its length without the NUL.
fn strncpy_from_user(va: u64, buf: &mut [u8]) -> Result<usize, CopyError> {
    let mut done = 0;
    while done < buf.len() {
        let at = va.checked_add(done as u64).ok_or(CopyError::Fault)?;
        let in_page = ((PAGE_SIZE - at % PAGE_SIZE) as usize).min(buf.len() - done);
        let chunk = &mut buf[done..done + in_page];
        copy_from_user(at, chunk).map_err(|_| CopyError::Fault)?;
        if let Some(nul) = chunk.iter().position(|&b| b == 0) {
            return Ok(done + nul);
        }
        done += in_page;
    }
    Err(CopyError::TooLong)
}

/// copy_from_user(): fills `out` from user address `va`, page by page,
/// each reached as the user's own read would reach it (faulted in if
/// needed, by walking instead of touching). EFAULT where that read would
/// fault.
fn copy_from_user(va: u64, out: &mut [u8]) -> Result<(), i64> {
    let mut done = 0;
    while done < out.len() {
        let at = va.checked_add(done as u64).ok_or(EFAULT)?;
        let in_page = ((PAGE_SIZE - at % PAGE_SIZE) as usize).min(out.len() - done);
        let chunk = &mut out[done..done + in_page];
        let offset = (at % PAGE_SIZE) as usize;
        with_user_page(&current_mm(), at, Access::READ, |page| {
            page.read_bytes(offset, chunk)
        })
        .ok_or(EFAULT)?;
        done += in_page;
    }
    Ok(())
}

/// copy_to_user(): writes `bytes` at user address `va`, as the user's own
/// writes would (a page faulted in, a read-only private page made
/// writable or copied, copy-on-write). EFAULT where such a write would
/// fault; the pages before it are written.
fn copy_to_user(va: u64, bytes: &[u8]) -> Result<(), i64> {
    copy_to_user_in(&current_mm(), va, bytes)
}

/// copy_to_user() into address space `mm` (the current one, a new
/// task's, or an exiting thread's).
pub fn copy_to_user_in(mm: &Mm, va: u64, bytes: &[u8]) -> Result<(), i64> {
    let mut done = 0;
    while done < bytes.len() {
        let at = va.checked_add(done as u64).ok_or(EFAULT)?;
        let in_page = ((PAGE_SIZE - at % PAGE_SIZE) as usize).min(bytes.len() - done);
        let chunk = &bytes[done..done + in_page];
        let offset = (at % PAGE_SIZE) as usize;
        with_user_page(mm, at, Access::WRITE, |page| {
            page.write_bytes(offset, chunk)
        })
        .ok_or(EFAULT)?;
        done += in_page;
    }
    Ok(())
}

/// The page behind user address `va` of `mm`, reached as a user `access`
/// would, lent to `f`.
fn with_user_page<R>(
    mm: &Mm,
    va: u64,
    access: Access,
    f: impl FnOnce(KernelPage<'_>) -> R,
) -> Option<R> {
    if va >= mm::vma::TASK_SIZE {
        return None;
    }
    mm.lock().with_user_access(va, access, f)
}

/// mmap(addr, len, prot, flags, fd, off): anonymous mappings, private or
/// shared (sys_mmap() and ksys_mmap_pgoff(); do_mmap() is the VMA
/// tree's). A file cannot be mapped: the console (fd 1 and 2) has no
/// mmap (ENODEV), and no other descriptor is open (EBADF); nor can huge
/// pages, as in a kernel without CONFIG_HUGETLB_PAGE (EINVAL). This and
/// the other calls that change VMAs fail when no slab object is left to
/// publish them, and the task is then killed.
fn sys_mmap(
    addr: u64,
    len: u64,
    prot: u64,
    flags: u64,
    fd: u64,
    off: u64,
) -> Result<i64, SlabError> {
    if !off.is_multiple_of(PAGE_SIZE) {
        return Ok(-EINVAL);
    }
    let flags = MapFlags::from_bits_retain(flags);
    if !flags.contains(MapFlags::ANONYMOUS) {
        return Ok(if fd == 1 || fd == 2 { -ENODEV } else { -EBADF });
    }
    if flags.contains(MapFlags::HUGETLB) {
        return Ok(-EINVAL);
    }
    let prot = Prot::from_bits_retain(prot);
    let result = current_mm()
        .lock()
        .change_vmas(|vmas, unmap| vmas.do_mmap(addr, len, prot, flags, unmap))?;
    Ok(match result {
        Ok(addr) => addr as i64,
        Err(e) => -e.errno(),
    })
}

/// mprotect(addr, len, prot): VMAs split and merged, the present PTEs
/// changed, one TLB flush.
fn sys_mprotect(addr: u64, len: u64, prot: u64) -> Result<i64, SlabError> {
    let prot = Prot::from_bits_retain(prot);
    let result = current_mm().lock().mprotect(addr, len, prot)?;
    Ok(match result {
        Ok(()) => 0,
        Err(e) => -e.errno(),
    })
}

/// sched_yield(): the CPU goes to another runnable thread, if one waits;
/// this one stays runnable and runs again in its turn.
fn sys_sched_yield() -> i64 {
    sched::schedule();
    0
}

/// nanosleep(req, rem): sleeps on the timer for at least `*req`
/// (-EINVAL unless 0 <= tv_nsec < 10^9 and tv_sec >= 0). The tick counts
/// the time, so a sleep lasts the whole ticks that cover it plus the one
/// under way (msleep()'s + 1). Nothing interrupts a sleep (there are no
/// signals), so `rem` is never written.
fn sys_nanosleep(req: u64) -> i64 {
    let Some((sec, nsec)) = read_timespec(req) else {
        return -EFAULT;
    };
    if sec < 0 || !(0..NSEC_PER_SEC as i64).contains(&nsec) {
        return -EINVAL;
    }
    let ns = (sec as u64)
        .saturating_mul(NSEC_PER_SEC)
        .saturating_add(nsec as u64);
    if ns == 0 {
        return 0;
    }
    let expires = time::jiffies()
        .saturating_add(time::ns_to_jiffies(ns))
        .saturating_add(1);
    // System calls run with interrupts off; a sleeper needs the tick.
    local_irq_enable();
    let slept = sched::timer::sleep_until(expires, "nanosleep");
    local_irq_disable();
    match slept {
        // Woken early by a kill: the thread exits on its way out.
        Ok(()) if sched::fatal_signal_pending() => -EINTR,
        Ok(()) => 0,
        // might_sleep() reported why it could not sleep (a kernel bug):
        // the sleep ends early, as one a signal interrupts.
        Err(_) => -EINTR,
    }
}

/// clock_gettime(clk, tp): the time since boot, counted by the tick
/// (jiffies times TICK_NSEC), for the monotonic clocks; -EINVAL for any
/// other.
fn sys_clock_gettime(clock: u64, tp: u64) -> i64 {
    if !TICK_CLOCKS.contains(&clock) {
        return -EINVAL;
    }
    let ns = time::jiffies().saturating_mul(time::NSEC_PER_JIFFY);
    let mut ts = [0u8; 16];
    ts[..8].copy_from_slice(&(ns / NSEC_PER_SEC).to_le_bytes());
    ts[8..].copy_from_slice(&(ns % NSEC_PER_SEC).to_le_bytes());
    match copy_to_user(tp, &ts) {
        Ok(()) => 0,
        Err(errno) => -errno,
    }
}

/// A struct timespec (tv_sec, tv_nsec: two i64) at user address `at`.
fn read_timespec(at: u64) -> Option<(i64, i64)> {
    let mut ts = [0u8; 16];
    copy_from_user(at, &mut ts).ok()?;
    let (sec, nsec) = ts.split_at(8);
    let word = |b: &[u8]| b.try_into().ok().map(i64::from_le_bytes);
    Some((word(sec)?, word(nsec)?))
}

fn sys_munmap(addr: u64, len: u64) -> Result<i64, SlabError> {
    let result = current_mm()
        .lock()
        .change_vmas(|vmas, unmap| vmas.munmap(addr, len, unmap))?;
    Ok(match result {
        Ok(()) => 0,
        Err(e) => -e.errno(),
    })
}

/// brk(addr): the new break, or the current one when it cannot move.
fn sys_brk(addr: u64) -> Result<i64, SlabError> {
    current_mm()
        .lock()
        .change_vmas(|vmas, unmap| vmas.brk(addr, unmap))
        .map(|brk| brk as i64)
}
