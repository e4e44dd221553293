//! `rt`: the runtime of the guest's user programs. It starts a program
//! (`_start` reads the initial stack exec built: argc, argv, envp, the
//! auxiliary vector), wraps the system calls the kernel supports, and
//! ends the program with `exit` when `main` returns or panics.
//!
//! System calls use the x86-64 Linux numbers and registers: RAX holds the
//! number and the result (-errno on failure); RDI, RSI, RDX, R10, R8, R9
//! the arguments; `syscall` clobbers RCX and R11.
#![no_std]

use core::arch::asm;
use core::sync::atomic::{AtomicU32, Ordering};

// The ABI's numbers and flags, defined once with the kernel's (abi::linux).
pub use abi::linux::auxv::*;
pub use abi::linux::errno::*;
pub use abi::linux::mman::*;
pub use abi::linux::nr;
pub use abi::linux::sched::*;
pub use abi::linux::signal::*;
pub use abi::linux::time::*;
pub use abi::linux::wait::*;

/// struct timespec.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: i64,
}

impl Timespec {
    pub const fn from_ms(ms: i64) -> Self {
        Timespec {
            sec: ms / 1000,
            nsec: ms % 1000 * 1_000_000,
        }
    }

    pub const fn as_ns(&self) -> i64 {
        self.sec * 1_000_000_000 + self.nsec
    }
}

/// A raw system call with up to six arguments.
pub fn syscall(nr: u64, args: [u64; 6]) -> i64 {
    let ret: i64;
    // SAFETY: `syscall` enters the kernel, which changes no memory of this
    // program except through the arguments' own contract (e.g. mmap), and
    // clobbers only RCX and R11.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as i64 => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// The errno of a failed call, or the call's value.
fn result(ret: i64) -> Result<u64, i64> {
    if (-4095..0).contains(&ret) {
        Err(-ret)
    } else {
        Ok(ret as u64)
    }
}

/// write(fd, buf, len): how many bytes went out.
pub fn write(fd: u64, buf: &[u8]) -> Result<u64, i64> {
    result(syscall(
        nr::WRITE,
        [fd, buf.as_ptr() as u64, buf.len() as u64, 0, 0, 0],
    ))
}

/// Writes `text` to standard output.
pub fn print(text: &str) {
    let _ = write(1, text.as_bytes());
}

/// A line built with `write!` and written with one write() (so the lines
/// of processes running at once do not mix); what does not fit is cut.
pub struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    pub const fn new() -> Self {
        Line {
            buf: [0; 256],
            len: 0,
        }
    }

    /// Writes the line to standard output.
    pub fn print(&self) {
        let _ = write(1, &self.buf[..self.len]);
    }
}

