//! The guest's command line (`vmm --cmdline`): `key=value` words separated
//! by spaces, parsed once at boot into a [`Cmdline`]. Every word is
//! checked (stricter than Linux, which hands unknown parameters to init):
//! an unknown key, an unknown name in a value, a number that does not
//! parse, a key given twice, bytes that are not UTF-8 or a line longer
//! than the boot protocol carries is an [`Error`]. The guest prints it on
//! one line and exits with [`crate::io::exit::BAD_COMMAND_LINE`], so `vmm`
//! exits with status 2; nothing on the line is ever ignored.
//!
//! The names that belong to the guest (its programs and self-test suites)
//! come in a [`Vocabulary`]; the fault and plant kinds are defined here.

use core::fmt;

use crate::layout::phys::CMDLINE_MAX;

/// Longest command line the boot protocol carries: all of the
/// `CMDLINE_MAX`-byte area (BootInfo gives the length; there is no NUL).
pub const MAX_LEN: usize = CMDLINE_MAX as usize;

/// Every option, as `key=` is spelled.
pub const OPTIONS: [&str; 5] = ["selftest", "run", "fault", "linger", "plant"];

/// An enum whose values are spelled on the command line.
macro_rules! named {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every value's spelling, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),*];

            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }

            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }
    };
}

named! {
    /// `fault=KIND`: fail on purpose, so the tests can check the report.
    Fault {
        /// Read an address the boot tables do not map.
        PageFault = "pf",
        InvalidOpcode = "ud",
        Panic = "panic",
        /// An exception with no IDT to deliver it.
        Triple = "triple",
        /// Spin forever in the kernel (for `--timeout`).
        Hang = "hang",
        /// Write to the read-only kernel text.
        WriteText = "write-text",
        /// Recurse into the boot stack's guard page.
        StackOverflow = "stack-overflow",
    }
}

named! {
    /// `plant=KIND,...`: break an invariant `vmm inspect audit` checks.
    Plant {
        /// A slab frame mapped a second time in vmalloc space.
        Dmap = "dmap",
        /// A page-table page mapped writable in vmalloc space.
        PageTable = "pt",
        /// A kernel text frame mapped for ring 3.
        User = "user",
        /// A freed frame left mapped.
        Free = "free",
        /// A process's private frame mapped writable into another without
        /// copy-on-write.
        NoCow = "nocow",
    }
}

/// The names the guest knows that this crate does not: its embedded
/// programs (`run=`) and self-test suites (`selftest=`).
#[derive(Clone, Copy, Debug)]
pub struct Vocabulary<'v> {
    pub programs: &'v [&'v str],
    pub suites: &'v [&'v str],
}

/// A comma-separated list whose every item was checked when the line was
/// parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct List<'a>(&'a str);

impl<'a> List<'a> {
    pub fn iter(&self) -> impl Iterator<Item = &'a str> {
        self.0.split(',').filter(|s| !s.is_empty())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.iter().any(|n| n == name)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `selftest=`: which suites run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Selftest<'a> {
    #[default]
    All,
    Off,
    Only(List<'a>),
}

impl Selftest<'_> {
    pub fn wants(&self, suite: &str) -> bool {
        match self {
            Selftest::All => true,
            Selftest::Off => false,
            Selftest::Only(list) => list.contains(suite),
        }
    }
}

/// The command line, parsed and checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cmdline<'a> {
    /// The line as given.
    pub text: &'a str,
    pub selftest: Selftest<'a>,
    /// `run=`: the programs to run, in order (`run=` alone: none); `None`
    /// when the option is absent and the guest runs its default workload.
    pub run: Option<List<'a>>,
    pub fault: Option<Fault>,
    /// `linger=SECONDS`.
    pub linger: Option<u32>,
    /// `plant=`: checked against [`Plant::NAMES`]; see [`Cmdline::plants`].
    plant: List<'a>,
}

