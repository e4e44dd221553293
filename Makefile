# Build and test everything. A fresh machine needs nothing but rustup/cargo:
# the bare-metal target is added here.

CARGO      ?= cargo
GUEST_ELF  := target/x86_64-unknown-none/release/guest
GUEST      := target/guest.bin
VMM        := target/release/vmm
MEM        ?= 2G
# The user programs (user/src/bin/), in the order the guest lists them,
# and the initramfs that holds them, built into the guest.
PROGRAMS   := demo segv rowrite kernel spin forge forgerip gsload mprotect sleep mapfixed \
              forktest forkloop forkbomb exectest execargs forkspin cowoom cowshare \
              threads threadunmap threadsleep threadspin
USER_BINS  := target/x86_64-unknown-none/release
INITRAMFS  := target/initramfs.cpio
# `make run INITRD=my.cpio` hands the guest your own archive as well.
INITRD     ?=

.PHONY: all build guest vmm run test lint bench clean toolchain i386-linux chromium hw-kvm-check initramfs c-compiler

all: build

build: vmm guest

toolchain:
	@rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-none || rustup target add x86_64-unknown-none
	@rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
	@rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt

vmm:
	$(CARGO) build --release -p vmm

# The programs as static ELF executables at 0x08048000, and their archive.
initramfs: toolchain
	cd user && $(CARGO) build --release
	$(CARGO) run --release -q -p binfmt --features std --bin mkinitramfs -- $(INITRAMFS) \
		$(foreach p,$(PROGRAMS),$(p)=$(USER_BINS)/$(p))

guest: toolchain initramfs
	cd guest && $(CARGO) build --release
	cp $(GUEST_ELF) $(GUEST)

run: build
	$(VMM) --mem $(MEM) $(if $(INITRD),--initrd $(INITRD)) $(GUEST)

# Formatting and lints, host unit and property tests, the loom models of
# ksync's protocols (their own target dir: the flag rebuilds everything),
# then the system tests that boot the guest and, under QEMU, real i386
# Linux kernels.
test: build lint i386-linux chromium c-compiler
	RUSTFLAGS="--cfg loom" $(CARGO) test --release -p ksync --target-dir target/loom
	$(CARGO) test --workspace --release

# QEMU and Debian's i386 kernels for tests/qemu_i386.rs, cached under
# target/. Without root the install fails: the tests are then ignored,
# except in CI (REQUIRE_KVM=1), where they must run.
i386-linux:
	tests/i386/setup.sh target/i386-linux || [ "$(REQUIRE_KVM)" != 1 ]

# Debian's chromium, headless, for the map's tests (tests/map.rs); as for
# i386-linux, mandatory in CI only.
chromium:
	tests/chromium/setup.sh || [ "$(REQUIRE_KVM)" != 1 ]

# A C compiler for tests/elf_programs.rs, which builds a static C program
# to run in the guest. As above: without root the install fails and the
# test is ignored, except in CI (REQUIRE_KVM=1), where it must run.
c-compiler:
	command -v cc >/dev/null || sh -c '. tests/as_root.sh && as_root apt-get install -y -q --no-install-recommends gcc' || [ "$(REQUIRE_KVM)" != 1 ]

# vmm under a genuine KVM: kvm_amd in Debian's kernel, booted by QEMU TCG
# on a CPU with SVM. Takes minutes, so not part of `test`.
hw-kvm-check: build
	tests/hwkvm/check.sh

lint: toolchain initramfs
	$(CARGO) fmt --all --check
	cd guest && $(CARGO) fmt --check
	cd user && $(CARGO) fmt --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings
	cd guest && $(CARGO) clippy --release -- -D warnings
	cd user && $(CARGO) clippy --release -- -D warnings

bench:
	$(CARGO) bench -p mm

clean:
	$(CARGO) clean
