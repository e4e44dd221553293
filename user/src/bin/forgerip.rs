//! forgerip: the forge jump with a non-canonical return address in RCX;
//! the kernel must not `iretq` there.
#![no_std]
#![no_main]

rt::entry!(main);

fn main(start: &rt::Startup) -> i32 {
    let Some(entry) = start.aux(rt::AT_SYSINFO) else {
        return 80;
    };
    // SAFETY: the jump is a system call the kernel must refuse to return
    // from; the task ends there.
    unsafe {
        core::arch::asm!(
            "mov r11, 0x202",
            "movabs rcx, 0x8000000000000000",
            "mov eax, {getpid}",
            "jmp rsi",
            getpid = const rt::nr::GETPID,
            in("rsi") entry,
            options(noreturn),
        );
    }
}
