//! Exceptions from ring 3: page faults are demand paging; anything the
//! address space cannot explain kills the task with a clear message, and
//! the kernel goes on with the next one.

use abi::linux::signal::{SIGKILL, SIGSEGV};

use super::address_space::FaultFailure;
use super::{current_mm, exit_group, with_current, ExitStatus};
use crate::arch::trap::TrapFrame;
use crate::kprintln;
use crate::trap::exception_name;

const PAGE_FAULT: u64 = 14;

/// do_user_addr_fault() and the other user traps.
pub fn user_exception(frame: &mut TrapFrame, cr2: u64) {
    if frame.vector == PAGE_FAULT && cr2 >= mm::vma::TASK_SIZE {
        kill(
            frame,
            SIGSEGV,
            format_args!("user access to kernel address {cr2:#x} (SEGV_MAPERR)"),
        );
    }
    if frame.vector == PAGE_FAULT {
        // As do_user_addr_fault(): a fault from user space may sleep (for
        // the mm's lock) and must take the IPIs of the threads it waits
        // for, so interrupts go back on (CR2 is read already).
        crate::arch::irqflags::local_irq_enable();
        let result = current_mm().lock().handle_fault(cr2, frame.error_code);
        match result {
            Ok(()) => return,
            // pagefault_out_of_memory(): the OOM killer's SIGKILL, for the
            // task that needed the memory.
            Err(why @ FaultFailure::OutOfMemory) => kill(
                frame,
                SIGKILL,
                format_args!("page fault at {cr2:#x}: {why}"),
            ),
            Err(why) => kill(
                frame,
                SIGSEGV,
                format_args!("page fault at {cr2:#x}: {why}"),
            ),
        }
    }
    kill(
        frame,
        SIGSEGV,
        format_args!(
            "{} (error code {:#x})",
            exception_name(frame.vector),
            frame.error_code
        ),
    );
}

/// A `syscall` whose return address is not a user address (only possible
/// by jumping to the entry point with a forged RCX): killed, as the kernel
/// must never `iretq` to it.
pub fn kill_bad_syscall_return(frame: &TrapFrame) {
    kill(
        frame,
        SIGSEGV,
        format_args!(
            "system call with a non-user return address {:#x}",
            frame.rcx
        ),
    );
}

/// force_sig(SIGSEGV) for a task with no handler (or the OOM killer's
/// SIGKILL): report, then end its process with `signal` (a fatal signal
/// kills every thread).
pub fn kill(frame: &TrapFrame, signal: u8, why: core::fmt::Arguments) -> ! {
    let (pid, name) = with_current(|t| (t.pid, t.name));
    kprintln!(
        "[{pid}:{name}] killed: {why}; RIP={:#x} RSP={:#x}",
        frame.rip,
        frame.rsp
    );
    exit_group(ExitStatus::Killed(signal))
}
