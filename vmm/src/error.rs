//! Errors and the exit statuses they map to.

use thiserror::Error;

use crate::files::InputError;
use crate::loader::LoadError;

/// `vmm`'s own exit statuses; a guest that exits normally passes its own.
pub mod status {
    /// Bad input: command line, guest file, dump, /dev/kvm.
    pub const BAD_INPUT: i32 = 2;
    /// The guest ran past `--timeout`.
    pub const TIMEOUT: i32 = 124;
    /// The guest died: triple fault, HLT forever, an exit the VMM cannot handle.
    pub const GUEST_CRASH: i32 = 125;
    /// KVM or the host failed under a valid configuration.
    pub const HOST_FAILURE: i32 = 126;
}

#[derive(Debug, Error)]
pub enum VmmError {
    #[error("{0}")]
    BadArgument(String),
    #[error("cannot read guest kernel {path}: {source}")]
    GuestFile { path: String, source: InputError },
    #[error("guest kernel {path}: {source}")]
    GuestImage { path: String, source: LoadError },
    #[error("{0}")]
    KvmUnavailable(String),
    #[error("KVM: {0}")]
    Kvm(String),
    #[error("cannot allocate {0} MiB of guest RAM: {1}")]
    Memory(u64, String),
}

impl VmmError {
    pub fn status(&self) -> i32 {
        match self {
            VmmError::BadArgument(_)
            | VmmError::GuestFile { .. }
            | VmmError::GuestImage { .. }
            | VmmError::KvmUnavailable(_) => status::BAD_INPUT,
            VmmError::Kvm(_) | VmmError::Memory(..) => status::HOST_FAILURE,
        }
    }
}
