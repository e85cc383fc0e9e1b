#!/usr/bin/env bash
# scripts/release.sh: static, stripped barge binaries for the hosts barge runs on
# (`make release`). Writes dist/barge-VERSION-ARCH-linux-musl for each ARCH and
# dist/SHA256SUMS, and checks each binary: no ELF interpreter, no NEEDED library, the
# right machine (and hard-float ABI for armv7).
#
#   scripts/release.sh                 all four: x86_64 aarch64 armv7 riscv64
#   scripts/release.sh aarch64 armv7   only these (SHA256SUMS lists what dist/ holds)
#
# What each target needs (installed here when missing and running as root, else named):
#   x86_64   rustup target x86_64-unknown-linux-musl; musl-gcc (Debian: musl-tools) for ring
#   aarch64  rustup target aarch64-unknown-linux-musl; gcc-aarch64-linux-gnu (with its
#            headers, libc6-dev-arm64-cross) as ring's C compiler and as the linker (the musl
#            CRT and libc come with the rustup target)
#   armv7    (armv7-unknown-linux-musleabihf) and riscv64 (riscv64gc-unknown-linux-musl):
#            rustup has no prebuilt std for them here, so std is built from the `rust-src`
#            component (-Zbuild-std, allowed on the stable toolchain by RUSTC_BOOTSTRAP=1) and
#            linked by zig against zig's musl: pip packages ziglang and cargo-zigbuild
#            (pinned below, installed in a venv in target/release-tools; Debian: python3-venv).
#            cargo-zigbuild sets CC_<target>/AR_<target> to its `zig cc`
#            wrapper, so C crates (ring, zstd) build for these too.
# armv7 is built with --cfg libc_unstable_musl_v1_2: the libc crate then declares musl's
# 64-bit time_t (musl >= 1.2, which zig ships) instead of the 32-bit one, so mtimes after
# 2038 are right (tests/foreign.rs pulls a file dated 2040 under qemu-arm).
set -euo pipefail

cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
RUSTUP=${RUSTUP:-rustup}
DIST=${DIST:-dist}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
TOOLS=${RELEASE_TOOLS:-$TARGET_DIR/release-tools}
ZIGLANG_VERSION=${ZIGLANG_VERSION:-0.17.1}
ZIGBUILD_VERSION=${ZIGBUILD_VERSION:-0.24.1}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

die() { echo "error: $*" >&2; exit 1; }

# arch → Rust target triple, readelf machine, ELF class.
triple() {
  case $1 in
    x86_64) echo x86_64-unknown-linux-musl ;;
    aarch64) echo aarch64-unknown-linux-musl ;;
    armv7) echo armv7-unknown-linux-musleabihf ;;
    riscv64) echo riscv64gc-unknown-linux-musl ;;
    *) die "unknown arch $1: choose from x86_64 aarch64 armv7 riscv64" ;;
  esac
}
machine() {
  case $1 in
    x86_64) echo 'Advanced Micro Devices X86-64' ;;
    aarch64) echo AArch64 ;;
    armv7) echo ARM ;;
    riscv64) echo RISC-V ;;
  esac
}
elf_class() { [[ $1 == armv7 ]] && echo ELF32 || echo ELF64; }

# ------------------------------------------------------------------ what the builds need

is_root() { [[ $(id -u) == 0 ]]; }

need_deb() { # PACKAGE COMMAND-OR-FILE
  command -v "$2" >/dev/null || [[ -e $2 ]] && return
  is_root || die "$2 not found: run: apt-get install $1"
  echo "apt-get install $1"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" </dev/null >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" </dev/null >/dev/null; } ||
    die "apt-get install $1 failed: install it by hand"
}

need_rust_target() {
  "$RUSTUP" target list --installed | grep -qx "$1" && return
  echo "rustup target add $1"
  "$RUSTUP" target add "$1" || die "rustup target add $1 failed"
}

need_rust_src() {
  "$RUSTUP" component list --installed | grep -q '^rust-src' && return
  echo "rustup component add rust-src"
  "$RUSTUP" component add rust-src || die "rustup component add rust-src failed"
}

