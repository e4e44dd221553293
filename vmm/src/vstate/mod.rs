//! The machine's state (Firecracker's vstate/): the VM with guest RAM
//! mapped into it, its vCPU threads, and their registers.

mod regs;
mod vcpu;
mod vm;

pub use regs::{bits, Regs, GPR_NAMES};
pub use vcpu::{CpuStarter, Outcome, PauseError, Paused, StartError, Translated, Vcpus};
pub use vm::{open_kvm, Vm, VmError};
