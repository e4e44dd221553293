//! The kernel's first instructions: a stack, then Rust.

/// The boot stack (64 KiB, in .bss, so it is zero and costs nothing to load).
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

core::arch::global_asm!(
    ".section .text.boot, \"ax\"",
    ".global _start",
    "_start:",
    // RDI holds the boot-info address from the VMM; keep it for kernel_main.
    "    lea rsp, [rip + {stack} + {size}]",
    "    xor ebp, ebp",
    "    call {main}",
    "2:  hlt",
    "    jmp 2b",
    stack = sym BOOT_STACK,
    size = const BOOT_STACK_SIZE,
    main = sym crate::kernel_main,
);

#[repr(C, align(4096))]
struct Stack([u8; BOOT_STACK_SIZE]);

/// Placed right above the linker script's `__stack_guard` page.
#[unsafe(link_section = ".bss.boot_stack")]
static mut BOOT_STACK: Stack = Stack([0; BOOT_STACK_SIZE]);