impl Default for Line {
    fn default() -> Self {
        Line::new()
    }
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Formats `args` and writes them to standard output in one write() (at
/// most 256 bytes): what `println!` calls.
pub fn print_fmt(args: core::fmt::Arguments) {
    let mut line = Line::new();
    let _ = core::fmt::Write::write_fmt(&mut line, args);
    line.print();
}

/// `println!` for the programs: one line, one write().
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::print_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub fn getpid() -> i64 {
    syscall(nr::GETPID, [0; 6])
}

/// gettid(): the calling thread's id (a process's first thread has its
/// pid).
pub fn gettid() -> i64 {
    syscall(nr::GETTID, [0; 6])
}

/// getppid(): the parent's pid (0 for the programs the kernel started).
pub fn getppid() -> i64 {
    syscall(nr::GETPPID, [0; 6])
}

/// fork(): `Ok(0)` in the child, `Ok(child's pid)` in the parent.
pub fn fork() -> Result<u64, i64> {
    result(syscall(nr::FORK, [0; 6]))
}

/// clone(flags, newsp, 0, 0, 0): a fork-like clone (the child returns 0
/// from this call, on the stack at `newsp`, 0: a copy of this one's), or
/// one the kernel refuses; threads start with [`spawn_thread`].
pub fn clone(flags: u64, newsp: u64) -> Result<u64, i64> {
    result(syscall(nr::CLONE, [flags, newsp, 0, 0, 0, 0]))
}

/// Starts a thread as pthread_create() does: clone(CLONE_PTHREAD) on the
/// stack whose top is `stack_top` (16-byte aligned), with FS base `tls`,
/// running `entry(arg)`; the thread then exits (itself only) with the
/// result as its status. The kernel stores the new TID in `tid` before
/// the thread runs and writes 0 there when it exits; [`join`] waits for
/// that, so `tid` must stay valid until then. Returns the TID.
pub fn spawn_thread(
    stack_top: u64,
    tls: u64,
    tid: &AtomicU32,
    entry: extern "C" fn(u64) -> u64,
    arg: u64,
) -> Result<u64, i64> {
    let tid = tid.as_ptr() as u64;
    let ret: i64;
    // SAFETY: the clone shares this address space; the new thread starts
    // on its own stack (the caller's `stack_top`) at the instruction after
    // `syscall` with RAX 0, with every other register as here, so it only
    // runs the code below: `entry(arg)`, then exit, never returning into
    // this function's frame. This thread gets the TID in RAX and goes on
    // with only RAX, RCX and R11 changed.
    unsafe {
        asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r13",
            "call r12",
            "mov rdi, rax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const nr::EXIT,
            inlateout("rax") nr::CLONE as i64 => ret,
            in("rdi") CLONE_PTHREAD,
            in("rsi") stack_top,
            in("rdx") tid,
            in("r10") tid,
            in("r8") tls,
            in("r12") entry as usize as u64,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    result(ret)
}

/// pthread_join() without a futex (the kernel has none): yields until the
/// kernel has cleared the thread's `tid` word at its exit.
pub fn join(tid: &AtomicU32) {
    while tid.load(Ordering::Acquire) != 0 {
        let _ = sched_yield();
    }
}

/// exit(code): ends the calling thread only; the process ends with its
/// last thread.
pub fn exit_thread(code: i32) -> ! {
    syscall(nr::EXIT, [code as u64, 0, 0, 0, 0, 0]);
    loop {
        // SAFETY: `ud2` only raises #UD, which ends the process.
        unsafe { asm!("ud2", options(nomem, nostack)) };
    }
}

/// How a child ended, from the status wait4() stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// WIFEXITED: exit(code).
    Exited(i32),
    /// WIFSIGNALED: killed by this signal.
    Killed(u8),
}

impl Status {
    pub fn from_raw(status: i32) -> Status {
        match status & 0x7f {
            0 => Status::Exited((status >> 8) & 0xff),
            signal => Status::Killed(signal as u8),
        }
    }
}

/// wait4(pid, &status, options, NULL): the child reaped (-1: any) and how
/// it ended; `Ok(None)` for WNOHANG with none exited yet.
pub fn wait4(pid: i64, options: u64) -> Result<Option<(u64, Status)>, i64> {
    let mut status: i32 = 0;
    let pid = result(syscall(
        nr::WAIT4,
        [pid as u64, &mut status as *mut i32 as u64, options, 0, 0, 0],
    ))?;
    Ok((pid != 0).then(|| (pid, Status::from_raw(status))))
}

/// waitpid(pid, &status, 0): blocks until that child (-1: any) exits.
pub fn waitpid(pid: i64) -> Result<(u64, Status), i64> {
    wait4(pid, 0)?.ok_or(ECHILD)
}

/// execve(path, argv, envp) with `args` as argv and no environment;
/// each argument must end with a NUL (`"name\0"`). Returns only on
/// failure, with the errno.
pub fn execve(path: &[u8], args: &[&[u8]]) -> i64 {
    const MAX: usize = 16;
    let mut argv = [0u64; MAX + 1];
    for (slot, arg) in argv.iter_mut().zip(args.iter().take(MAX)) {
        *slot = arg.as_ptr() as u64;
    }
    let envp = [0u64];
    -syscall(
        nr::EXECVE,
        [
            path.as_ptr() as u64,
            argv.as_ptr() as u64,
            envp.as_ptr() as u64,
            0,
            0,
            0,
        ],
    )
}

/// mmap(addr, len, prot, flags, -1, 0): the address of the mapping.
pub fn mmap(addr: u64, len: u64, prot: u64, flags: u64) -> Result<u64, i64> {
    result(syscall(nr::MMAP, [addr, len, prot, flags, u64::MAX, 0]))
}

/// mmap(0, len, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0):
/// the address of fresh demand-zero memory.
pub fn mmap_anon(len: u64) -> Result<u64, i64> {
    mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
}

pub fn munmap(addr: u64, len: u64) -> Result<u64, i64> {
    result(syscall(nr::MUNMAP, [addr, len, 0, 0, 0, 0]))
}

pub fn mprotect(addr: u64, len: u64, prot: u64) -> Result<u64, i64> {
    result(syscall(nr::MPROTECT, [addr, len, prot, 0, 0, 0]))
}

pub fn sched_yield() -> Result<u64, i64> {
    result(syscall(nr::SCHED_YIELD, [0; 6]))
}

/// nanosleep(req, NULL).
pub fn nanosleep(req: &Timespec) -> Result<u64, i64> {
    let req: *const Timespec = req;
    result(syscall(nr::NANOSLEEP, [req as u64, 0, 0, 0, 0, 0]))
}

/// clock_gettime(clock, &ts).
pub fn clock_gettime(clock: u64) -> Result<Timespec, i64> {
    let mut ts = Timespec::default();
    let at: *mut Timespec = &mut ts;
    result(syscall(nr::CLOCK_GETTIME, [clock, at as u64, 0, 0, 0, 0]))?;
    Ok(ts)
}

/// brk(addr): the new break, or the current one when it cannot move
/// (brk(0) asks for it).
pub fn brk(addr: u64) -> u64 {
    syscall(nr::BRK, [addr, 0, 0, 0, 0, 0]) as u64
}

/// exit_group(code): the whole process ends, every thread of it.
pub fn exit(code: i32) -> ! {
    syscall(nr::EXIT_GROUP, [code as u64, 0, 0, 0, 0, 0]);
    // exit does not return; should it, fault rather than run on.
    loop {
        // SAFETY: `ud2` only raises #UD, which ends the task.
        unsafe { asm!("ud2", options(nomem, nostack)) };
    }
}

/// What exec left on the stack: the arguments, the environment and the
/// auxiliary vector.
#[repr(C)]
pub struct Startup {
    sp: *const u64,
}

impl Startup {
    pub fn argc(&self) -> u64 {
        // SAFETY: exec put argc at the initial stack pointer.
        unsafe { self.sp.read() }
    }

    /// Argument `i` (argv[i]) without its NUL, if there is one.
    pub fn arg(&self, i: u64) -> Option<&[u8]> {
        if i >= self.argc() {
            return None;
        }
        // SAFETY: exec put argc pointers to NUL-terminated strings after
        // argc, on the mapped stack; the string is read up to its NUL.
        unsafe {
            let s = self.sp.add(1 + i as usize).read() as *const u8;
            let mut len = 0;
            while s.add(len).read() != 0 {
                len += 1;
            }
            Some(core::slice::from_raw_parts(s, len))
        }
    }

    /// The auxiliary vector's value for `key`.
    pub fn aux(&self, key: u64) -> Option<u64> {
        // SAFETY: exec laid out argc, argv[argc] and its NULL, envp and its
        // NULL, then (key, value) pairs ending with AT_NULL, all on the
        // mapped stack; reading stops at each terminator.
        unsafe {
            let mut p = self.sp.add(1 + self.argc() as usize + 1);
            while p.read() != 0 {
                p = p.add(1);
            }
            p = p.add(1);
            loop {
                match p.read() {
                    AT_NULL => return None,
                    k if k == key => return Some(p.add(1).read()),
                    _ => p = p.add(2),
                }
            }
        }
    }
}

/// Defines the program's entry: `rt::entry!(main)` with
/// `fn main(start: &rt::Startup) -> i32`; its result is the exit status.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        extern "C" fn rt_main(start: &$crate::Startup) -> i32 {
            $main(start)
        }
    };
}

unsafe extern "C" {
    fn rt_main(start: &Startup) -> i32;
}

// _start: the initial stack pointer (argc's address) to rt_start, on a
// 16-byte aligned stack as the ABI wants at a call.
core::arch::global_asm!(
    ".pushsection .text.start, \"ax\"",
    ".global _start",
    "_start:",
    "    xor ebp, ebp",
    "    mov rdi, rsp",
    "    and rsp, -16",
    "    call {start}",
    "    ud2",
    ".popsection",
    start = sym rt_start,
);

extern "C" fn rt_start(sp: *const u64) -> ! {
    let start = Startup { sp };
    // SAFETY: every program defines rt_main with this signature (entry!).
    exit(unsafe { rt_main(&start) })
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    let _ = write(2, b"user program panicked\n");
    exit(101)
}
