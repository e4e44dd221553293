//! cpio "newc" archives (magic `070701`, or `070702` with checksums), the
//! initramfs format Linux unpacks in init/initramfs.c. Each entry is a
//! 110-byte ASCII header of 8-digit hex fields, the NUL-terminated name,
//! padding to 4 bytes, the data, padding to 4 bytes; `TRAILER!!!` ends the
//! archive. [`Archive::new`] checks the whole archive once, so reading its
//! files afterwards cannot fail.

use core::fmt;

const MAGIC: &[u8; 6] = b"070701";
const MAGIC_CRC: &[u8; 6] = b"070702";
/// Bytes of a newc header: the magic and 13 eight-digit hex fields.
pub const HEADER_LEN: usize = 110;
pub const TRAILER: &str = "TRAILER!!!";
/// Longest name taken, with its NUL (Linux's PATH_MAX).
pub const NAME_MAX: usize = 4096;

/// st_mode's file-type bits and the regular-file type.
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;

/// Why an archive was refused; `offset` is where in it the problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpioError {
    /// The archive ends inside an entry.
    Truncated { offset: usize },
    /// No newc magic where an entry must start.
    BadMagic { offset: usize },
    /// A header field that is not 8 hex digits.
    BadField { offset: usize, field: &'static str },
    /// A name that is empty, longer than [`NAME_MAX`] or not NUL-terminated.
    BadName { offset: usize },
    /// A name that is not UTF-8.
    NameNotUtf8 { offset: usize },
    /// The archive ends without `TRAILER!!!`.
    NoTrailer,
}

impl fmt::Display for CpioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CpioError::Truncated { offset } => {
                write!(f, "truncated cpio archive: an entry at byte {offset} runs past its end")
            }
            CpioError::BadMagic { offset } => {
                write!(f, "not a cpio newc archive: no 070701 magic at byte {offset}")
            }
            CpioError::BadField { offset, field } => {
                write!(f, "bad cpio header at byte {offset}: {field} is not 8 hex digits")
            }
            CpioError::BadName { offset } => write!(
                f,
                "bad cpio entry name at byte {offset} (empty, unterminated or over {NAME_MAX} bytes)"
            ),
            CpioError::NameNotUtf8 { offset } => {
                write!(f, "cpio entry name at byte {offset} is not UTF-8")
            }
            CpioError::NoTrailer => write!(f, "cpio archive ends without its TRAILER!!! entry"),
        }
    }
}

/// One entry of an archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The path as stored, less a leading `./` or `/`.
    pub name: &'a str,
    pub mode: u32,
    pub data: &'a [u8],
}

impl Entry<'_> {
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
}

/// A checked archive.
#[derive(Clone, Copy, Debug)]
pub struct Archive<'a> {
    bytes: &'a [u8],
}

impl<'a> Archive<'a> {
    /// Checks every entry up to the trailer. Bytes after the trailer are
    /// ignored, as the padding a bootloader adds is.
    pub fn new(bytes: &'a [u8]) -> Result<Self, CpioError> {
        let mut at = 0;
        loop {
            match parse_entry(bytes, at)? {
                Some((_, next)) => at = next,
                None => return Ok(Archive { bytes }),
            }
        }
    }

    /// Every entry (directories and the like included), in archive order.
    pub fn entries(&self) -> Entries<'a> {
        Entries {
            bytes: self.bytes,
            at: 0,
        }
    }

    /// The regular files.
    pub fn files(&self) -> impl Iterator<Item = Entry<'a>> {
        self.entries().filter(Entry::is_file)
    }

    /// The regular file called `name`; the last one when the name repeats
    /// (a later entry overwrites an earlier one when Linux unpacks).
    pub fn find(&self, name: &str) -> Option<Entry<'a>> {
        self.files().filter(|e| e.name == name).last()
    }
}

pub struct Entries<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        // The archive was checked whole: an error cannot happen here, and
        // would end the iteration if it did.
        let (entry, next) = parse_entry(self.bytes, self.at).ok()??;
        self.at = next;
        Some(entry)
    }
}

