//! User programs, in assembly, embedded in the kernel image. Each is
//! position-independent: exec copies its bytes to the user code address
//! (0x08048000, where i386 ELF executables traditionally start) and runs it
//! in ring 3. They use the x86-64 Linux system-call numbers and registers
//! (RAX number; RDI, RSI, RDX, R10, R8, R9 arguments).

/// A program: its name and machine code.
pub struct Program {
    pub name: &'static str,
    pub code: &'static [u8],
}

macro_rules! user_program {
    ($start:ident, $end:ident, $($asm:literal),* $(,)?) => {
        core::arch::global_asm!(
            ".pushsection .rodata.user_programs, \"a\"",
            concat!(".global ", stringify!($start)),
            concat!(stringify!($start), ":"),
            $($asm,)*
            concat!(".global ", stringify!($end)),
            concat!(stringify!($end), ":"),
            ".popsection",
        );
    };
}

// demo: getpid, say hello, mmap 2 MiB and touch every page, check what it
// wrote, munmap, grow the heap with brk and touch it, exit 0. Exits with a
// distinct status if anything reads back wrong.
user_program!(
    user_demo_start,
    user_demo_end,
    "    mov eax, 39", // getpid
    "    syscall",
    "    mov r12, rax",
    "    mov eax, 1", // write(1, msg, len)
    "    mov edi, 1",
    "    lea rsi, [rip + 90f]",
    "    mov edx, 22", // strlen("hello from user space\\n")
    "    syscall",
    "    mov eax, 9", // mmap(0, 2 MiB, RW, PRIVATE|ANON, -1, 0)
    "    xor edi, edi",
    "    mov esi, 0x200000",
    "    mov edx, 3",
    "    mov r10d, 0x22",
    "    mov r8, -1",
    "    xor r9d, r9d",
    "    syscall",
    "    cmp rax, -4096",
    "    ja 80f",
    "    mov rbx, rax",
    "    xor ecx, ecx", // write the page index into each page
    "1:  mov rdx, rcx",
    "    shl rdx, 12",
    "    mov [rbx + rdx], rcx",
    "    inc rcx",
    "    cmp rcx, 512",
    "    jb 1b",
    "    xor ecx, ecx", // read it back
    "2:  mov rdx, rcx",
    "    shl rdx, 12",
    "    cmp [rbx + rdx], rcx",
    "    jne 81f",
    "    inc rcx",
    "    cmp rcx, 512",
    "    jb 2b",
    "    mov eax, 11", // munmap(addr, 2 MiB)
    "    mov rdi, rbx",
    "    mov esi, 0x200000",
    "    syscall",
    "    test rax, rax",
    "    jnz 82f",
    "    mov eax, 12", // brk(0): the current break
    "    xor edi, edi",
    "    syscall",
    "    mov rbx, rax",
    "    lea rdi, [rax + 0x10000]", // brk(+64 KiB)
    "    mov eax, 12",
    "    syscall",
    "    lea rdx, [rbx + 0x10000]",
    "    cmp rax, rdx",
    "    jne 83f",
    "    mov qword ptr [rbx], 0x1234", // touch the new heap, first and last page
    "    mov qword ptr [rbx + 0xfff8], 0x5678",
    "    mov eax, 60", // exit(0)
    "    xor edi, edi",
    "    syscall",
    "80: mov edi, 80",
    "    jmp 89f",
    "81: mov edi, 81",
    "    jmp 89f",
    "82: mov edi, 82",
    "    jmp 89f",
    "83: mov edi, 83",
    "89: mov eax, 60",
    "    syscall",
    "90: .ascii \"hello from user space\\n\"",
    "91:",
);

// segv: reads an address no VMA covers; the kernel must kill it.
user_program!(
    user_segv_start,
    user_segv_end,
    "    mov rax, 0x40000000",
    "    mov rax, [rax]",
    "    mov eax, 60",
    "    xor edi, edi",
    "    syscall",
);

// rowrite: writes to its own code, a read-only and executable VMA.
user_program!(
    user_rowrite_start,
    user_rowrite_end,
    "    lea rax, [rip]",
    "    mov qword ptr [rax], 0",
    "    mov eax, 60",
    "    xor edi, edi",
    "    syscall",
);

// kernel: reads a kernel address; user mode may not.
user_program!(
    user_kernel_start,
    user_kernel_end,
    "    mov rax, 0xc0100000",
    "    mov rax, [rax]",
    "    mov eax, 60",
    "    xor edi, edi",
    "    syscall",
);