impl<'a> Cmdline<'a> {
    /// Parses and checks the whole line.
    pub fn parse(line: &'a [u8], vocab: &Vocabulary<'a>) -> Result<Self, Error<'a>> {
        if line.len() > MAX_LEN {
            return Err(Error::TooLong {
                len: line.len() as u64,
            });
        }
        let text = core::str::from_utf8(line).map_err(|e| Error::NotUtf8 {
            at: e.valid_up_to(),
        })?;
        let mut cmdline = Cmdline {
            text,
            ..Cmdline::default()
        };
        let mut seen = [false; OPTIONS.len()];
        for word in text.split_ascii_whitespace() {
            let (key, value) = match word.split_once('=') {
                Some((key, value)) => (key, Some(value)),
                None => (word, None),
            };
            let Some(index) = OPTIONS.iter().position(|&o| o == key) else {
                return Err(Error::UnknownOption { word });
            };
            let key = OPTIONS[index];
            if core::mem::replace(&mut seen[index], true) {
                return Err(Error::Duplicate { key });
            }
            let value = value.ok_or(Error::MissingValue { key })?;
            cmdline.set(key, value, vocab)?;
        }
        Ok(cmdline)
    }

    fn set(
        &mut self,
        key: &'static str,
        value: &'a str,
        vocab: &Vocabulary<'a>,
    ) -> Result<(), Error<'a>> {
        let needs_value = || {
            if value.is_empty() {
                Err(Error::MissingValue { key })
            } else {
                Ok(value)
            }
        };
        match key {
            "selftest" => {
                self.selftest = match needs_value()? {
                    "all" => Selftest::All,
                    "off" => Selftest::Off,
                    list => Selftest::Only(checked_list(key, list, vocab.suites)?),
                }
            }
            "run" => self.run = Some(checked_list(key, value, vocab.programs)?),
            "fault" => {
                let name = needs_value()?;
                self.fault = Some(Fault::from_name(name).ok_or(Error::UnknownName {
                    key,
                    name,
                    accepted: Fault::NAMES,
                })?);
            }
            "linger" => {
                let secs = needs_value()?;
                self.linger = Some(secs.parse().map_err(|_| Error::BadNumber { key, value })?);
            }
            // "plant", the last of OPTIONS.
            _ => self.plant = checked_list(key, value, Plant::NAMES)?,
        }
        Ok(())
    }

    /// The `plant=` kinds, in the order given.
    pub fn plants(&self) -> impl Iterator<Item = Plant> + 'a {
        self.plant.iter().filter_map(Plant::from_name)
    }
}

/// A comma-separated list of names from `accepted`.
fn checked_list<'a>(
    key: &'static str,
    list: &'a str,
    accepted: &'a [&'a str],
) -> Result<List<'a>, Error<'a>> {
    if list.is_empty() {
        return Ok(List(list));
    }
    for name in list.split(',') {
        if name.is_empty() {
            return Err(Error::EmptyName { key, list });
        }
        if !accepted.contains(&name) {
            return Err(Error::UnknownName {
                key,
                name,
                accepted,
            });
        }
    }
    Ok(List(list))
}

/// Why a command line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error<'a> {
    /// Longer than [`MAX_LEN`] (so it was, or would have been, cut).
    TooLong {
        len: u64,
    },
    /// Not UTF-8 from byte `at` on (a cut can split a character).
    NotUtf8 {
        at: usize,
    },
    /// A word whose key is none of [`OPTIONS`].
    UnknownOption {
        word: &'a str,
    },
    MissingValue {
        key: &'static str,
    },
    Duplicate {
        key: &'static str,
    },
    /// A name not among `accepted`.
    UnknownName {
        key: &'static str,
        name: &'a str,
        accepted: &'a [&'a str],
    },
    /// `a,,b`.
    EmptyName {
        key: &'static str,
        list: &'a str,
    },
    BadNumber {
        key: &'static str,
        value: &'a str,
    },
}

impl fmt::Display for Error<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::TooLong { len } => {
                write!(f, "the command line is {len} bytes; the limit is {MAX_LEN}")
            }
            Error::NotUtf8 { at } => {
                write!(f, "the command line is not valid UTF-8 (at byte {at})")
            }
            Error::UnknownOption { word } => {
                write!(f, "unknown option '{word}' (options: ")?;
                write_names(f, &OPTIONS, "=")?;
                f.write_str(")")
            }
            Error::MissingValue { key } => write!(f, "{key}: needs a value ({key}=...)"),
            Error::Duplicate { key } => write!(f, "{key}: given twice"),
            Error::UnknownName {
                key,
                name,
                accepted,
            } => {
                let what = match key {
                    "run" => "program",
                    "selftest" => "suite",
                    _ => "kind",
                };
                write!(f, "{key}: no {what} named '{name}' (accepted: ")?;
                write_names(f, accepted, "")?;
                if key == "selftest" {
                    f.write_str("; or all, off")?;
                }
                f.write_str(")")
            }
            Error::EmptyName { key, list } => write!(f, "{key}: empty name in '{list}'"),
            Error::BadNumber { key, value } => {
                write!(f, "{key}: '{value}' is not a number (0 to {})", u32::MAX)
            }
        }
    }
}

