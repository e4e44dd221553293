//! The programs exec can run: the regular files of the initramfs. The
//! kernel carries one built in (the project's programs, which `make` puts
//! in target/initramfs.cpio; Linux's CONFIG_INITRAMFS_SOURCE), and the VMM
//! may hand it another with `--initrd`, searched first, as Linux unpacks
//! an external initrd over the built-in one. Both stay where they are and
//! exec reads from them (there is no tmpfs to unpack into).

use binfmt::cpio::Archive;

use crate::boot::BootParams;
use crate::kprintln;

/// A program: its name in the archive and its executable file.
#[derive(Clone, Copy)]
pub struct Program {
    pub name: &'static str,
    pub file: &'static [u8],
}

/// Most names the command line's `run=` vocabulary lists.
const MAX_NAMES: usize = 64;

static BUILTIN: &[u8] = include_bytes!(env!("GUEST_INITRAMFS"));

struct Initramfs {
    external: Option<Archive<'static>>,
    builtin: Option<Archive<'static>>,
    names: [&'static str; MAX_NAMES],
    count: usize,
}

static INITRAMFS: spin::Once<Initramfs> = spin::Once::new();

/// populate_rootfs(): checks both archives (a bad one is reported and
/// left out, never trusted) and lists their programs' names.
pub fn init(boot: &BootParams) {
    INITRAMFS.call_once(|| {
        let builtin = Archive::new(BUILTIN)
            .inspect_err(|e| kprintln!("initramfs: the built-in archive is bad: {e}"))
            .ok();
        let external = boot.info.initrd.start != boot.info.initrd.end;
        let external = match boot.initrd().and_then(crate::arch::initrd_bytes) {
            Some(bytes) => Archive::new(bytes)
                .inspect_err(|e| kprintln!("initramfs: ignoring --initrd: {e}"))
                .ok(),
            None if external => {
                kprintln!("initramfs: ignoring --initrd: not in RAM after the kernel");
                None
            }
            None => None,
        };
        let mut fs = Initramfs {
            external,
            builtin,
            names: [""; MAX_NAMES],
            count: 0,
        };
        let archives = [fs.external, fs.builtin];
        for file in archives.iter().flatten().flat_map(Archive::files) {
            if fs.names[..fs.count].contains(&file.name) {
                continue;
            }
            if fs.count == MAX_NAMES {
                kprintln!("initramfs: more than {MAX_NAMES} programs; run= lists the first");
                break;
            }
            fs.names[fs.count] = file.name;
            fs.count += 1;
        }
        if let Some(a) = fs.external {
            let files = a.files().count();
            let bytes = boot.info.initrd.end - boot.info.initrd.start;
            kprintln!("initramfs: --initrd holds {files} file(s) in {bytes} bytes");
        }
        fs
    });
}

/// Every program's name, external archive first (the `run=` vocabulary).
pub fn names() -> &'static [&'static str] {
    INITRAMFS.get().map_or(&[], |fs| &fs.names[..fs.count])
}

/// The program called `name`, from `--initrd` if it has one, else built in.
pub fn find(name: &str) -> Option<Program> {
    let fs = INITRAMFS.get()?;
    [fs.external, fs.builtin]
        .iter()
        .flatten()
        .find_map(|a| a.find(name))
        .map(|file| Program {
            name: file.name,
            file: file.data,
        })
}