// spin: something live for the host inspector. mmap 1 MiB and touch every
// page, grow the heap by 64 KiB with brk and touch its first page, brk once
// more (so the mm_struct the host reads is current), announce itself, then
// loop 2^34 times in ring 3 (seconds, with no system call or fault: only
// the tick takes the CPU from it, when another thread waits for one) and
// exit 0.
user_program!(
    user_spin_start,
    user_spin_end,
    "    mov eax, 9", // mmap(0, 1 MiB, RW, PRIVATE|ANON, -1, 0)
    "    xor edi, edi",
    "    mov esi, 0x100000",
    "    mov edx, 3",
    "    mov r10d, 0x22",
    "    mov r8, -1",
    "    xor r9d, r9d",
    "    syscall",
    "    cmp rax, -4096",
    "    ja 80f",
    "    mov rbx, rax",
    "    xor ecx, ecx", // touch each of the 256 pages
    "1:  mov rdx, rcx",
    "    shl rdx, 12",
    "    mov [rbx + rdx], rcx",
    "    inc rcx",
    "    cmp rcx, 256",
    "    jb 1b",
    "    mov eax, 12", // brk(0)
    "    xor edi, edi",
    "    syscall",
    "    mov r12, rax",
    "    lea rdi, [rax + 0x10000]", // brk(+64 KiB)
    "    mov eax, 12",
    "    syscall",
    "    lea rdx, [r12 + 0x10000]",
    "    cmp rax, rdx",
    "    jne 81f",
    "    mov qword ptr [r12], 0x5a5a", // fault in the heap's first page
    "    mov rdi, rdx",                // brk(same): refreshes the mm_struct
    "    mov eax, 12",
    "    syscall",
    "    mov eax, 1", // write(1, msg, len)
    "    mov edi, 1",
    "    lea rsi, [rip + 90f]",
    "    mov edx, 25", // strlen("spin: spinning in ring 3\n")
    "    syscall",
    "    mov rcx, 0x400000000", // 2^34 iterations
    "2:  dec rcx",
    "    jnz 2b",
    "    mov eax, 60", // exit(0)
    "    xor edi, edi",
    "    syscall",
    "80: mov edi, 80",
    "    jmp 89f",
    "81: mov edi, 81",
    "89: mov eax, 60",
    "    syscall",
    "90: .ascii \"spin: spinning in ring 3\\n\"",
    "91:",
);

// forge: jumps straight to the kernel's syscall entry with a made-up R11
// asking for IOPL 3 and IF, then tries the VMM's exit port. The kernel must
// hand back only user flags, so the `out` faults and the task is killed.
user_program!(
    user_forge_start,
    user_forge_end,
    "    mov r11, 0x3202",
    "    lea rcx, [rip + 1f]",
    "    mov eax, 39",
    "    movabs rdx, offset syscall_entry",
    "    jmp rdx",
    "1:  mov dx, 0x501",
    "    mov eax, 0x77",
    "    out dx, eax",
    "    mov eax, 60",
    "    xor edi, edi",
    "    syscall",
);

// forgerip: the same jump with a non-canonical return address in RCX; the
// kernel must not `iretq` there.
user_program!(
    user_forgerip_start,
    user_forgerip_end,
    "    mov r11, 0x202",
    "    movabs rcx, 0x8000000000000000",
    "    mov eax, 39",
    "    movabs rdx, offset syscall_entry",
    "    jmp rdx",
);

// gsload: loads its own GS and FS (the user data selector: base 0), then
// makes system calls, spins long enough to be interrupted by the tick (and
// preempted, when another thread waits), and takes a page fault, all with
// that GS. A kernel that trusted GS on entry would read its per-CPU data
// at address 0 and crash. Exits 0 if GS and FS still hold its selector or
// the null one (PVM, on the development machines, does not keep a user's
// selectors across kernel entries), 1 if they hold anything else, such as
// a kernel selector.
user_program!(
    user_gsload_start,
    user_gsload_end,
    "    mov eax, 0x1b", // USER_DS
    "    mov gs, eax",
    "    mov fs, eax",
    "    mov eax, 39", // getpid
    "    syscall",
    "    mov eax, 1", // write(1, msg, len)
    "    mov edi, 1",
    "    lea rsi, [rip + 90f]",
    "    mov edx, 32", // strlen("gsload: running with its own GS\n")
    "    syscall",
    "    mov ecx, 0x10000000", // 2^28 iterations in ring 3
    "1:  dec ecx",
    "    jnz 1b",
    "    mov qword ptr [rsp - 0x3000], 1", // a fault on a fresh stack page
    "    mov eax, gs",
    "    mov edx, fs",
    "    or eax, edx", // each is 0x1b or 0: so is their OR
    "    and eax, 0xffff",
    "    jz 2f",
    "    cmp eax, 0x1b",
    "    jne 80f",
    "2:  mov eax, 60", // exit(0)
    "    xor edi, edi",
    "    syscall",
    "80: mov eax, 60", // exit(1)
    "    mov edi, 1",
    "    syscall",
    "90: .ascii \"gsload: running with its own GS\\n\"",
);

unsafe extern "C" {
    safe static user_demo_start: u8;
    safe static user_demo_end: u8;
    safe static user_segv_start: u8;
    safe static user_segv_end: u8;
    safe static user_rowrite_start: u8;
    safe static user_rowrite_end: u8;
    safe static user_kernel_start: u8;
    safe static user_kernel_end: u8;
    safe static user_spin_start: u8;
    safe static user_forge_start: u8;
    safe static user_forge_end: u8;
    safe static user_forgerip_start: u8;
    safe static user_forgerip_end: u8;
    safe static user_spin_end: u8;
    safe static user_gsload_start: u8;
    safe static user_gsload_end: u8;
}

fn span(start: &'static u8, end: &'static u8) -> &'static [u8] {
    crate::arch::mem::kernel_bytes(start, end)
}

/// Every embedded program's name, in the order [`all`] gives them.
pub const NAMES: [&str; 8] = [
    "demo", "segv", "rowrite", "kernel", "spin", "forge", "forgerip", "gsload",
];

/// Every embedded program.
pub fn all() -> [Program; NAMES.len()] {
    let code = [
        span(&user_demo_start, &user_demo_end),
        span(&user_segv_start, &user_segv_end),
        span(&user_rowrite_start, &user_rowrite_end),
        span(&user_kernel_start, &user_kernel_end),
        span(&user_spin_start, &user_spin_end),
        span(&user_forge_start, &user_forge_end),
        span(&user_forgerip_start, &user_forgerip_end),
        span(&user_gsload_start, &user_gsload_end),
    ];
    core::array::from_fn(|i| Program {
        name: NAMES[i],
        code: code[i],
    })
}

pub fn find(name: &str) -> Option<Program> {
    all().into_iter().find(|p| p.name == name)
}
