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

/// Reads a model-specific register.
pub fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: the kernel only reads architectural MSRs it knows exist
    // (APIC base, x2APIC registers, FS and KERNEL_GS base); reading has no
    // side effects on them.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags))
    }
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes a model-specific register.
///
/// # Safety
/// The value must keep the machine's invariants: e.g. an entry point or a
/// GS base must point at what the kernel expects there.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller's promise.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags))
    }
}

/// Raises #UD.
pub fn invalid_opcode() -> ! {
    // SAFETY: ud2 traps; the handler does not return here.
    unsafe { core::arch::asm!("ud2", options(noreturn)) }
}

/// Reads a u64 at any virtual address: a deliberate access for the
/// `fault=` fixtures, which aim it at an unmapped address.
///
/// # Safety
/// `va` must be unmapped (the access then raises #PF, which is the point)
/// or hold an initialised u64 that nothing writes meanwhile.
pub unsafe fn read_u64_at(va: u64) -> u64 {
    // SAFETY: the caller's promise. Volatile so the compiler keeps it.
    unsafe { core::ptr::read_volatile(va as *const u64) }
}

/// Switches to the address space rooted at physical `pml4`. Flushes every
/// non-global TLB entry.
///
/// # Safety
/// `pml4` must be a complete set of tables that maps the running kernel
/// (code, stack, data) at the addresses it runs at.
pub unsafe fn write_cr3(pml4: u64) {
    // SAFETY: the caller guarantees the new tables map the kernel.
    unsafe { core::arch::asm!("mov cr3, {}", in(reg) pml4, options(nostack, preserves_flags)) }
}

/// Drops the TLB entry for one virtual address (`invlpg`).
pub fn invlpg(va: u64) {
    // SAFETY: invalidating a TLB entry never breaks memory safety; at worst
    // the next access walks the tables again.
    unsafe { core::arch::asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) }
}

/// Flushes the whole TLB, global entries included, by toggling CR4.PGE
/// (what __flush_tlb_all() does when PGE is on).
pub fn flush_tlb_all() {
    let cr4 = read_cr4();
    // SAFETY: clearing and restoring PGE only flushes the TLB.
    unsafe {
        core::arch::asm!("mov cr4, {}", in(reg) cr4 & !CR4_PGE, options(nostack, preserves_flags));
        core::arch::asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags));
    }
}

pub const CR0_WP: u64 = 1 << 16;
pub const CR4_PGE: u64 = 1 << 7;

/// Turns on global pages, so kernel mappings survive CR3 switches.
pub fn enable_global_pages() {
    let cr4 = read_cr4() | CR4_PGE;
    // SAFETY: setting PGE only changes which TLB entries survive CR3 loads.
    unsafe { core::arch::asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags)) }
}

/// Writes a u64 at any virtual address: a deliberate access for the
/// `fault=` fixtures, which aim it at memory that must not be writable.
///
/// # Safety
/// The page tables must refuse the write (#PF; the handler reports it and
/// stops the kernel), or `va` must be memory the caller owns.
pub unsafe fn write_u64_at(va: u64, value: u64) {
    // SAFETY: the caller's promise.
    unsafe { core::ptr::write_volatile(va as *mut u64, value) }
}
