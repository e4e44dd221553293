#!/bin/sh
# Runs vmm on a genuine hardware-style KVM: Debian's amd64 kernel with
# kvm_amd, booted under QEMU TCG on an emulated CPU with SVM and nested
# paging (-cpu max). Hosts whose /dev/kvm is not hardware KVM (such as the
# PVM module) check the hardware paths this way: `syscall` entering ring 0,
# the AMD triple-fault report, the in-kernel irqchip under SVM.
#
#   tests/hwkvm/check.sh [COMMAND...]
#
# Each COMMAND is one argument, run by the shell of the inner machine in a
# directory holding guest.bin, with vmm on its PATH. Default: the default
# run, and the SMP, scheduler and highmem suites on 4 vCPUs. Every command's
# output is printed between `=== hwkvm: run N` and `=== hwkvm: end N` lines;
# the script fails unless every command ended with status 0.
#
# Needs target/release/vmm and target/guest.bin (`make` first). Installs
# qemu-system-x86, cpio and xz-utils with apt when they are missing (root or
# sudo), and keeps Debian's kernel, its KVM modules and busybox under
# HWKVM_DIR (default target/hwkvm): a second run fetches nothing.
# HWKVM_TIMEOUT (seconds, default 3600) bounds the whole QEMU run.
set -eu

dest=${HWKVM_DIR:-target/hwkvm}
timeout=${HWKVM_TIMEOUT:-3600}
vmm=target/release/vmm
guest=target/guest.bin
# kvm-amd's dependencies first, as modprobe would load them.
modules="irqbypass kvm ccp kvm-amd"

if [ $# -eq 0 ]; then
    set -- "vmm --mem 2G guest.bin" \
        'vmm --mem 2G --cpus 4 guest.bin --cmdline "selftest=smp,sched,highmem run="'
fi

for file in "$vmm" "$guest"; do
    [ -f "$file" ] || { echo "check.sh: $file missing: run make first" >&2; exit 1; }
done

. "$(dirname "$0")/../as_root.sh"

if ! command -v qemu-system-x86_64 >/dev/null || ! command -v cpio >/dev/null ||
    ! command -v xz >/dev/null; then
    as_root apt-get install -y -q --no-install-recommends qemu-system-x86 cpio xz-utils
fi

# Debian's kernel, its KVM modules (decompressed: busybox insmod takes plain
# ELF) and busybox, fetched once.
if [ ! -f "$dest/ready" ]; then
    if ! apt-cache show linux-image-amd64 busybox-static >/dev/null 2>&1; then
        # A mirror mid-sync can fail one index; the ones needed may be fine.
        as_root apt-get update -q || true
    fi
    # The metapackage names the current ABI's image.
    image=$(apt-cache depends linux-image-amd64 |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*\).*/\1/p' | head -n 1)
    [ -n "$image" ] || { echo "check.sh: no linux-image-amd64 in apt" >&2; exit 1; }
    rm -rf "$dest/debs" "$dest/unpacked" "$dest/modules"
    mkdir -p "$dest/debs" "$dest/modules"
    (cd "$dest/debs" && apt-get download -q "$image" busybox-static)
    for deb in "$dest"/debs/*.deb; do
        dpkg-deb -x "$deb" "$dest/unpacked"
    done
    kernel=$(ls "$dest"/unpacked/boot/vmlinuz-*-amd64 | head -n 1)
    release=${kernel##*/vmlinuz-}
    cp "$kernel" "$dest/vmlinuz"
    for module in $modules; do
        file=$(find "$dest/unpacked/lib/modules/$release" -name "$module.ko*" | head -n 1)
        [ -n "$file" ] || { echo "check.sh: $module not in $image" >&2; exit 1; }
        case $file in
            *.xz) xz -dc "$file" >"$dest/modules/$module.ko" ;;
            *) cp "$file" "$dest/modules/$module.ko" ;;
        esac
    done
    cp "$dest/unpacked/bin/busybox" "$dest/busybox"
    rm -rf "$dest/unpacked" "$dest/debs"
    echo "$release" >"$dest/ready"
fi

