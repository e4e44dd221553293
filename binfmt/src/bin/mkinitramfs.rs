//! `mkinitramfs OUT NAME=FILE...`: writes a cpio newc archive holding each
//! FILE under NAME (what `make` uses for the default initramfs; `cpio -o
//! -H newc` makes the same format).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((out, files)) = args.split_first() else {
        eprintln!("usage: mkinitramfs OUT NAME=FILE...");
        return ExitCode::from(2);
    };
    let mut archive = binfmt::cpio::Writer::default();
    for spec in files {
        let Some((name, path)) = spec.split_once('=') else {
            eprintln!("mkinitramfs: '{spec}' is not NAME=FILE");
            return ExitCode::from(2);
        };
        match std::fs::read(path) {
            Ok(data) => archive.file(name, &data),
            Err(e) => {
                eprintln!("mkinitramfs: cannot read {path}: {e}");
                return ExitCode::FAILURE;
            }
        };
    }
    let archive = archive.finish();
    // Unchanged, the file keeps its time: the guest, which builds it in,
    // is not rebuilt.
    if std::fs::read(out).is_ok_and(|old| old == archive) {
        return ExitCode::SUCCESS;
    }
    if let Err(e) = std::fs::write(out, archive) {
        eprintln!("mkinitramfs: cannot write {out}: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
