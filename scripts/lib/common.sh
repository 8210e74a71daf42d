# Shared helpers for scripts/run, scripts/test and scripts/gdb (sourced, not run).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${HYP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hyp}
# Debian's TF-A that is known to work with QEMU 10 and TF-RMM rmm-spec-v1.0-rel0 (shared/DESIGN.md).
TFA_SUITE=trixie
TFA_VERSION=2.12.1+dfsg-1
TFA_FLAGS=(PLAT=qemu ENABLE_RME=1 QEMU_USE_GIC_DRIVER=QEMU_GICV3 CROSS_COMPILE=aarch64-linux-gnu-)
# Both QEMU machines: 2 GiB of RAM (the image sits at 0x6000_0000), no NIC (no option ROMs).
# (HYP_MEM and HYP_SMP are read when qemu_common runs, after the scripts parsed --smp.)
qemu_common() { QEMU_COMMON=(-m "${HYP_MEM:-2G}" -smp "${HYP_SMP:-1}" -nic none -nographic -semihosting-config enable=on,target=native); }
qemu_common
QEMU_TFA_MACHINE=(-M virt,virtualization=on,secure=on,gic-version=3 -cpu max,x-rme=on)

die() { printf 'FAIL: %s\n' "$*"; exit 1; }

hyp_elf() { echo "$ROOT/target/aarch64-unknown-none/${1:-debug}/hyp"; }

build_hyp() { # build_hyp PROFILE
  local args=(build -p hyp)
  [ "$1" = release ] && args+=(--release)
  (cd "$ROOT" && cargo "${args[@]}" 2>&1) >&2 || die "cargo build failed"
}

# Make sure TF-A (Debian's source package, TRP as the RMM unless RMM=... is given) is built in
# the cache; prints the build directory. Built once per machine and flag set.
tfa_build() { # tfa_build [RMM_IMAGE]
  local rmm=${1:-} tag=trp
  [ -n "$rmm" ] && tag=rmm-$(sha256sum "$rmm" | cut -c1-12)
  local dir="$CACHE/tfa-$TFA_VERSION-$tag"
  if [ -f "$dir/out/fip.bin" ] && [ -f "$dir/out/bl1.bin" ]; then echo "$dir/out"; return; fi
  mkdir -p "$CACHE"
  local src="$CACHE/tfa-src-$TFA_VERSION"
  if [ ! -d "$src" ]; then
    printf 'hyp: fetching Debian source arm-trusted-firmware %s (%s)\n' "$TFA_VERSION" "$TFA_SUITE" >&2
    local dl; dl=$(mktemp -d "$CACHE/dl.XXXX")
    (cd "$dl" && apt-get source -qq --download-only "arm-trusted-firmware/$TFA_SUITE" >&2 2>/dev/null) \
      || (cd "$dl" && apt-get source -qq --download-only "arm-trusted-firmware=$TFA_VERSION" >&2) \
      || die "apt-get source arm-trusted-firmware failed (scripts/setup --tfa adds the deb-src lines)"
    (cd "$dl" && dpkg-source -q -x ./*.dsc src >&2) || die "dpkg-source failed"
    mv "$dl/src" "$src" && rm -rf "$dl"
  fi
  rm -rf "$dir" && mkdir -p "$dir" && cp -a "$src" "$dir/src"
  # BL33 is a placeholder here: every run puts the current hypervisor into a copy of the FIP.
  printf '\0\0\0\0' > "$dir/bl33-placeholder.bin"
  local extra=()
  [ -n "$rmm" ] && extra+=("RMM=$(realpath "$rmm")")
  printf 'hyp: building TF-A %s (%s) in %s\n' "$TFA_VERSION" "${TFA_FLAGS[*]} ${extra[*]}" "$dir" >&2
  (cd "$dir/src" && make -j"$(nproc)" "${TFA_FLAGS[@]}" "${extra[@]}" BL33="$dir/bl33-placeholder.bin" all fip >"$dir/build.log" 2>&1) \
    || { tail -20 "$dir/build.log" >&2; die "TF-A build failed (log: $dir/build.log)"; }
  mkdir -p "$dir/out" && cp "$dir/src/build/qemu/release/"{bl1.bin,fip.bin} "$dir/out/"
  echo "$dir/out"
}

# flash_image FW_DIR HYP_ELF OUT: bl1.bin + (fip.bin with BL33 = the hypervisor) laid out as
# TF-A's qemu_fw.bios (FIP at 256 KiB, PLAT_QEMU_FIP_BASE), using Debian's fiptool.
flash_image() {
  local fw=$1 elf=$2 out=$3 work; work=$(dirname "$out")
  aarch64-linux-gnu-objcopy -O binary "$elf" "$work/hyp.bin" || die "objcopy failed"
  cp "$fw/fip.bin" "$work/fip.bin"
  fiptool update --nt-fw "$work/hyp.bin" "$work/fip.bin" >/dev/null || die "fiptool update failed"
  cp "$fw/bl1.bin" "$out"
  dd if="$work/fip.bin" of="$out" bs=64k seek=4 conv=notrunc status=none
}

# The test realm, built soft-float (the host does not preserve FP registers across exits).
REALM_TARGET=aarch64-unknown-none-softfloat
build_realm() {
  (cd "$ROOT" && cargo build -p realm --target "$REALM_TARGET" --release 2>&1) >&2
  local elf="$ROOT/target/$REALM_TARGET/release/realm"
  [ -f "$elf" ] || die "building the test realm failed"
  aarch64-linux-gnu-objcopy -O binary "$elf" "$elf.bin" || die "objcopy of the realm failed"
  echo "$elf.bin"
}

# make_bundle REALM_BIN SCENARIO OUT FLAGS (1 = trace, 2 = bench): the file QEMU loads at 0x5000_0000 for the hyp:
# "HYPBNDL1", flags, realm length, scenario length; the realm at 4 KiB; the scenario after it.
make_bundle() {
  python3 - "$1" "$2" "$3" "$4" <<'PY' || die "could not write the bundle"
import struct, sys
realm = open(sys.argv[1], 'rb').read()
scen = open(sys.argv[2], 'rb').read()
flags = int(sys.argv[4])  # bit 0: trace every RMI call; bit 1: benchmark measurements
pad = (-len(realm)) % 4096
hdr = b'HYPBNDL1' + struct.pack('<QQQ', flags, len(realm), len(scen))
open(sys.argv[3], 'wb').write(hdr + b'\0' * (4096 - len(hdr)) + realm + b'\0' * pad + scen)
PY
}
bundle_args() { echo "-device loader,file=$1,addr=0x50000000,force-raw=on"; }
