//! The VMM as a library: `main.rs` is a thin command-line front end, and
//! the tests and fuzz targets call the dump reader and the inspector in
//! process.
//!
//! - [`cli`] parses the command line into typed requests; [`app`] carries
//!   out `run` and `inspect`; [`error`] maps every failure, and every way
//!   a guest ends, to an exit status.
//! - [`vstate`]: the VM, its vCPU threads (a state machine each) and
//!   their registers; [`devices`]: the ports and hypercalls the guest
//!   uses; [`boot`], [`loader`] and [`memory`] set the guest up.
//! - [`monitor`]: the socket server, its client and the wire types;
//!   [`inspect`]: the guest's structures read from the host;
//!   [`coredump`]: ELF core dumps; [`guestphys`]: guest memory, live or
//!   dumped; [`files`]: files at paths someone else chose.

pub mod app;
pub mod boot;
pub mod cli;
pub mod coredump;
pub mod devices;
pub mod error;
pub mod files;
pub mod guestphys;
pub mod inspect;
pub mod loader;
pub mod memory;
pub mod monitor;
pub mod vstate;
