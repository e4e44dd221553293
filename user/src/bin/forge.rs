//! forge: jumps straight to the kernel's system-call entry (AT_SYSINFO)
//! with a made-up R11 asking for IOPL 3 and IF, then tries the VMM's exit
//! port. The kernel must hand back only user flags, so the `out` faults
//! and the task is killed.
#![no_std]
#![no_main]

rt::entry!(main);

fn main(start: &rt::Startup) -> i32 {
    let Some(entry) = start.aux(rt::AT_SYSINFO) else {
        return 80;
    };
    // SAFETY: the jump is a system call (getpid) with forged flags that
    // returns to label 2; the `out` is meant to fault.
    unsafe {
        core::arch::asm!(
            "mov r11, 0x3202",
            "lea rcx, [rip + 2f]",
            "mov eax, {getpid}",
            "jmp rsi",
            "2: mov dx, {exit_port}",
            "mov eax, 0x77",
            "out dx, eax",
            getpid = const rt::nr::GETPID,
            exit_port = const abi::io::EXIT_PORT,
            in("rsi") entry,
            out("rax") _, out("rcx") _, out("rdx") _, out("r11") _,
        );
    }
    0
}
