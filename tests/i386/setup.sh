#!/bin/sh
# What tests/qemu_i386.rs needs: qemu-system-i386 and cpio from Debian, and
# Debian's 32-bit kernels (linux-image-686-pae, linux-image-686) with a
# small initramfs each (busybox-static:i386, the kernel's qemu_fw_cfg
# module, an /init that loads it and prints a marker). Everything is kept
# under DEST (default target/i386-linux); a second run finds DEST/ready and
# fetches nothing.
#
# Installing needs root (CI runs as root); without it the script says what
# to install and fails, and the tests are ignored unless REQUIRE_KVM=1.
set -eu

dest=${1:-target/i386-linux}
marker=I386MM-GUEST-READY

. "$(dirname "$0")/../as_root.sh"

# gdb too, for tests/smp.rs, which reads a dump's vCPUs as gdb's threads.
if ! command -v qemu-system-i386 >/dev/null || ! command -v cpio >/dev/null || ! command -v gdb >/dev/null; then
    as_root apt-get install -y -q --no-install-recommends qemu-system-x86 cpio gdb
fi

if [ -f "$dest/ready" ]; then
    exit 0
fi

# Debian's i386 packages: the architecture must be known to apt.
if ! dpkg --print-foreign-architectures | grep -qx i386; then
    as_root dpkg --add-architecture i386
fi
if ! apt-cache show linux-image-686-pae:i386 >/dev/null 2>&1; then
    # A mirror mid-sync can fail one index; the ones needed may be fine.
    as_root apt-get update -q || true
fi

rm -rf "$dest/unpacked" "$dest/debs"
mkdir -p "$dest/debs"
for flavour in 686-pae 686; do
    # The metapackage names the current ABI's image.
    image=$(apt-cache depends "linux-image-$flavour:i386" |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*\).*/\1/p' | head -n 1)
    [ -n "$image" ] || { echo "setup.sh: no linux-image-$flavour:i386 in apt" >&2; exit 1; }
    (cd "$dest/debs" && apt-get download -q "$image:i386")
done
(cd "$dest/debs" && apt-get download -q busybox-static:i386)
for deb in "$dest"/debs/*.deb; do
    dpkg-deb -x "$deb" "$dest/unpacked"
done

for flavour in 686-pae 686; do
    kernel=$(ls "$dest"/unpacked/boot/vmlinuz-*-"$flavour" | head -n 1)
    release=${kernel##*/vmlinuz-}
    cp "$kernel" "$dest/vmlinuz-$flavour"
    root="$dest/initramfs-$flavour"
    rm -rf "$root"
    mkdir -p "$root/bin" "$root/dev"
    cp "$dest/unpacked/bin/busybox" "$root/bin/busybox"
    cp "$dest/unpacked/lib/modules/$release/kernel/drivers/firmware/qemu_fw_cfg.ko" "$root/"
    # No /dev/console in the archive (that takes mknod): /init mounts
    # devtmpfs and opens the console itself.
    cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
exec >/dev/console 2>&1
/bin/busybox insmod /qemu_fw_cfg.ko
echo $marker
exec /bin/busybox sleep 1000000
EOF
    chmod +x "$root/init"
    (cd "$root" && find . | cpio -o -H newc --quiet) >"$dest/initrd-$flavour.cpio"
    rm -rf "$root"
done
rm -rf "$dest/unpacked" "$dest/debs"
echo "$marker" >"$dest/ready"
