//! Turning interrupts off and back on (arch/x86/include/asm/irqflags.h).

/// RFLAGS.IF.
const X86_EFLAGS_IF: u64 = 1 << 9;

/// Interrupts are off until this drops; then they are as they were
/// (local_irq_save() / local_irq_restore()).
#[must_use = "interrupts come back on when the guard drops"]
pub struct IrqSaved {
    were_on: bool,
}

/// local_irq_save(): turns interrupts off and remembers whether they were on.
#[inline(always)]
pub fn local_irq_save() -> IrqSaved {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack and clears IF; no memory of
    // the program is touched, and (without `nomem`) it orders the
    // compiler's accesses around it.
    unsafe { core::arch::asm!("pushfq", "pop {}", "cli", out(reg) flags) }
    IrqSaved {
        were_on: flags & X86_EFLAGS_IF != 0,
    }
}

impl Drop for IrqSaved {
    #[inline(always)]
    fn drop(&mut self) {
        if self.were_on {
            // SAFETY: sets IF again, as it was when the guard was made.
            unsafe { core::arch::asm!("sti", options(nostack)) }
        }
    }
}