# ziglang and cargo-zigbuild, pinned, in a venv of their own under the target dir (Debian's
# python refuses system-wide pip installs); an existing cargo-zigbuild on PATH is not used.
need_zig() {
  local venv=$TOOLS/venv
  if [[ ! -x $venv/bin/cargo-zigbuild ]] || ! "$venv/bin/python3" -m ziglang version >/dev/null 2>&1 ||
    ! "$venv/bin/python3" -m pip show -q "ziglang==$ZIGLANG_VERSION" >/dev/null 2>&1; then
    command -v python3 >/dev/null || die "python3 not found: run: apt-get install python3 python3-venv"
    echo "python3 -m venv $venv; pip install ziglang==$ZIGLANG_VERSION cargo-zigbuild==$ZIGBUILD_VERSION"
    python3 -m venv "$venv" || die "python3 -m venv failed: run: apt-get install python3-venv"
    "$venv/bin/python3" -m pip install -q --disable-pip-version-check \
      "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION" ||
      die "pip install ziglang==$ZIGLANG_VERSION cargo-zigbuild==$ZIGBUILD_VERSION failed (network? versions?)"
  fi
  PATH=$venv/bin:$PATH
}

need_tools() {
  need_deb binutils readelf
  need_deb file file
  need_deb coreutils sha256sum
}

# ------------------------------------------------------------------ one build per arch

build() { # ARCH
  local arch=$1 t
  t=$(triple "$arch")
  case $arch in
    x86_64)
      need_rust_target "$t"
      need_deb musl-tools musl-gcc
      CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc} \
        "$CARGO" build --locked --release --target "$t"
      ;;
    aarch64)
      need_rust_target "$t"
      need_deb gcc-aarch64-linux-gnu aarch64-linux-gnu-gcc
      need_deb libc6-dev-arm64-cross /usr/aarch64-linux-gnu/include/stdint.h
      CC_aarch64_unknown_linux_musl=${CC_aarch64_unknown_linux_musl:-aarch64-linux-gnu-gcc} \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
        "$CARGO" build --locked --release --target "$t"
      ;;
    armv7 | riscv64)
      need_rust_src
      need_zig
      local flags=""
      [[ $arch == armv7 ]] && flags="-C link-self-contained=no --cfg libc_unstable_musl_v1_2"
      local var
      var=CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$t")_RUSTFLAGS
      env "$var=$flags" RUSTC_BOOTSTRAP=1 \
        cargo-zigbuild zigbuild --locked --release --target "$t" -Zbuild-std=std,panic_abort
      ;;
  esac
}

check() { # ARCH FILE
  local arch=$1 bin=$2 got
  if readelf -lW "$bin" | grep -q INTERP || readelf -dW "$bin" | grep -q '(NEEDED)'; then
    die "$bin is dynamically linked: $(readelf -dW "$bin" | grep NEEDED | tr -s ' ')"
  fi
  got=$(readelf -hW "$bin" | sed -n 's/^ *Machine: *//p')
  [[ $got == "$(machine "$arch")" ]] || die "$bin: machine is '$got', want '$(machine "$arch")'"
  got=$(readelf -hW "$bin" | sed -n 's/^ *Class: *//p')
  [[ $got == "$(elf_class "$arch")" ]] || die "$bin: ELF class is $got, want $(elf_class "$arch")"
  if [[ $arch == armv7 ]] && ! readelf -hW "$bin" | grep -q 'hard-float ABI'; then
    die "$bin is not hard-float: $(readelf -hW "$bin" | grep Flags)"
  fi
  file -b "$bin" | grep -q ', stripped' || die "$bin is not stripped: $(file -b "$bin")"
}

main() {
  local archs=("$@")
  ((${#archs[@]})) || archs=(x86_64 aarch64 armv7 riscv64)
  need_tools
  mkdir -p "$DIST"
  for arch in "${archs[@]}"; do
    triple "$arch" >/dev/null
    local start=$SECONDS out
    echo "==> $arch ($(triple "$arch"))"
    build "$arch"
    out=$DIST/barge-$VERSION-$arch-linux-musl
    cp "$TARGET_DIR/$(triple "$arch")/release/barge" "$out.tmp"
    check "$arch" "$out.tmp"
    mv "$out.tmp" "$out"
    echo "$out: $(stat -c %s "$out") bytes, static, stripped, $(machine "$arch") ($((SECONDS - start)) s)"
  done
  (cd "$DIST" && sha256sum barge-"$VERSION"-*-linux-musl >SHA256SUMS)
  echo "==> $DIST/SHA256SUMS"
  cat "$DIST/SHA256SUMS"
}

main "$@"
