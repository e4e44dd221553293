//! Port I/O between guest and VMM. Every port access is a VM exit costing
//! ~20-30 µs on the development machines, so the console has a buffered path.

/// COM1: a 16550-style UART; each byte written to THR goes to the VMM's stdout.
pub const SERIAL_COM1: u16 = 0x3f8;
/// Line status register of COM1; the VMM always reports "transmitter empty".
pub const SERIAL_COM1_LSR: u16 = SERIAL_COM1 + 5;
/// LSR bits: transmit holding register empty, transmitter empty.
pub const SERIAL_LSR_IDLE: u8 = 0x60;

/// Writing a 32-bit value here ends the VM; the value becomes `vmm`'s exit status.
pub const EXIT_PORT: u16 = 0x501;

/// Writing the guest-physical address (32 bits, low memory) of a [`Hypercall`]
/// block here makes the VMM carry it out and fill in `ret`.
pub const HYPERCALL_PORT: u16 = 0x510;

/// A 32-bit read gives the milliseconds of host time since the VMM started
/// the guest (wrapping); the guest has no other clock it can trust under
/// emulation.
pub const CLOCK_PORT: u16 = 0x511;

/// Guest-physical address of a [`Hypercall`] block must be below this, as it is
/// passed in a 32-bit port write.
pub const HYPERCALL_ADDR_LIMIT: u64 = 1 << 32;

/// The block a hypercall passes, in guest memory.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct Hypercall {
    pub nr: u64,
    pub args: [u64; 4],
    pub ret: u64,
}

/// Hypercall numbers (`Hypercall::nr`).
pub mod hc {
    /// args: [guest-physical address, length]. Writes the bytes to the console.
    pub const CONSOLE_WRITE: u64 = 1;
    /// args: [guest-physical address, length] of the VMCOREINFO text the
    /// guest publishes once at boot (see `abi::vmcoreinfo`).
    pub const SET_VMCOREINFO: u64 = 2;
    /// args: [physical address, order, 1 = tag / 0 = untag]. Double-mapping
    /// prevention: the guest reports every slab it creates or frees, and the
    /// VMM keeps its own record of slab frames (Samsung RKP's dmap_prot()).
    pub const DMAP_PROT: u64 = 3;
    /// args: [CPU number, guest-physical address of a
    /// [`crate::boot::CpuStartup`] block]. Starts a CPU that has not run
    /// yet; ret EINVAL for a bad number, block or startup, EBUSY if it
    /// has started already.
    pub const START_CPU: u64 = 4;
}

/// `Hypercall::ret` values.
pub mod hc_ret {
    pub const OK: u64 = 0;
    /// Unknown hypercall number.
    pub const ENOSYS: u64 = u64::MAX;
    /// An argument points outside guest RAM or is out of range.
    pub const EINVAL: u64 = u64::MAX - 1;
    /// The thing asked for is already done (a CPU started twice).
    pub const EBUSY: u64 = u64::MAX - 2;
}

/// Exit statuses the guest reports through [`EXIT_PORT`].
pub mod exit {
    pub const SUCCESS: u32 = 0;
    /// A self-test failed.
    pub const TEST_FAILURE: u32 = 1;
    /// The command line was refused (`abi::cmdline::Error`; the guest
    /// printed why). The same value as `vmm`'s own status for bad input,
    /// so `vmm` exits with 2 whichever side refuses the line.
    pub const BAD_COMMAND_LINE: u32 = 2;
    /// An unexpected exception or a kernel panic.
    pub const CRASH: u32 = 3;
}
