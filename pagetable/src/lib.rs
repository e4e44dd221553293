//! x86-64 page-table format.
#![no_std]
