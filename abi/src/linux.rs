//! The Linux x86-64 user ABI the guest kernel implements and its user
//! programs call: system-call numbers, errno values and the flags the calls
//! take, with Linux's values. The kernel (`guest/src/process/syscall.rs`,
//! `mm`'s mmap arguments) and the user runtime (`user/src/lib.rs`) both
//! use these; what the kernel chooses to support stays with the kernel.
//!
//! Numbers and flags are `u64` (the width of a system-call register),
//! errno values `i64` (a call returns `-errno` in RAX), signal numbers `u8`.

/// System-call numbers (arch/x86/entry/syscalls/syscall_64.tbl, the
/// `common` and `64` ABIs), for RAX.
pub mod nr {
    pub const WRITE: u64 = 1;
    pub const MMAP: u64 = 9;
    pub const MPROTECT: u64 = 10;
    pub const MUNMAP: u64 = 11;
    pub const BRK: u64 = 12;
    pub const SCHED_YIELD: u64 = 24;
    pub const NANOSLEEP: u64 = 35;
    pub const GETPID: u64 = 39;
    pub const CLONE: u64 = 56;
    pub const FORK: u64 = 57;
    pub const EXECVE: u64 = 59;
    pub const EXIT: u64 = 60;
    pub const WAIT4: u64 = 61;
    pub const GETPPID: u64 = 110;
    pub const GETTID: u64 = 186;
    pub const CLOCK_GETTIME: u64 = 228;
    pub const EXIT_GROUP: u64 = 231;
}

/// errno values (include/uapi/asm-generic/errno-base.h, and errno.h for
/// ENAMETOOLONG and ENOSYS).
pub mod errno {
    pub const EPERM: i64 = 1;
    pub const ENOENT: i64 = 2;
    pub const EINTR: i64 = 4;
    pub const E2BIG: i64 = 7;
    pub const ENOEXEC: i64 = 8;
    pub const EBADF: i64 = 9;
    pub const ECHILD: i64 = 10;
    pub const EAGAIN: i64 = 11;
    pub const ENOMEM: i64 = 12;
    pub const EACCES: i64 = 13;
    pub const EFAULT: i64 = 14;
    pub const EEXIST: i64 = 17;
    pub const ENODEV: i64 = 19;
    pub const EINVAL: i64 = 22;
    pub const ENAMETOOLONG: i64 = 36;
    pub const ENOSYS: i64 = 38;
}

/// mmap() and mprotect() arguments (include/uapi/asm-generic/mman-common.h;
/// MAP_SHARED and MAP_PRIVATE from include/uapi/linux/mman.h, MAP_GROWSDOWN
/// from include/uapi/asm-generic/mman.h, which x86 uses).
pub mod mman {
    pub const PROT_NONE: u64 = 0;
    pub const PROT_READ: u64 = 0x1;
    pub const PROT_WRITE: u64 = 0x2;
    pub const PROT_EXEC: u64 = 0x4;
    pub const PROT_SEM: u64 = 0x8;
    pub const PROT_GROWSDOWN: u64 = 0x0100_0000;
    pub const PROT_GROWSUP: u64 = 0x0200_0000;

    pub const MAP_SHARED: u64 = 0x01;
    pub const MAP_PRIVATE: u64 = 0x02;
    /// The bits that say shared or private.
    pub const MAP_TYPE: u64 = 0x0f;
    pub const MAP_FIXED: u64 = 0x10;
    pub const MAP_ANONYMOUS: u64 = 0x20;
    pub const MAP_GROWSDOWN: u64 = 0x0100;
    pub const MAP_HUGETLB: u64 = 0x4_0000;
    pub const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
}

/// clone() flags (include/uapi/linux/sched.h): the low byte (CSIGNAL) is
/// the signal sent to the parent when the child exits.
pub mod sched {
    pub const CSIGNAL: u64 = 0xff;
    pub const CLONE_VM: u64 = 0x100;
    pub const CLONE_FS: u64 = 0x200;
    pub const CLONE_FILES: u64 = 0x400;
    pub const CLONE_SIGHAND: u64 = 0x800;
    pub const CLONE_VFORK: u64 = 0x4000;
    pub const CLONE_THREAD: u64 = 0x1_0000;
    pub const CLONE_SYSVSEM: u64 = 0x4_0000;
    pub const CLONE_SETTLS: u64 = 0x8_0000;
    pub const CLONE_PARENT_SETTID: u64 = 0x10_0000;
    pub const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;
    pub const CLONE_DETACHED: u64 = 0x40_0000;
    pub const CLONE_CHILD_SETTID: u64 = 0x100_0000;

    /// Not a Linux constant but the set glibc's and musl's pthread_create()
    /// pass, which a kernel that runs threads must take.
    pub const CLONE_PTHREAD: u64 = CLONE_VM
        | CLONE_FS
        | CLONE_FILES
        | CLONE_SIGHAND
        | CLONE_THREAD
        | CLONE_SYSVSEM
        | CLONE_SETTLS
        | CLONE_PARENT_SETTID
        | CLONE_CHILD_CLEARTID;
}

/// wait4() options (include/uapi/linux/wait.h).
pub mod wait {
    pub const WNOHANG: u64 = 0x1;
    pub const WUNTRACED: u64 = 0x2;
    pub const WCONTINUED: u64 = 0x8;
}

/// clock_gettime() clocks (include/uapi/linux/time.h).
pub mod time {
    pub const CLOCK_REALTIME: u64 = 0;
    pub const CLOCK_MONOTONIC: u64 = 1;
    pub const CLOCK_MONOTONIC_COARSE: u64 = 6;
    pub const CLOCK_BOOTTIME: u64 = 7;
}

/// Signal numbers (arch/x86/include/uapi/asm/signal.h).
pub mod signal {
    pub const SIGKILL: u8 = 9;
    pub const SIGSEGV: u8 = 11;
    pub const SIGCHLD: u8 = 17;
}

/// Auxiliary vector keys exec puts on the stack
/// (include/uapi/linux/auxvec.h; AT_SYSINFO from i386's
/// arch/x86/include/uapi/asm/auxvec.h).
pub mod auxv {
    pub const AT_NULL: u64 = 0;
    pub const AT_PHDR: u64 = 3;
    pub const AT_PHENT: u64 = 4;
    pub const AT_PHNUM: u64 = 5;
    pub const AT_PAGESZ: u64 = 6;
    pub const AT_ENTRY: u64 = 9;
    /// i386's vsyscall entry (__kernel_vsyscall).
    pub const AT_SYSINFO: u64 = 32;
}
