//! In-guest self-tests: each suite runs against the live kernel (real page
//! tables, real TLB, real KVM) and prints one PASS/FAIL line per test and a
//! summary. `selftest=NAME[,NAME...]` on the command line picks suites;
//! `selftest=off` skips them.

// Test failures carry their message inline (no heap in the guest), so the
// error type is deliberately large.
#![allow(clippy::result_large_err)]

use core::fmt::{self, Write};

use abi::cmdline::Selftest;

use crate::{kprintln, time};

/// A failed check's message, formatted without a heap (the tests also run
/// before any allocator exists).
pub struct Failure {
    text: [u8; 200],
    len: usize,
    /// Not a failure: the test does not apply to this machine (e.g. a
    /// highmem test with no ZONE_HIGHMEM).
    skip: bool,
}

impl Failure {
    pub fn new(args: fmt::Arguments) -> Self {
        let mut f = Failure {
            text: [0; 200],
            len: 0,
            skip: false,
        };
        let _ = f.write_fmt(args);
        f
    }

    pub fn skip(args: fmt::Arguments) -> Self {
        Failure {
            skip: true,
            ..Failure::new(args)
        }
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.text[..self.len]).unwrap_or("(unprintable)")
    }
}

impl Write for Failure {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.text.len() - self.len;
        let n = s.len().min(room);
        self.text[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

pub type TestResult = Result<(), Failure>;

/// Fails the test with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::selftest::Failure::new(format_args!($($arg)+)));
        }
    };
}

/// Ends the test as skipped, with the reason.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)+) => {
        return Err($crate::selftest::Failure::skip(format_args!($($arg)+)))
    };
}

/// Fails the test unless `left == right`, showing both.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr, $($arg:tt)+) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            return Err($crate::selftest::Failure::new(format_args!(
                "{}: {:?} != {:?}", format_args!($($arg)+), l, r
            )));
        }
    }};
}

pub struct Test {
    pub name: &'static str,
    pub run: fn() -> TestResult,
}

pub struct Suite {
    pub name: &'static str,
    /// Whether the suite needs each tick's kmap_atomic of its tick page;
    /// the others run with it paused, so the page-table writes and flushes
    /// they count are theirs alone.
    pub tick_page: bool,
    pub tests: &'static [Test],
}

mod buddy;
mod dmap;
mod fork;
mod highmem;
mod paging;
mod process;
mod sched;
mod slab;
mod smp;
mod threads;
mod vmalloc;

const SUITES: [Suite; 12] = [
    paging::SUITE,
    buddy::SUITE,
    highmem::SUITE,
    vmalloc::SUITE,
    slab::SUITE,
    dmap::SUITE,
    process::SUITE,
    fork::SUITE,
    threads::SUITE,
    smp::SUITE,
    sched::SUITE,
    sched::STRESS,
];

/// The names `selftest=` accepts.
pub const SUITE_NAMES: [&str; SUITES.len()] = {
    let mut names = [""; SUITES.len()];
    let mut i = 0;
    while i < SUITES.len() {
        names[i] = SUITES[i].name;
        i += 1;
    }
    names
};

#[derive(Default)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// Runs the suites the command line asks for (all by default).
pub fn run(wanted: Selftest) -> Summary {
    let mut summary = Summary::default();
    if wanted == Selftest::Off {
        return summary;
    }
    for suite in SUITES.iter().filter(|s| wanted.wants(s.name)) {
        for test in suite.tests {
            let outcome = if suite.tick_page {
                (test.run)()
            } else {
                time::with_tick_page_paused(test.run)
            };
            match outcome {
                Ok(()) => {
                    summary.passed += 1;
                    kprintln!("PASS {}: {}", suite.name, test.name);
                }
                Err(failure) if failure.skip => {
                    summary.skipped += 1;
                    kprintln!("SKIP {}: {}: {}", suite.name, test.name, failure.as_str());
                }
                Err(failure) => {
                    summary.failed += 1;
                    kprintln!("FAIL {}: {}: {}", suite.name, test.name, failure.as_str());
                }
            }
        }
    }
    kprintln!(
        "selftest: {} passed, {} failed, {} skipped",
        summary.passed,
        summary.failed,
        summary.skipped
    );
    summary
}
