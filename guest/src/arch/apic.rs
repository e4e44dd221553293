//! The local APIC in x2APIC mode: its timer and inter-processor interrupts.
//!
//! x2APIC registers are MSRs (0x800 + the xAPIC offset / 16), so nothing has
//! to be mapped: Linux's x2apic_enable() and native_apic_msr_write(). KVM's
//! in-kernel irqchip emulates x2APIC on every host, whatever the hardware.

use super::cpu;

/// The vectors Linux uses (arch/x86/include/asm/irq_vectors.h).
pub const LOCAL_TIMER_VECTOR: u8 = 0xec;
pub const CALL_FUNCTION_VECTOR: u8 = 0xfb;
pub const RESCHEDULE_VECTOR: u8 = 0xfd;
pub const SPURIOUS_APIC_VECTOR: u8 = 0xff;

/// Every device vector the IDT routes to the interrupt handler.
pub const VECTORS: [u8; 4] = [
    LOCAL_TIMER_VECTOR,
    CALL_FUNCTION_VECTOR,
    RESCHEDULE_VECTOR,
    SPURIOUS_APIC_VECTOR,
];

const MSR_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;

const MSR_X2APIC_TPR: u32 = 0x808;
const MSR_X2APIC_EOI: u32 = 0x80b;
const MSR_X2APIC_SPIV: u32 = 0x80f;
const MSR_X2APIC_ICR: u32 = 0x830;
const MSR_X2APIC_LVTT: u32 = 0x832;
const MSR_X2APIC_LVT0: u32 = 0x835;
const MSR_X2APIC_LVT1: u32 = 0x836;
const MSR_X2APIC_LVTERR: u32 = 0x837;
const MSR_X2APIC_TMICT: u32 = 0x838;
const MSR_X2APIC_TDCR: u32 = 0x83e;

const APIC_SPIV_ENABLED: u64 = 1 << 8;
const APIC_LVT_MASKED: u64 = 1 << 16;
const APIC_LVT_TIMER_PERIODIC: u64 = 1 << 17;
/// Timer divide configuration: divide by 16 (APIC_TDR_DIV_16).
const APIC_TDR_DIV_16: u64 = 0b0011;
/// The timer counts once every this many APIC bus cycles (APIC_TDR_DIV_16).
pub const TIMER_DIVISOR: u64 = 16;
const APIC_DM_FIXED: u64 = 0;
const APIC_DEST_PHYSICAL: u64 = 0;

/// Whether CPUID says this CPU has an x2APIC (leaf 1, ECX bit 21).
pub fn has_x2apic() -> bool {
    core::arch::x86_64::__cpuid(1).ecx & (1 << 21) != 0
}

/// setup_local_APIC(): switches this CPU's APIC to x2APIC mode, enables it
/// with the spurious vector, accepts every priority, and masks the LINT
/// pins and errors (no legacy PIC routing; the timer is set up apart).
/// Interrupts stay off until the caller enables them.
pub fn init_local_apic() {
    let base = cpu::rdmsr(MSR_APIC_BASE);
    // xAPIC must be enabled before x2APIC (SDM 10.12.5: EN=1, EXTD=0 ->
    // EN=1, EXTD=1); the VMM's reset state already has EN set.
    let enabled = base | APIC_BASE_ENABLE;
    if base != enabled {
        write_apic_base(enabled);
    }
    write_apic_base(enabled | APIC_BASE_X2APIC);
    write(MSR_X2APIC_TPR, 0);
    write(MSR_X2APIC_LVT0, APIC_LVT_MASKED);
    write(MSR_X2APIC_LVT1, APIC_LVT_MASKED);
    write(MSR_X2APIC_LVTERR, APIC_LVT_MASKED);
    write(
        MSR_X2APIC_SPIV,
        APIC_SPIV_ENABLED | u64::from(SPURIOUS_APIC_VECTOR),
    );
}

/// Starts this CPU's periodic timer: one LOCAL_TIMER_VECTOR interrupt
/// every `count` timer counts (at the divide-by-16 rate).
pub fn timer_start_periodic(count: u32) {
    write(MSR_X2APIC_TDCR, APIC_TDR_DIV_16);
    write(
        MSR_X2APIC_LVTT,
        APIC_LVT_TIMER_PERIODIC | u64::from(LOCAL_TIMER_VECTOR),
    );
    write(MSR_X2APIC_TMICT, u64::from(count));
}

/// Stops this CPU's timer (an initial count of 0 disarms it).
pub fn timer_stop() {
    write(MSR_X2APIC_TMICT, 0);
}

/// Sends a fixed interrupt with `vector` to the CPU with `apic_id`
/// (x2apic_send_IPI(): one ICR write, destination in the high half).
pub fn send_ipi(apic_id: u32, vector: u8) {
    write(
        MSR_X2APIC_ICR,
        (u64::from(apic_id) << 32) | APIC_DEST_PHYSICAL | APIC_DM_FIXED | u64::from(vector),
    );
}

/// Acknowledges the interrupt being handled (ack_APIC_irq()).
pub fn eoi() {
    write(MSR_X2APIC_EOI, 0);
}

fn write(msr: u32, value: u64) {
    // SAFETY: x2APIC registers only change how this CPU takes and sends
    // interrupts; every vector they name has a gate in the IDT.
    unsafe { cpu::wrmsr(msr, value) }
}

fn write_apic_base(value: u64) {
    // SAFETY: keeps the APIC at its reset base address and only turns on
    // the APIC and its x2APIC mode.
    unsafe { cpu::wrmsr(MSR_APIC_BASE, value) }
}
