//! What exec reads, as `no_std` library code shared by the guest kernel
//! and the host: the initramfs (a cpio "newc" archive, as Linux's
//! init/initramfs.c unpacks) and static ELF64 executables (as
//! fs/binfmt_elf.c loads). Both parsers take untrusted bytes: every field
//! is checked for type and size before it is used, arithmetic is checked,
//! and bad input is an error value, never a panic.
//!
//! The guest cannot use `object` or `goblin` here: it has no allocator
//! for their owned results and needs only the few checks exec makes, so
//! these are hand-written, as the kernel's own loaders are.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

pub mod cpio;
pub mod elf;
