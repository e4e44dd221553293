//! Interrupts from the local APIC: the tick, cross-CPU function calls and
//! reschedule requests (the sysvec_* handlers of arch/x86/kernel).

use crate::arch::apic;
use crate::arch::trap::TrapFrame;
use crate::{sched, smp, time};

/// Every APIC vector the IDT routes here. Runs with interrupts off (the
/// gates are interrupt gates); acknowledges before handling, as Linux's
/// handlers do, so a new interrupt can be raised meanwhile.
pub fn handle_interrupt(frame: &mut TrapFrame) {
    let vector = frame.vector as u8;
    if vector == apic::SPURIOUS_APIC_VECTOR {
        // Not a real interrupt: no EOI (spurious_interrupt()).
        return;
    }
    apic::eoi();
    sched::irq_enter();
    match vector {
        apic::LOCAL_TIMER_VECTOR => time::tick(),
        apic::CALL_FUNCTION_VECTOR => smp::run_pending_calls(),
        apic::RESCHEDULE_VECTOR => sched::reschedule_interrupt(),
        _ => {}
    }
    sched::irq_exit();
}