fn write_names(f: &mut fmt::Formatter<'_>, names: &[&str], suffix: &str) -> fmt::Result {
    for (i, name) in names.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        write!(f, "{sep}{name}{suffix}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    const VOCAB: Vocabulary<'static> = Vocabulary {
        programs: &["demo", "segv", "spin"],
        suites: &["paging", "buddy"],
    };

    fn parse(line: &str) -> Result<Cmdline<'_>, Error<'_>> {
        Cmdline::parse(line.as_bytes(), &VOCAB)
    }

    fn refused(line: &str) -> std::string::String {
        parse(line).expect_err(line).to_string()
    }

    #[test]
    fn an_empty_line_is_the_defaults() {
        let c = parse("  ").unwrap();
        assert_eq!(c.selftest, Selftest::All);
        assert_eq!((c.run, c.fault, c.linger), (None, None, None));
        assert_eq!(c.plants().count(), 0);
    }

    #[test]
    fn every_option_is_typed() {
        let c = parse(
            "selftest=paging,buddy run=demo,segv,demo fault=write-text linger=30 plant=dmap,free",
        )
        .unwrap();
        assert!(c.selftest.wants("buddy") && !c.selftest.wants("slab"));
        let run: std::vec::Vec<_> = c.run.unwrap().iter().collect();
        assert_eq!(run, ["demo", "segv", "demo"]);
        assert_eq!(c.fault, Some(Fault::WriteText));
        assert_eq!(c.linger, Some(30));
        assert!(c.plants().eq([Plant::Dmap, Plant::Free]));
        assert_eq!(parse("selftest=off").unwrap().selftest, Selftest::Off);
        assert_eq!(parse("selftest=all").unwrap().selftest, Selftest::All);
        // `run=` alone runs nothing, which is not the default workload.
        assert_eq!(parse("run=").unwrap().run.map(|r| r.is_empty()), Some(true));
    }

    #[test]
    fn bad_words_are_named() {
        assert_eq!(
            refused("run=demo,nosuch"),
            "run: no program named 'nosuch' (accepted: demo, segv, spin)"
        );
        assert_eq!(
            refused("selftest=paging,slab"),
            "selftest: no suite named 'slab' (accepted: paging, buddy; or all, off)"
        );
        assert!(refused("fault=oops").starts_with("fault: no kind named 'oops' (accepted: pf, ud,"));
        assert!(refused("plant=dmap,x").starts_with("plant: no kind named 'x'"));
        assert_eq!(
            refused("quiet"),
            "unknown option 'quiet' (options: selftest=, run=, fault=, linger=, plant=)"
        );
        assert!(refused("Run=demo").starts_with("unknown option 'Run=demo'"));
        assert_eq!(
            refused("linger=5s"),
            "linger: '5s' is not a number (0 to 4294967295)"
        );
        assert!(refused("linger=-1").contains("not a number"));
        assert!(refused("linger=4294967296").contains("not a number"));
        assert_eq!(refused("run=demo run=segv"), "run: given twice");
        assert_eq!(refused("linger"), "linger: needs a value (linger=...)");
        assert_eq!(refused("fault="), "fault: needs a value (fault=...)");
        assert_eq!(
            refused("selftest="),
            "selftest: needs a value (selftest=...)"
        );
        assert_eq!(refused("run=demo,,segv"), "run: empty name in 'demo,,segv'");
        assert!(refused("run=demo,").contains("empty name"));
        assert!(refused("selftest=off,paging").contains("no suite named 'off'"));
    }

    #[test]
    fn bytes_that_are_not_a_line_are_refused() {
        // "run=demo é" cut in the middle of the é.
        let cut = &"run=demo é".as_bytes()[..10];
        assert_eq!(Cmdline::parse(cut, &VOCAB), Err(Error::NotUtf8 { at: 9 }));
        let long = [b' '; MAX_LEN + 1];
        assert_eq!(
            Cmdline::parse(&long, &VOCAB),
            Err(Error::TooLong {
                len: MAX_LEN as u64 + 1
            })
        );
        assert!(Cmdline::parse(&long[..MAX_LEN], &VOCAB).is_ok());
        assert_eq!(
            Error::TooLong { len: 5000 }.to_string(),
            "the command line is 5000 bytes; the limit is 4096"
        );
    }

    #[test]
    fn every_fault_and_plant_name_round_trips() {
        for &name in Fault::NAMES {
            assert_eq!(Fault::from_name(name).map(Fault::name), Some(name));
        }
        for &name in Plant::NAMES {
            assert_eq!(Plant::from_name(name).map(Plant::name), Some(name));
        }
    }

    proptest::proptest! {
        /// Any bytes: a parse or one error, never a panic; and a line
        /// that parses again after printing it back is the same.
        #[test]
        fn any_bytes_parse_or_are_refused(line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(c) = Cmdline::parse(&line, &VOCAB) {
                proptest::prop_assert_eq!(c.text.as_bytes(), &line[..]);
            }
        }

        /// Words made of real keys and values always give a result whose
        /// parts come from the line.
        #[test]
        fn words_of_real_keys(words in proptest::collection::vec("(run|selftest|fault|linger|plant|x)=(demo|paging|pf|dmap|7|,|)", 0..6)) {
            let line = words.join(" ");
            match Cmdline::parse(line.as_bytes(), &VOCAB) {
                Ok(c) => {
                    for name in c.run.iter().flat_map(|r| r.iter()) {
                        proptest::prop_assert!(VOCAB.programs.contains(&name));
                    }
                }
                Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}
