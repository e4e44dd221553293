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

/// A spin lock held with interrupts off (spin_lock_irqsave()): dropping
/// it releases the lock first and only then restores interrupts, so an
/// interrupt handler that takes the same lock cannot find it held by the
/// code it interrupted. (A `let _irqs = local_irq_save();` followed by a
/// tail expression `f(&LOCK.lock())` gets the order wrong: the tail's
/// temporary guard outlives the block's locals.)
pub struct IrqSafeGuard<'a, T> {
    // Fields drop in declaration order: the lock, then the flags.
    guard: spin::MutexGuard<'a, T>,
    _irqs: IrqSaved,
}

/// spin_lock_irqsave(lock): interrupts off, then the lock.
pub fn lock_irqsave<T>(lock: &spin::Mutex<T>) -> IrqSafeGuard<'_, T> {
    let irqs = local_irq_save();
    IrqSafeGuard {
        guard: lock.lock(),
        _irqs: irqs,
    }
}

impl<T> core::ops::Deref for IrqSafeGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> core::ops::DerefMut for IrqSafeGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// Whether this CPU takes interrupts (!irqs_disabled()).
pub fn irqs_enabled() -> bool {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack; no memory of the program is
    // touched.
    unsafe { core::arch::asm!("pushfq", "pop {}", out(reg) flags, options(preserves_flags)) }
    flags & X86_EFLAGS_IF != 0
}

/// local_irq_enable(). Like the others here, a compiler barrier too.
pub fn local_irq_enable() {
    // SAFETY: every vector the APIC can deliver has a gate in the IDT.
    unsafe { core::arch::asm!("sti", options(nostack)) }
}

/// local_irq_disable().
pub fn local_irq_disable() {
    // SAFETY: masking interrupts only delays them.
    unsafe { core::arch::asm!("cli", options(nostack)) }
}

/// native_safe_halt(): enables interrupts and halts until one arrives. The
/// `sti` shadow covers the `hlt`, so an interrupt pending at `sti` still
/// wakes it.
pub fn safe_halt() {
    // SAFETY: waiting for an interrupt; every vector has a gate.
    unsafe { core::arch::asm!("sti", "hlt", options(nostack)) }
}
