//! Control registers and privileged instructions.

macro_rules! read_cr {
    ($name:ident, $reg:literal) => {
        pub fn $name() -> u64 {
            let value: u64;
            // SAFETY: reading a control register has no side effects.
            unsafe { core::arch::asm!(concat!("mov {}, ", $reg), out(reg) value, options(nomem, nostack, preserves_flags)) }
            value
        }
    };
}

read_cr!(read_cr0, "cr0");
read_cr!(read_cr2, "cr2");
read_cr!(read_cr3, "cr3");
read_cr!(read_cr4, "cr4");

pub fn halt() {
    // SAFETY: HLT only waits; with interrupts off it never returns on bare
    // metal and exits to the VMM here.
    unsafe { core::arch::asm!("hlt", options(nomem, nostack)) }
}

/// Raises #UD.
pub fn invalid_opcode() -> ! {
    // SAFETY: ud2 traps; the handler does not return here.
    unsafe { core::arch::asm!("ud2", options(noreturn)) }
}

/// Reads a u64 at any virtual address, faulting if it is not mapped: only for
/// the fault self-tests.
pub fn read_u64_at(va: u64) -> u64 {
    // SAFETY: a deliberate access; an unmapped address raises #PF, which is
    // the point. Volatile so the compiler keeps it.
    unsafe { core::ptr::read_volatile(va as *const u64) }
}