/// The entry at `at` and where the next one starts; None at the trailer.
fn parse_entry(bytes: &[u8], at: usize) -> Result<Option<(Entry<'_>, usize)>, CpioError> {
    let truncated = CpioError::Truncated { offset: at };
    if bytes.len() <= at {
        return Err(CpioError::NoTrailer);
    }
    let header = bytes
        .get(at..at.checked_add(HEADER_LEN).ok_or(truncated)?)
        .ok_or(truncated)?;
    if &header[..6] != MAGIC && &header[..6] != MAGIC_CRC {
        return Err(CpioError::BadMagic { offset: at });
    }
    let field = |index: usize, name: &'static str| {
        let digits = &header[6 + 8 * index..6 + 8 * (index + 1)];
        parse_hex(digits).ok_or(CpioError::BadField {
            offset: at,
            field: name,
        })
    };
    let mode = field(1, "mode")?;
    let file_size = field(6, "filesize")? as usize;
    let name_size = field(11, "namesize")? as usize;
    let bad_name = CpioError::BadName { offset: at };
    if name_size == 0 || name_size > NAME_MAX {
        return Err(bad_name);
    }
    let name_start = at + HEADER_LEN;
    let name_end = name_start.checked_add(name_size).ok_or(truncated)?;
    let name = bytes.get(name_start..name_end).ok_or(truncated)?;
    let (&nul, name) = name.split_last().ok_or(bad_name)?;
    if nul != 0 || name.contains(&0) {
        return Err(bad_name);
    }
    let name = core::str::from_utf8(name).map_err(|_| CpioError::NameNotUtf8 { offset: at })?;
    let data_start = align4(name_end).ok_or(truncated)?;
    let data_end = data_start.checked_add(file_size).ok_or(truncated)?;
    let data = bytes.get(data_start..data_end).ok_or(truncated)?;
    if name == TRAILER {
        return Ok(None);
    }
    let name = name.trim_start_matches("./").trim_start_matches('/');
    let next = align4(data_end).ok_or(truncated)?;
    Ok(Some((Entry { name, mode, data }, next)))
}

fn align4(n: usize) -> Option<usize> {
    n.checked_next_multiple_of(4)
}

/// Eight hex digits (either case), as newc writes every field.
fn parse_hex(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |acc, &d| {
        let v = (d as char).to_digit(16)?;
        Some(acc << 4 | v)
    })
}

/// Builds a newc archive (what `make` and the tests use to make an
/// initramfs; the guest only reads).
#[cfg(any(test, feature = "std"))]
#[derive(Default)]
pub struct Writer {
    bytes: Vec<u8>,
    inode: u32,
}

