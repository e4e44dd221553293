//! The files `vmm` opens at a path someone else chose: the guest kernel and
//! the dumps it reads, and the dumps a monitor client asks it to write.
//!
//! Reading: the path is opened without blocking (a FIFO with no writer, a
//! terminal waiting for carrier) and checked through the descriptor
//! itself, so a path swapped in between cannot slip past: only a regular
//! file within the caller's size bound, refused before a byte is read.
//! Writing for a client: a new file, reached through no symbolic link.

use std::fs::{File, FileType};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, CWD};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum InputError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("the file is {}, larger than {limit}", human(*size))]
    TooLarge { size: u64, limit: String },
}

/// A regular file opened for reading, and its size when it was checked.
pub struct InputFile {
    pub file: File,
    pub size: u64,
}

impl InputFile {
    /// Opens `path` if it is a regular file of at most `max` bytes;
    /// `limit` says what the bound is, for the error.
    pub fn open(path: &Path, max: u64, limit: impl FnOnce() -> String) -> Result<Self, InputError> {
        // O_NONBLOCK only matters for what is refused below: reads of a
        // regular file never block on it.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(InputError::NotRegular(kind(meta.file_type())));
        }
        if meta.len() > max {
            return Err(InputError::TooLarge {
                size: meta.len(),
                limit: limit(),
            });
        }
        Ok(InputFile {
            file,
            size: meta.len(),
        })
    }
}

fn kind(t: FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "something else"
    }
}

/// A size as people read it: `896 MiB`, `1024.0 GiB`.
fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else if bytes >= 1 << 20 {
        format!("{} MiB", bytes.div_ceil(1 << 20))
    } else {
        format!("{bytes} bytes")
    }
}

/// Creates `path` as a new file, refusing a symbolic link in any of its
/// components: a monitor client names the path, and a link anywhere on it
/// could send the VMM's write where the client may not write itself. Each
/// directory is opened relative to the one before with O_NOFOLLOW, so
/// nothing swapped in between the checks is followed either (what
/// openat2()'s RESOLVE_NO_SYMLINKS does, which older kernels lack); the
/// file itself with O_CREAT | O_EXCL, which refuses any existing name.
pub fn create_new_without_links(path: &Path) -> io::Result<File> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::other("not a file name"));
    };
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = rustix::fs::openat(CWD, ".", dir_flags, Mode::empty())?;
    let mut walked = PathBuf::new();
    for part in parent.components() {
        walked.push(part);
        let next = match part {
            Component::RootDir => rustix::fs::openat(CWD, "/", dir_flags, Mode::empty()),
            Component::CurDir => continue,
            Component::ParentDir | Component::Normal(_) => {
                rustix::fs::openat(&dir, part.as_os_str(), dir_flags, Mode::empty())
            }
            Component::Prefix(_) => return Err(io::Error::other("not a UNIX path")),
        };
        dir = next.map_err(|e| refused_link(&walked).unwrap_or_else(|| e.into()))?;
    }
    let file_flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
    let fd = rustix::fs::openat(&dir, name, file_flags | OFlags::CLOEXEC, Mode::from(0o666))
        .map_err(|e| {
            if e == rustix::io::Errno::EXIST {
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the file exists; give a new path",
                )
            } else {
                e.into()
            }
        })?;
    Ok(File::from(fd))
}

/// The error for a walk that failed because `walked` is a symbolic link
/// (O_NOFOLLOW | O_DIRECTORY on a link fails with ENOTDIR or ELOOP).
fn refused_link(walked: &Path) -> Option<io::Error> {
    std::fs::symlink_metadata(walked)
        .is_ok_and(|m| m.file_type().is_symlink())
        .then(|| {
            io::Error::other(format!(
                "{} is a symbolic link; the monitor follows none",
                walked.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vmm-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn open(path: &Path) -> Result<InputFile, String> {
        InputFile::open(path, 1 << 20, || "the test's 1 MiB".into()).map_err(|e| e.to_string())
    }

    #[test]
    fn only_regular_files_within_the_bound_are_opened() {
        let dir = scratch("input");
        let fifo = dir.join("fifo");
        rustix::fs::mknodat(CWD, &fifo, rustix::fs::FileType::Fifo, Mode::from(0o600), 0).unwrap();
        assert_eq!(
            open(&fifo).err().unwrap(),
            "it is a FIFO (named pipe), not a regular file"
        );
        assert!(open(Path::new("/dev/null"))
            .err()
            .unwrap()
            .contains("character device"));
        assert!(open(&dir).err().unwrap().contains("a directory"));
        let big = dir.join("big");
        File::create(&big).unwrap().set_len(1 << 40).unwrap();
        assert_eq!(
            open(&big).err().unwrap(),
            "the file is 1024.0 GiB, larger than the test's 1 MiB"
        );
        let small = dir.join("small");
        std::fs::write(&small, b"kernel").unwrap();
        let f = open(&small).unwrap();
        let mut buf = [0u8; 3];
        std::os::unix::fs::FileExt::read_exact_at(&f.file, &mut buf, 3).unwrap();
        assert_eq!((f.size, &buf), (6, b"nel"));
        assert!(open(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(896 << 20), "896 MiB");
        assert_eq!(human((16 << 30) + (20 << 20)), "16.0 GiB");
        assert_eq!(human(4095), "4095 bytes");
    }

    /// The monitor's `dump PATH`: never an existing file, never through a
    /// symbolic link, whichever component it is.
    #[test]
    fn new_files_refuse_existing_names_and_links_anywhere() {
        let dir = scratch("create");
        let real = dir.join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.join("link")).unwrap();
        let victim = real.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, real.join("to-victim")).unwrap();
        std::os::unix::fs::symlink(real.join("nowhere"), real.join("dangling")).unwrap();

        let err = create_new_without_links(&victim).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert!(create_new_without_links(&real.join("to-victim")).is_err());
        assert!(create_new_without_links(&real.join("dangling")).is_err());
        assert!(!real.join("nowhere").exists(), "followed a dangling link");
        let through = dir.join("link").join("new.core");
        let err = create_new_without_links(&through).unwrap_err().to_string();
        assert!(err.contains("link is a symbolic link"), "{err}");
        assert!(
            !real.join("new.core").exists(),
            "followed a linked directory"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

        let fresh = dir.join("real/../real/./fresh.core");
        let mut f = create_new_without_links(&fresh).unwrap();
        std::io::Write::write_all(&mut f, b"core").unwrap();
        assert_eq!(std::fs::read(real.join("fresh.core")).unwrap(), b"core");
        std::fs::remove_dir_all(dir).ok();
    }
}
