//! The vCPU registers: one type for the VM (published when a vCPU pauses
//! or ends, shown in crash reports), the dump writer and reader, and the
//! inspector.

use std::fmt;

use kvm_ioctls::VcpuFd;
use serde::Serialize;

/// One vCPU's registers, as much as a dump keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Regs {
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    /// cs, ds, es, fs, gs, ss selectors.
    pub sel: [u16; 6],
    pub fs_base: u64,
    pub gs_base: u64,
    pub gdt: (u64, u16),
    pub idt: (u64, u16),
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// GPR names in `Regs::gpr` order (KVM's kvm_regs order).
pub const GPR_NAMES: [&str; 16] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

/// The control-register and EFER bits the VMM sets and reads, defined once
/// (Intel SDM vol. 3, 2.5 and 2.2.1).
pub mod bits {
    pub const CR0_PE: u64 = 1 << 0;
    pub const CR0_MP: u64 = 1 << 1;
    pub const CR0_ET: u64 = 1 << 4;
    pub const CR0_NE: u64 = 1 << 5;
    pub const CR0_WP: u64 = 1 << 16;
    pub const CR0_PG: u64 = 1 << 31;
    pub const CR4_PSE: u64 = 1 << 4;
    pub const CR4_PAE: u64 = 1 << 5;
    pub const CR4_LA57: u64 = 1 << 12;
    pub const EFER_SCE: u64 = 1 << 0;
    pub const EFER_LME: u64 = 1 << 8;
    pub const EFER_LMA: u64 = 1 << 10;
    pub const EFER_NXE: u64 = 1 << 11;
}

use bits::CR0_PE;
/// CS selector and RIP after a reset (CS base 0xffff0000).
const RESET_CS: u16 = 0xf000;
const RESET_RIP: u64 = 0xfff0;

impl Regs {
    pub fn from_kvm(r: &kvm_bindings::kvm_regs, s: &kvm_bindings::kvm_sregs) -> Self {
        Regs {
            gpr: [
                r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11,
                r.r12, r.r13, r.r14, r.r15,
            ],
            rip: r.rip,
            rflags: r.rflags,
            sel: [
                s.cs.selector,
                s.ds.selector,
                s.es.selector,
                s.fs.selector,
                s.gs.selector,
                s.ss.selector,
            ],
            fs_base: s.fs.base,
            gs_base: s.gs.base,
            gdt: (s.gdt.base, s.gdt.limit),
            idt: (s.idt.base, s.idt.limit),
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer,
        }
    }

    /// The registers of `vcpu`, or None if KVM cannot give them.
    pub fn read(vcpu: &VcpuFd) -> Option<Self> {
        Some(Regs::from_kvm(
            &vcpu.get_regs().ok()?,
            &vcpu.get_sregs().ok()?,
        ))
    }

    /// The general register called `name` (0 for an unknown name).
    pub fn gpr(&self, name: &str) -> u64 {
        GPR_NAMES
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| self.gpr[i])
    }

    /// Whether these are the registers of a vCPU just reset, not the
    /// guest's: real mode (CR0.PE clear) at the reset vector, CS 0xf000
    /// and RIP 0xfff0. The guest never runs in real mode (it enters in
    /// long mode), but on AMD, KVM INITs the vCPU when it intercepts the
    /// shutdown, before it reports KVM_EXIT_SHUTDOWN
    /// (shutdown_interception() in arch/x86/kvm/svm/svm.c: the VMCB is
    /// undefined after a shutdown; init_vmcb() sets CS to 0xf000).
    pub fn is_reset_state(&self) -> bool {
        self.cr0 & CR0_PE == 0 && self.sel[0] == RESET_CS && self.rip == RESET_RIP
    }
}

/// The crash report's register block.
impl fmt::Display for Regs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_reset_state() {
            writeln!(f, "  the vCPU's reset state, not the guest's:")?;
        }
        writeln!(
            f,
            "  RIP={:#018x} RSP={:#018x} RFLAGS={:#x}",
            self.rip,
            self.gpr("rsp"),
            self.rflags
        )?;
        write!(f, " ")?;
        for (name, value) in GPR_NAMES.iter().zip(self.gpr).take(6) {
            write!(f, " {}={:#x}", name.to_uppercase(), value)?;
        }
        writeln!(f)?;
        write!(
            f,
            "  CR0={:#x} CR2={:#x} CR3={:#x} CR4={:#x} EFER={:#x}",
            self.cr0, self.cr2, self.cr3, self.cr4, self.efer
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long-mode guest's registers at a triple fault.
    fn faulting() -> Regs {
        let mut r = Regs {
            rip: 0xC010_2345,
            rflags: 0x46,
            sel: [0x08, 0x10, 0x10, 0x10, 0x10, 0x10],
            cr0: 0x8001_0033,
            cr2: 0xDEAD_B000,
            cr3: 0x9000,
            cr4: 0x20,
            efer: 0xD01,
            ..Default::default()
        };
        r.gpr[6] = 0xC07F_FF00;
        r
    }

    /// What KVM's INIT leaves (kvm_vcpu_reset(vcpu, true)): real mode at
    /// the reset vector; CR0 keeps CD and NW, so either value is seen.
    fn reset(cr0: u64) -> Regs {
        Regs {
            rip: 0xfff0,
            sel: [0xf000, 0, 0, 0, 0, 0],
            rflags: 0x2,
            cr0,
            ..Default::default()
        }
    }

    #[test]
    fn reset_state_is_told_from_a_faulting_one() {
        assert!(reset(0x6000_0010).is_reset_state());
        assert!(reset(0x10).is_reset_state());
        assert!(!faulting().is_reset_state());
        assert!(
            !Regs::default().is_reset_state(),
            "registers that could not be read"
        );
        let protected = Regs {
            cr0: 0x11,
            ..reset(0x10)
        };
        assert!(!protected.is_reset_state());
        let elsewhere = Regs {
            rip: 0xfff1,
            ..reset(0x10)
        };
        assert!(!elsewhere.is_reset_state());

        let shown = reset(0x6000_0010).to_string();
        assert!(
            shown.starts_with("  the vCPU's reset state, not the guest's:\n"),
            "{shown}"
        );
        assert!(shown.contains("RIP=0x000000000000fff0"), "{shown}");
        let faulting = faulting().to_string();
        assert!(!faulting.contains("reset state"));
        assert!(
            faulting.contains("RSP=0x00000000c07fff00 RFLAGS=0x46\n  RAX=0x0"),
            "{faulting}"
        );
    }
}