#[cfg(any(test, feature = "std"))]
impl Writer {
    /// Adds a regular file, mode 0755 (the archive's programs are
    /// executables). Panics on a name or file too large for the format,
    /// which only a caller's bug can give.
    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name, S_IFREG | 0o755, data)
    }

    /// Ends the archive with its trailer and returns it.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry(TRAILER, 0, &[]);
        self.bytes
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        let size = u32::try_from(data.len()).expect("a cpio file is under 4 GiB");
        let name_size = u32::try_from(name.len() + 1).expect("a short name");
        self.inode += 1;
        let fields = [self.inode, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, name_size, 0];
        self.bytes.extend_from_slice(MAGIC);
        for f in fields {
            self.bytes.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
        self
    }

    fn pad(&mut self) {
        self.bytes.resize(self.bytes.len().next_multiple_of(4), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = Writer::default();
        for (name, data) in files {
            w.file(name, data);
        }
        w.finish()
    }

    #[test]
    fn reads_what_was_written() {
        let bytes = archive(&[("demo", b"\x7fELF..."), ("./dir/x", b""), ("odd", b"abcde")]);
        let a = Archive::new(&bytes).unwrap();
        let files: Vec<_> = a.files().map(|e| (e.name, e.data)).collect();
        assert_eq!(
            files,
            [
                ("demo", &b"\x7fELF..."[..]),
                ("dir/x", b""),
                ("odd", b"abcde")
            ]
        );
        assert_eq!(a.find("odd").unwrap().data, b"abcde");
        assert!(a.find("nosuch").is_none());
        assert!(a.find("TRAILER!!!").is_none());
    }

    #[test]
    fn directories_are_entries_but_not_files() {
        let mut bytes = Vec::new();
        let mut w = Writer::default();
        w.entry("bin", 0o040_755, &[]).file("bin/sh", b"x");
        bytes.extend(w.finish());
        let a = Archive::new(&bytes).unwrap();
        assert_eq!(a.entries().count(), 2);
        assert_eq!(a.files().map(|e| e.name).collect::<Vec<_>>(), ["bin/sh"]);
    }

    #[test]
    fn a_later_entry_wins() {
        let bytes = archive(&[("a", b"old"), ("a", b"new")]);
        assert_eq!(
            Archive::new(&bytes).unwrap().find("a").unwrap().data,
            b"new"
        );
    }

    #[test]
    fn bad_archives_are_refused() {
        let good = archive(&[("demo", b"hello")]);
        assert!(Archive::new(&good).is_ok());
        assert_eq!(Archive::new(&[]).unwrap_err(), CpioError::NoTrailer);
        assert_eq!(
            Archive::new(b"070707 old binary cpio").unwrap_err(),
            CpioError::Truncated { offset: 0 }
        );
        assert_eq!(
            Archive::new(&[b'x'; 200]).unwrap_err(),
            CpioError::BadMagic { offset: 0 }
        );
        // Cut anywhere before the trailer's end: truncated or no trailer.
        for cut in 0..good.len() - 3 {
            let e = Archive::new(&good[..cut]).unwrap_err();
            assert!(
                matches!(e, CpioError::Truncated { .. } | CpioError::NoTrailer),
                "{cut}: {e}"
            );
        }
        let mut f = good.clone();
        f[6 + 8 * 6] = b'g'; // filesize
        assert_eq!(
            Archive::new(&f).unwrap_err(),
            CpioError::BadField {
                offset: 0,
                field: "filesize"
            }
        );
        let mut f = good.clone();
        f[6 + 8 * 6..6 + 8 * 7].copy_from_slice(b"ffffffff"); // a 4 GiB file
        assert_eq!(
            Archive::new(&f).unwrap_err(),
            CpioError::Truncated { offset: 0 }
        );
        let mut f = good.clone();
        f[6 + 8 * 11..6 + 8 * 12].copy_from_slice(b"00000000"); // no name
        assert_eq!(
            Archive::new(&f).unwrap_err(),
            CpioError::BadName { offset: 0 }
        );
        let mut f = good.clone();
        f[HEADER_LEN + 4] = b'!'; // the NUL
        assert_eq!(
            Archive::new(&f).unwrap_err(),
            CpioError::BadName { offset: 0 }
        );
        let mut f = good.clone();
        f[HEADER_LEN] = 0xff;
        assert_eq!(
            Archive::new(&f).unwrap_err(),
            CpioError::NameNotUtf8 { offset: 0 }
        );
    }

    proptest! {
        /// Whatever was written reads back, in order.
        #[test]
        fn round_trip(files in proptest::collection::vec(("[a-z0-9/._-]{1,20}", proptest::collection::vec(any::<u8>(), 0..300)), 0..8)) {
            let files: Vec<(String, Vec<u8>)> = files
                .into_iter()
                .filter(|(n, _)| !n.trim_start_matches("./").trim_start_matches('/').is_empty() && n != TRAILER)
                .collect();
            let mut w = Writer::default();
            for (name, data) in &files {
                w.file(name, data);
            }
            let bytes = w.finish();
            let a = Archive::new(&bytes).unwrap();
            let got: Vec<_> = a.files().map(|e| (e.name.to_string(), e.data.to_vec())).collect();
            let want: Vec<_> = files
                .iter()
                .map(|(n, d)| (n.trim_start_matches("./").trim_start_matches('/').to_string(), d.clone()))
                .collect();
            prop_assert_eq!(got, want);
        }

        /// Arbitrary bytes never panic, and what is accepted lies inside them.
        #[test]
        fn any_bytes_are_safe(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(a) = Archive::new(&bytes) {
                for e in a.entries() {
                    prop_assert!(e.data.len() <= bytes.len());
                }
            }
        }

        /// A valid archive with one byte changed never panics.
        #[test]
        fn corrupted_archives_are_safe(at in 0usize..400, value in any::<u8>()) {
            let mut bytes = archive(&[("demo", &[7; 100]), ("segv", &[9; 50])]);
            let at = at % bytes.len();
            bytes[at] = value;
            if let Ok(a) = Archive::new(&bytes) {
                for e in a.files() {
                    prop_assert!(e.data.len() <= 100);
                }
            }
        }
    }
}
