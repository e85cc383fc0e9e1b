# Makefile for barge: static musl release build, install, tests, demo and bench.
#
#   make            static x86_64-unknown-linux-musl release binary (checked to be static)
#   make release    static, stripped binaries for x86_64, aarch64, armv7, riscv64 into dist/, with
#                   dist/SHA256SUMS (scripts/release.sh; installs the cross tools it needs)
#   make install    copy it to $(PREFIX)/bin (PREFIX=/usr/local; DESTDIR honoured)
#   make test       cargo fmt --check, cargo clippy -D warnings, make release, cargo test (the README's
#                   test command; tests/foreign.rs runs the dist/ binaries under qemu-user-static)
#   make deps       apt-get install the Debian packages tests, demo and bench use (only missing ones)
#   make demo       scripts/demo.sh: local registry, push busybox, barge pull it
#   make bench      scripts/bench.sh: timings against skopeo+umoci and curl|gzip|tar, then bench-wan
#   make bench-wan  scripts/wan/bench.sh: the same peers across an emulated WAN (RTT, rate, loss)
#   make fuzz       the fuzz harness's own tests, then each cargo-fuzz target for FUZZ_TIME seconds
#                   (default 600; needs nightly and cargo-fuzz; fuzz/run.sh)
#   make fuzz-smoke each fuzz target for FUZZ_SMOKE_TIME seconds (default 5): they build and run (CI)
#   make clean      cargo clean
#
# Needs a Rust toolchain installed with rustup (with clippy and rustfmt) and a C compiler
# (`make deps` installs build-essential); each target checks first and prints what to run.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

CARGO ?= cargo
RUSTUP ?= rustup
TARGET := x86_64-unknown-linux-musl
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
CARGO_TARGET_DIR ?= target
BIN := $(CARGO_TARGET_DIR)/$(TARGET)/release/barge

# ring's C/assembly parts need a musl C compiler for the musl target.
export CC_x86_64_unknown_linux_musl ?= musl-gcc
export BARGE ?= $(BIN)

# Debian packages for the tests (registry, image tools, TLS, auth, runtime), the demo and the bench.
DEB_PACKAGES := docker-registry skopeo umoci git busybox-static openssl apache2-utils runc \
	musl-tools ca-certificates curl pigz jq debootstrap time e2fsprogs \
	golang-docker-credential-helpers pass build-essential zstd
# Runtimes and peers that read what barge writes (bundles, archives).
DEB_PACKAGES += crun podman
# The initramfs boot tests and demo: qemu (TCG) and GNU cpio; the kernel is fetched by scripts/kernel.sh.
DEB_PACKAGES += qemu-system-x86 cpio
# Release binaries (make release) and their tests under qemu-user.
DEB_PACKAGES += qemu-user-static gcc-aarch64-linux-gnu libc6-dev-arm64-cross file python3-venv
# The WAN bench (make bench-wan): network namespaces and its table script.
DEB_PACKAGES += iproute2 python3

# What to run when the Rust toolchain is missing (printed by the checks below).
RUSTUP_INSTALL := curl --proto =https --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --component clippy,rustfmt \
	&& . "$$HOME/.cargo/env"

.PHONY: all build release rust-toolchain lint-tools c-compiler musl-target musl-gcc install test deps demo bench bench-wan fuzz fuzz-smoke clean

all: build

build: rust-toolchain c-compiler musl-target musl-gcc
	$(CARGO) build --release --target $(TARGET)
	@if command -v readelf >/dev/null; then \
		if readelf -d $(BIN) | grep -q '(NEEDED)' || readelf -l $(BIN) | grep -q 'INTERP'; then \
			echo "error: $(BIN) is dynamically linked" >&2; readelf -d $(BIN) | grep NEEDED >&2; exit 1; \
		fi; \
	elif ldd $(BIN) 2>&1 | grep -q '=>'; then \
		echo "error: $(BIN) is dynamically linked (ldd lists libraries)" >&2; exit 1; \
	fi
	@echo "built $(BIN): static, $$(stat -c %s $(BIN)) bytes"

# cargo and rustup (the musl target is added with rustup).
rust-toolchain:
	@for tool in $(firstword $(CARGO)) $(firstword $(RUSTUP)); do \
		command -v "$$tool" >/dev/null || { \
			echo "error: $$tool not found: barge builds with a Rust toolchain installed by rustup; run:" >&2; \
			echo '  $(RUSTUP_INSTALL)' >&2; \
			echo "then run make again in the same shell" >&2; \
			exit 1; }; \
	done

# cargo fmt and cargo clippy, which `make test` runs.
lint-tools: rust-toolchain
	@for c in fmt clippy; do \
		$(CARGO) $$c --version >/dev/null 2>&1 || { \
			echo "error: cargo $$c not found: run: $(RUSTUP) component add rustfmt clippy" >&2; \
			exit 1; }; \
	done

# ring's build scripts and musl-gcc (which execs gcc) need a C compiler.
c-compiler:
	@command -v cc >/dev/null && command -v gcc >/dev/null || { \
		echo "error: no C compiler (cc, gcc): run: apt-get install build-essential (or: make deps)" >&2; \
		exit 1; }

musl-target:
	@if ! $(RUSTUP) target list --installed | grep -qx '$(TARGET)'; then \
		echo "rustup target add $(TARGET)"; $(RUSTUP) target add $(TARGET); \
	fi

musl-gcc:
	@command -v "$$CC_x86_64_unknown_linux_musl" >/dev/null || { \
		echo "error: $$CC_x86_64_unknown_linux_musl not found: apt-get install musl-tools (or: make deps)" >&2; \
		exit 1; }

# Release binaries for the four hosts barge runs on (see README: Release binaries).
release: rust-toolchain c-compiler
	bash scripts/release.sh $(RELEASE_ARCHS)

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/barge
	@echo "installed $(DESTDIR)$(BINDIR)/barge"

# All tests, the two slow ones marked #[ignore] included (see README: Tests).
test: rust-toolchain lint-tools deps c-compiler
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --features fuzzing -- -D warnings
	$(MAKE) release
	$(CARGO) test
	$(CARGO) test --features fuzzing --lib fuzzing::
	$(CARGO) test --test push --test faults -- --ignored

deps:
	@missing=(); \
	for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$$p"); \
	done; \
	if (( $${#missing[@]} )); then \
		echo "apt-get install $${missing[*]}"; \
		apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "$${missing[@]}" </dev/null; \
	else \
		echo "deps: all Debian packages present"; \
	fi

demo: rust-toolchain
	bash scripts/demo.sh

bench:
	bash scripts/bench.sh
	$(MAKE) bench-wan

# barge against curl|pigz|tar, skopeo(+umoci) across an emulated WAN (scripts/wan/, README: WAN).
bench-wan:
	bash scripts/wan/bench.sh

FUZZ_TIME ?= 600
FUZZ_SMOKE_TIME ?= 5
FUZZ_TARGETS ?=

fuzz:
	$(CARGO) test --features fuzzing --lib fuzzing::
	fuzz/run.sh $(FUZZ_TIME) $(FUZZ_TARGETS)

fuzz-smoke:
	fuzz/run.sh $(FUZZ_SMOKE_TIME) $(FUZZ_TARGETS)

clean:
	$(CARGO) clean
