//! The VMM as a library: `main.rs` is a thin command-line front end, and
//! the tests and fuzz targets call the dump reader and the inspector in
//! process.

pub mod boot;
pub mod cli;
pub mod coredump;
pub mod devices;
pub mod elf;
pub mod error;
pub mod files;
pub mod guestphys;
pub mod inspect;
pub mod loader;
pub mod memory;
pub mod monitor;
pub mod vm;
