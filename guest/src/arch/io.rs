//! Port I/O: the console, hypercalls and the exit port (see `abi::io`).

use abi::io::{Hypercall, EXIT_PORT, HYPERCALL_PORT, SERIAL_COM1, SERIAL_COM1_LSR};
use core::mem::size_of;

use abi::layout::{pa, PAGE_OFFSET};

fn outb(port: u16, value: u8) {
    // SAFETY: port I/O to the VMM's devices has no effect on memory.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

fn outl(port: u16, value: u32) {
    // SAFETY: as `outb`. No `nomem`: the VMM may read and write guest memory
    // during the exit (a hypercall block), so pending stores must be done
    // before, and loads redone after.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, preserves_flags))
    }
}

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as `outb`.
    unsafe {
        core::arch::asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    value
}

/// Writes bytes to COM1 one at a time (one VM exit each): the fallback path
/// for when the buffered console cannot be used.
pub fn serial_write(bytes: &[u8]) {
    for &b in bytes {
        while inb(SERIAL_COM1_LSR) & 0x20 == 0 {}
        outb(SERIAL_COM1, b);
    }
}

/// Makes a hypercall whose block lives in the kernel image or low memory
/// (so its physical address is `__pa` of its virtual one, where the VMM
/// writes `ret`). Returns `call.ret`.
pub fn hypercall(call: &mut Hypercall) -> u64 {
    let addr = call as *mut Hypercall as u64;
    let len = size_of::<Hypercall>() as u64;
    let image = super::mem::kernel_image();
    let in_image = |pa: u64| pa >= image.start && pa + len <= image.end;
    assert!(
        addr >= PAGE_OFFSET && (in_image(pa(addr)) || super::mem::direct_mapped(pa(addr), len)),
        "hypercall block at {addr:#x} is not direct-mapped"
    );
    outl(HYPERCALL_PORT, pa(addr) as u32);
    // The VMM wrote `ret` behind the compiler's back: read it volatilely.
    // SAFETY: `call` is a valid, exclusive reference.
    unsafe { core::ptr::read_volatile(&call.ret) }
}

/// Ends the VM with `status` as the VMM's exit status.
pub fn exit(status: u32) -> ! {
    outl(EXIT_PORT, status);
    loop {
        crate::arch::cpu::halt();
    }
}

fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as `outb`.
    unsafe {
        core::arch::asm!("in eax, dx", out("eax") value, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    value
}

/// Milliseconds of host time since the VMM started the guest (one VM exit).
pub fn clock_ms() -> u32 {
    inl(abi::io::CLOCK_PORT)
}