# The initramfs, rebuilt every run for the current vmm and guest.bin.
root="$dest/initramfs"
rm -rf "$root"
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/tmp" "$root/run"
cp "$dest/busybox" "$root/bin/busybox"
cp "$dest/modules"/*.ko "$root/"
cp "$vmm" "$root/bin/vmm"
cp "$guest" "$root/run/guest.bin"
# The libraries vmm links, at the paths the dynamic loader looks for.
for lib in $(ldd "$vmm" | sed -n 's/.*[[:space:]]\(\/[^[:space:]]*\) (0x.*/\1/p'); do
    mkdir -p "$root${lib%/*}"
    cp -L "$lib" "$root$lib"
done
: >"$root/commands"
for command in "$@"; do
    printf '%s\n' "$command" >>"$root/commands"
done
cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp
exec >/dev/console 2>&1
now() { cut -d ' ' -f 1 /proc/uptime; }
for module in $modules; do
    insmod /\$module.ko || echo "=== hwkvm: insmod \$module failed"
done
echo "=== hwkvm: kernel \$(uname -r), \$(nproc) CPUs, booted and modules loaded at \$(now) s"
[ -c /dev/kvm ] || echo "=== hwkvm: no /dev/kvm"
dmesg | grep -i 'nested paging enabled' || echo "=== hwkvm: nested paging is not enabled"
cd /run
n=0
while IFS= read -r command; do
    n=\$((n + 1))
    echo "=== hwkvm: run \$n: \$command"
    start=\$(now)
    eval "\$command" </dev/null
    status=\$?
    echo "=== hwkvm: end \$n: status \$status after \$(echo "\$(now) \$start" | awk '{ printf "%.2f", \$1 - \$2 }') s"
done </commands
echo "=== hwkvm: kvm and svm lines of dmesg"
dmesg | grep -i -e kvm -e svm
echo "=== hwkvm: done"
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) >"$dest/initrd.cpio"
rm -rf "$root"

log="$dest/console.log"
# The console as it comes (sed -u), without carriage returns or the
# firmware's terminal resets and clears.
cr=$(printf '\r')
esc=$(printf '\033')
echo "check.sh: booting Debian $(cat "$dest/ready") under QEMU TCG (minutes); console in $log"
started=$(date +%s)
# Single-threaded TCG: the multi-threaded one can freeze the outer machine.
{
    status=0
    nice -n 19 timeout "$timeout" qemu-system-x86_64 -accel tcg,thread=single -cpu max \
        -m 4G -smp 2 -nographic -no-reboot \
        -kernel "$dest/vmlinuz" -initrd "$dest/initrd.cpio" \
        -append "console=ttyS0 quiet panic=-1" </dev/null || status=$?
    echo "$status" >"$dest/qemu.status"
} | sed -u "s/$cr//g; s/$esc\[[0-9;?]*[A-Za-z]//g; s/${esc}c//g" | tee "$log"
echo "check.sh: QEMU ran $(($(date +%s) - started)) s"
case $(cat "$dest/qemu.status") in
    0) ;;
    124) echo "check.sh: QEMU stopped after HWKVM_TIMEOUT=$timeout s" >&2 ;;
    *) echo "check.sh: QEMU failed with status $(cat "$dest/qemu.status")" >&2 ;;
esac

# Every command ran and ended with status 0.
failed=0
[ "$(cat "$dest/qemu.status")" = 0 ] || failed=1
n=0
for command in "$@"; do
    n=$((n + 1))
    if ! grep -q "^=== hwkvm: run $n: " "$log"; then
        echo "check.sh: command $n did not start: $command" >&2
        failed=1
    elif ! grep -q "^=== hwkvm: end $n: status 0 " "$log"; then
        echo "check.sh: command $n failed: $command ($(grep "^=== hwkvm: end $n: " "$log" || echo no end marker))" >&2
        failed=1
    fi
done
grep -q '^=== hwkvm: done' "$log" || { echo "check.sh: the inner machine did not finish" >&2; failed=1; }
if grep -q -e '^=== hwkvm: no /dev/kvm' -e '^=== hwkvm: nested paging is not' -e '^=== hwkvm: insmod' "$log"; then
    echo "check.sh: KVM did not come up in the inner machine" >&2
    failed=1
fi
[ "$failed" = 0 ] && echo "check.sh: all $n commands passed under hardware KVM (kvm_amd)"
exit "$failed"
