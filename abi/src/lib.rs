//! The guest/host interface, defined once and used by both `vmm` and the guest kernel,
//! and the user ABI the guest kernel shares with its user programs.
//!
//! - [`layout`]: the guest kernel's virtual layout (i386 PAE constants) and the
//!   guest-physical map the VMM builds (boot structures, the 32-bit hole).
//! - [`boot`]: the boot-info structure the VMM hands the guest in RDI.
//! - [`cmdline`]: the guest's command line, parsed and checked.
//! - [`io`]: I/O ports and hypercalls.
//! - [`vmcoreinfo`]: the descriptor the guest publishes for host inspection.
//! - [`linux`]: the Linux x86-64 user ABI between the guest kernel and its
//!   user programs (system-call numbers, errno values, flags).
#![no_std]
#![forbid(unsafe_code)]

pub mod boot;
pub mod cmdline;
pub mod io;
pub mod layout;
pub mod linux;
pub mod vmcoreinfo;
