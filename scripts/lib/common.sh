# Shared helpers for the scripts (sourced, not run).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${HYP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hyp}
# Debian's TF-A that is known to work with QEMU 10 and TF-RMM rmm-spec-v1.0-rel0 (shared/DESIGN.md).
TFA_SUITE=trixie
TFA_VERSION=2.12.1+dfsg-1
TFA_FLAGS=(PLAT=qemu ENABLE_RME=1 QEMU_USE_GIC_DRIVER=QEMU_GICV3 CROSS_COMPILE=aarch64-linux-gnu-)
# Both QEMU machines: 2 GiB of RAM (the image sits at 0x6000_0000), no NIC (no option ROMs).
# (HYP_MEM and HYP_SMP are read when qemu_common runs, after the scripts parsed --mem and --smp;
# boot_prepare checks them, so HYP_MEM=SIZE in the environment stays the default of --mem.)
qemu_common() { QEMU_COMMON=(-m "${HYP_MEM:-2G}" -smp "${HYP_SMP:-1}" -nic none -nographic -semihosting-config enable=on,target=native); }
qemu_common
QEMU_TFA_MACHINE=(-M virt,virtualization=on,secure=on,gic-version=3 -cpu max,x-rme=on)

die() { printf 'FAIL: %s\n' "$*"; exit 1; }
# The bundled scenarios: the feature scenarios, then the hostile ones (scenarios/hostile/).
BUNDLED_SCENARIOS=(scenarios/*.scn scenarios/hostile/*.scn)
# A scenario file's name in logs and reports: scenarios/hostile/rsi.scn is "hostile-rsi".
scenario_name() {
  local n=${1%.scn}
  case $n in *scenarios/*) n=${n##*scenarios/} ;; *) n=${n##*/} ;; esac
  echo "${n//\//-}"
}

# --- command lines ------------------------------------------------------------------------------
# print_help SCRIPT: the script's leading comment block (after the #! line), without the "# ".
print_help() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$1"; }

# need_value FLAG NARGS NEXT: FLAG takes a value; call with "$#" and "${2-}" inside the argument
# loop. One line and exit 1 when it is missing (given last, or followed by another --flag).
need_value() { [ "$2" -ge 2 ] && [[ "$3" != --* ]] || die "$1 needs a value"; }

# int_value FLAG VALUE MIN [MAX]: VALUE is a whole number in [MIN, MAX].
int_value() {
  local what="a whole number of at least $3"
  [ "$3" = 1 ] && what="a positive whole number"
  [ -n "${4-}" ] && what="a whole number from $3 to $4"
  [[ $2 =~ ^[0-9]{1,9}$ ]] && (( 10#$2 >= $3 )) && { [ -z "${4-}" ] || (( 10#$2 <= $4 )); } \
    || die "$1 takes $what, not '$2'"
}

# mem_value NAME VALUE: a QEMU RAM size, NNNM or NNG, at least 1G (the hypervisor's image is
# loaded 512 MiB into RAM, at 0x6000_0000; with less QEMU runs nothing and prints nothing).
mem_value() {
  local mib
  [[ $2 =~ ^[1-9][0-9]{0,6}[MG]$ ]] || die "$1 takes a size like 1G, 1536M or 4G, not '$2'"
  mib=${2%?}; [[ $2 == *G ]] && mib=$((mib * 1024))
  [ "$mib" -ge 1024 ] || die "$1 must be at least 1G, not '$2' (the hypervisor is loaded 512 MiB into RAM)"
}

# trace_words FLAG LIST: LIST is comma-separated words of letters, digits and '_'.
trace_words() {
  [[ $2 =~ ^[A-Za-z0-9_]+(,[A-Za-z0-9_]+)*$ ]] \
    || die "$1 takes comma-separated parts of RMI command names (e.g. rtt,data), not '$2'"
}

# --- the boot scripts/run and scripts/gdb share ----------------------------------------------
# Their common flags, parsed by boot_flag into these variables:
firmware=embedded rmm_img="" fw_dir="" scenario="$ROOT/scenarios/basic.scn" scenario_given=0 scenarios=()
trace=0 trace_incl="" trace_excl="" verbose=0 bench=0 prealloc=0 map=0 ipa_bits=""
linux=0 kernel="" initrd="" cmdline="" interactive=0 mem_size="" virtio=0 disk_size=16M rmi2=0 prefault=0
# boot_flag ARGS...: if $1 is one of the shared flags, take it (and its value) and set BOOT_SHIFT
# to the number of arguments used; BOOT_SHIFT=0 when $1 is not one of them.
boot_flag() {
  BOOT_SHIFT=1
  case $1 in
    --firmware)
      need_value "$1" "$#" "${2-}"
      case $2 in
        embedded|trp) firmware=$2 ;;
        *) die "--firmware takes embedded or trp, not '$2' (an RMM image: --rmm PATH; your own TF-A: --firmware-dir DIR)" ;;
      esac
      BOOT_SHIFT=2 ;;
    --rmm) need_value "$1" "$#" "${2-}"; firmware=rmm rmm_img=$2 BOOT_SHIFT=2 ;;
    --firmware-dir) need_value "$1" "$#" "${2-}"; firmware=dir fw_dir=$2 BOOT_SHIFT=2 ;;
    # Given more than once: one realm per file, all in the same boot (joined in boot_prepare).
    --scenario) need_value "$1" "$#" "${2-}"; scenario=$2 scenario_given=1 scenarios+=("$2") BOOT_SHIFT=2 ;;
    --no-realm) scenario="" scenario_given=1 scenarios=() ;;
    --verbose) verbose=1 ;;
    --map) map=1 ;;
    --trace) trace=1 ;;
    --trace=*)
      trace_words --trace "${1#--trace=}"
      trace=1 trace_incl+=${trace_incl:+,}${1#--trace=} ;;
    --trace-exclude)
      need_value "$1" "$#" "${2-}"; trace_words "$1" "$2"
      trace=1 trace_excl+=${trace_excl:+,}-${2//,/,-} BOOT_SHIFT=2 ;;
    --smp) need_value "$1" "$#" "${2-}"; int_value "$1" "$2" 1 8; export HYP_SMP=$((10#$2)); BOOT_SHIFT=2 ;;
    --mem) need_value "$1" "$#" "${2-}"; mem_size=$2; BOOT_SHIFT=2 ;;
    --linux) linux=1 ;;
    --prefault) prefault=1 ;;
    --kernel) need_value "$1" "$#" "${2-}"; linux=1 kernel=$2 BOOT_SHIFT=2 ;;
    --initrd) need_value "$1" "$#" "${2-}"; linux=1 initrd=$2 BOOT_SHIFT=2 ;;
    --cmdline) [ "$#" -ge 2 ] || die "--cmdline needs a value"; linux=1 cmdline=$2 BOOT_SHIFT=2 ;;
    --interactive) linux=1 interactive=1 ;;
    --virtio) linux=1 virtio=1 ;;
    --rmi)
      need_value "$1" "$#" "${2-}"
      case $2 in
        1.0) rmi2=0 ;;
        2.0) rmi2=1 ;;
        *) die "--rmi takes 1.0 or 2.0, not '$2'" ;;
      esac
      BOOT_SHIFT=2 ;;
    --disk-size)
      need_value "$1" "$#" "${2-}"
      [[ $2 =~ ^[1-9][0-9]{0,3}M$ ]] && [ "${2%M}" -le 128 ] || die "--disk-size takes 1M to 128M, not '$2'"
      linux=1 virtio=1 disk_size=$2 BOOT_SHIFT=2 ;;
    --ipa-bits) need_value "$1" "$#" "${2-}"; int_value "$1" "$2" 32 52; ipa_bits=$((10#$2)); BOOT_SHIFT=2 ;;
    *) BOOT_SHIFT=0 ;;
  esac
}

hyp_elf() { echo "$ROOT/target/aarch64-unknown-none/${1:-debug}/hyp"; }

# rmm_init_hint LOG: when TF-A could not start the RMM ("ERROR: RMM init failed: N" on its
# console; the RMM prints nothing and RMI_VERSION then answers SMC_UNKNOWN), one sentence on why
# and what to do (shared/reference-stacks.md: what a mismatch looks like); nothing otherwise.
rmm_init_hint() {
  local n
  n=$(grep -aoE 'RMM init failed: -?[0-9]+' "$1" | head -n1 | grep -oE -- '-?[0-9]+$')
  case $n in
    '') ;;
    -2) echo "TF-A could not start the RMM: their RMM-EL3 interface versions differ (TF-A: \"RMM init failed: -2\"). An RMM newer than rmm-spec-v1.0-rel0 needs a newer TF-A (tf-rmm-v0.9.0, RMI 2.0: TF-A v2.15.0) than Debian's $TFA_VERSION: build that TF-A yourself and boot with --firmware-dir DIR" ;;
    -8) echo "TF-A could not start the RMM: it found no memory at boot (TF-A: \"RMM init failed: -8\", E_RMM_BOOT_NO_MEM; TF-RMM main asks TF-A for memory with RMM_RESERVE_MEMORY, which TF-A provides for FVP and qemu_sbsa but not QEMU virt)" ;;
    *) echo "TF-A could not start the RMM (TF-A: \"RMM init failed: $n\"; see TF-A's console above)" ;;
  esac
}

# realm_mem_mib SIZE: a Linux realm's RAM in MiB (NNNM or NNG, 128M to 16G).
realm_mem_mib() {
  local mib
  [[ $1 =~ ^[1-9][0-9]{0,6}[MG]$ ]] || die "--mem takes a size like 512M or 2G, not '$1'"
  mib=${1%?}; [[ $1 == *G ]] && mib=$((mib * 1024))
  [ "$mib" -ge 128 ] && [ "$mib" -le 16384 ] || die "--mem: a Linux realm takes 128M to 16G, not '$1'"
  [ $((mib % 2)) = 0 ] || die "--mem: a Linux realm's RAM is a whole number of 2 MiB blocks, not '$1'"
  echo "$mib"
}

# The kernel command line a Linux realm gets unless --cmdline says otherwise (the hypervisor adds
# earlycon at the UART's shared alias, which depends on the IPA width it picks). panic=-1: a
# panicking kernel resets at once (the run fails with its last lines) instead of hanging.
LINUX_CMDLINE="console=ttyAMA0 rdinit=/init panic=-1 swiotlb=4096"

# linux_bundle WORK FLAGS RAM_MIB: the kernel (--kernel, else Debian's from scripts/setup
# --linux), the initramfs (--initrd, else built from linux/init and busybox), into WORK/bundle.bin.
linux_bundle() {
  local work=$1 flags=$2 ram=$3 assets img bb rel rd mods extra=()
  source "$ROOT/scripts/lib/linux.sh"
  if [ -z "$kernel" ] || [ -z "$initrd" ]; then
    assets=$(linux_assets) || die "could not get Debian's arm64 kernel and busybox (scripts/setup --linux)"
    img=$(sed -n 1p <<<"$assets") bb=$(sed -n 2p <<<"$assets") rel=$(sed -n 3p <<<"$assets")
    mods=$(sed -n 4p <<<"$assets")
  fi
  [ -n "$kernel" ] && img=$kernel
  [ -f "$img" ] || die "--kernel: no kernel Image at '$img'"
  if [ -n "$initrd" ]; then
    [ -f "$initrd" ] || die "--initrd: no file '$initrd'"
    rd=$initrd
  else
    rd=$work/initramfs.cpio
    [ "$interactive" = 1 ] && extra+=(--interactive)
    # Debian's virtio modules (virtio_mmio, virtio_blk), for --virtio; /init loads them always.
    [ -n "$mods" ] && extra+=(--modules "$mods")
    build_initramfs "$rd" "$bb" "${extra[@]}" || die "could not build the initramfs"
  fi
  printf 'hyp: Linux realm: kernel %s%s, initramfs %s (%s KiB), %s MiB RAM, %s vCPU(s)\n' \
    "$img" "${rel:+ ($rel)}" "$rd" "$(( $(stat -c %s "$rd") / 1024 ))" "$ram" "${HYP_SMP:-1}" >&2
  [ "$virtio" = 1 ] && printf 'hyp: virtio: a %s disk image of pseudo-random bytes for virtio-blk (vda)\n' "$disk_size" >&2
  make_linux_bundle "$img" "$rd" "$work/bundle.bin" "$flags" "${HYP_SMP:-1}" $((ram << 20)) \
    "${cmdline:-$LINUX_CMDLINE}" "$(trace_filter)" "$([ "$virtio" = 1 ] && echo $((${disk_size%M} << 20)) || echo 0)"
}

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

# make_linux_bundle KERNEL INITRD OUT FLAGS VCPUS RAM_BYTES CMDLINE [TRACE_FILTER [DISK_BYTES]]: the
# same layout with the Linux flag (bit 4): the kernel Image in the realm's place, the initramfs in
# the scenario's, and from byte 2048 of the header the vCPUs, RAM size, command-line length and
# disk length (u64 LE), the command line from byte 2112 (hyp/src/arch/nsmem.rs). DISK_BYTES > 0
# sets the virtio flag (bit 6) and appends a disk image of that size, page aligned: pseudo-random
# bytes from a fixed seed (the same disk every run), which the realm reads and rewrites.
make_linux_bundle() {
  python3 - "$@" <<'PY' || die "could not write the Linux bundle"
import struct, sys
kernel, initrd, out, flags, vcpus, ram, cmdline = sys.argv[1:8]
filt = (sys.argv[8] if len(sys.argv) > 8 else '').encode('ascii')
disk_len = int(sys.argv[9]) if len(sys.argv) > 9 else 0
k, i = open(kernel, 'rb').read(), open(initrd, 'rb').read()
cmd = cmdline.encode()
if len(cmd) > 4096 - 2112:
    sys.exit('the kernel command line is longer than %d bytes' % (4096 - 2112))
if len(filt) > 1024:
    sys.exit('the trace filter is longer than 1024 bytes')
hdr = bytearray(4096)
flags = int(flags) | 16 | (64 if disk_len else 0)
head = b'HYPBNDL1' + struct.pack('<QQQQ', flags, len(k), len(i), len(filt)) + filt
hdr[:len(head)] = head
hdr[2048:2048 + 32] = struct.pack('<QQQQ', int(vcpus), int(ram), len(cmd), disk_len)
hdr[2112:2112 + len(cmd)] = cmd
body = bytes(hdr) + k + b'\0' * ((-len(k)) % 4096) + i
if disk_len:
    import random
    body += b'\0' * ((-len(body)) % 4096) + random.Random(0x5eed).randbytes(disk_len)
if len(body) > 256 << 20:
    sys.exit('kernel, initramfs and disk are %d MiB: more than the 256 MiB bundle' % (len(body) >> 20))
open(out, 'wb').write(body)
PY
}

# make_bundle REALM_BIN SCENARIO OUT FLAGS [TRACE_FILTER]: the file QEMU loads at 0x5000_0000
# for the hypervisor. Header page: "HYPBNDL1", then u64 LE flags (bit 0 trace RMI calls, bit 1
# bench measurements, bit 2 verbose, bit 3 print the realm's IPA map at the end of the run), realm
# length, scenario length, trace-filter length, and the filter text at byte 40; the realm at 4 KiB;
# the scenario after it (page aligned). REALM_BIN and SCENARIO may be "": a bundle with neither
# carries flags only (no realm).
make_bundle() {
  python3 - "$1" "$2" "$3" "$4" "${5-}" <<'PY' || die "could not write the bundle"
import struct, sys
realm = open(sys.argv[1], 'rb').read() if sys.argv[1] else b''
scen = open(sys.argv[2], 'rb').read() if sys.argv[2] else b''
flags = int(sys.argv[4])
filt = sys.argv[5].encode('ascii')  # comma-separated words; "-word" excludes; empty: every call
if len(filt) > 1024:
    sys.exit('the trace filter is longer than 1024 bytes')
pad = (-len(realm)) % 4096
hdr = b'HYPBNDL1' + struct.pack('<QQQQ', flags, len(realm), len(scen), len(filt)) + filt
open(sys.argv[3], 'wb').write(hdr + b'\0' * (4096 - len(hdr)) + realm + b'\0' * pad + scen)
PY
}

# The trace filter for the bundle: the --trace=WORDS, then the --trace-exclude WORDS as -WORD.
trace_filter() { echo "$trace_incl${trace_incl:+${trace_excl:+,}}$trace_excl"; }

# boot_prepare PROFILE WORK: after boot_flag has parsed the shared flags, check them, install what
# is missing, build, and lay the boot out in WORK. Sets HYP_ELF, REALM_ELF ("" when no realm runs)
# and BOOT_QEMU, the QEMU command line (scripts/gdb adds -S -gdb; scripts/run a timeout).
boot_prepare() {
  local profile=$1 work=$2 realm_bin="" bundle=() fw f n flags
  # --rmi picks what the embedded model speaks; firmware's RMM speaks what it speaks (negotiated).
  [ "$rmi2" = 1 ] && [ "$firmware" != embedded ] \
    && die "--rmi 2.0 selects the embedded model's ABI; a firmware RMM is asked for 1.0 and driven through the 2.0 adapter when it speaks 2.0 only"
  case $firmware in
    rmm) [ -f "$rmm_img" ] || die "--rmm: no RMM image at '$rmm_img'" ;;
    dir) for f in bl1.bin fip.bin; do [ -f "$fw_dir/$f" ] || die "--firmware-dir: '$fw_dir/$f' is missing"; done ;;
    # TF-A's TRP answers only VERSION/DELEGATE/UNDELEGATE: no realm unless one is asked for.
    trp) [ "$scenario_given" = 0 ] && scenario="" ;;
  esac
  # The map is the realm's stage 2: a boot that runs no realm has none to print.
  [ "$map" = 1 ] && [ -z "$scenario" ] \
    && die "--map draws a realm's IPA map, and this boot runs no realm (--no-realm, or --firmware trp without --scenario)"
  [ -n "$ipa_bits" ] && [ -z "$scenario" ] && die "--ipa-bits sets a realm's IPA width, and this boot runs no realm"
  if [ -n "$scenario" ]; then
    # Several --scenario files: one realm each, in one boot. Each file gets its own copy (below),
    # then the copies are joined, each after a "%%realm NAME" line (scenario::realms).
    local files=("$scenario") k=0 cpus=0 joined=()
    [ ${#scenarios[@]} -gt 1 ] && files=("${scenarios[@]}")
    [ ${#files[@]} -gt 1 ] && [ "$map" = 1 ] && die "--map draws one realm's IPA map: give one --scenario"
    for f in "${files[@]}"; do
      k=$((k + 1))
      [ -f "$f" ] || die "--scenario: no scenario file '$f'"
      # --ipa-bits N wins over the scenario's own "config ipa-bits": a copy with the line added
      # before its "end" (config lines after "end" are refused).
      if [ -n "$ipa_bits" ]; then
        # (In a directory per realm: the copy keeps the file's name, which names the realm.)
        mkdir -p "$work/realm-$k"
        awk -v bits="$ipa_bits" '!done && $1 == "end" { print "config ipa-bits " bits; done = 1 } { print }' \
          "$f" >"$work/realm-$k/$(basename "$f")"
        f=$work/realm-$k/$(basename "$f")
      fi
      # A scenario with "config vcpus N" needs N CPUs; several realms, the sum of theirs.
      n=$(sed -n 's/^config[[:space:]]\+vcpus[[:space:]]\+\([0-9]\+\).*/\1/p' "$f" | tail -n1)
      cpus=$((cpus + ${n:-1}))
      joined+=("$f")
    done
    if [ ${#joined[@]} -gt 1 ]; then
      : >"$work/realms.scn"
      for f in "${joined[@]}"; do
        printf '%%%%realm %s\n' "$(scenario_name "$f")" >>"$work/realms.scn"
        cat "$f" >>"$work/realms.scn"
        # A file whose last line has no newline must not run into the next mark.
        [ -z "$(tail -c1 "$f")" ] || echo >>"$work/realms.scn"
      done
      scenario=$work/realms.scn
    else
      scenario=${joined[0]}
    fi
    # A scenario gets the CPUs its vCPUs need unless --smp says otherwise. Several realms get as
    # many as their vCPUs, at most this machine's cores: their vCPUs take turns on the CPUs there
    # are, and QEMU with more CPUs than the machine has cores makes every broadcast TLB
    # invalidation wait for descheduled vCPU threads (4 realms on 4 CPUs here: 39 s, on 2: 2.7 s).
    if [ ${#joined[@]} -gt 1 ]; then
      local cores; cores=$(nproc 2>/dev/null || echo 2)
      [ "$cpus" -gt "$cores" ] && cpus=$cores
    fi
    [ "$cpus" -gt 8 ] && cpus=8
    if [ -z "${HYP_SMP:-}" ] && { [ ${#joined[@]} -gt 1 ] || [ -n "${n:-}" ]; }; then export HYP_SMP=$cpus; fi
  fi
  if [ -n "${HYP_SMP:-}" ]; then int_value HYP_SMP "$HYP_SMP" 1 8; fi
  local linux_ram=""
  if [ "$linux" = 1 ]; then
    [ "$scenario_given" = 1 ] && [ -n "$scenario" ] && die "--linux runs Linux as the realm: it takes no --scenario"
    # --mem is the realm's RAM here (default 512M); QEMU gets 1.5 GiB more for the hypervisor,
    # the bundle and the realm's tables.
    linux_ram=$(realm_mem_mib "${mem_size:-512M}") || exit 1
    export HYP_MEM=$((linux_ram + 1536))M
    scenario=""
  elif [ -n "${mem_size:-}" ]; then
    mem_value --mem "$mem_size"; export HYP_MEM=$mem_size
  fi
  if [ -n "${HYP_MEM:-}" ]; then mem_value HYP_MEM "$HYP_MEM"; fi
  qemu_common
  # A benchmark boot has QEMU allocate all guest RAM up front: otherwise the first touch of each
  # page (the RMM zeroing a granule it delegates) is a page fault of the machine QEMU runs on,
  # whose cost varies by 3x from one boot to the next (huge pages or not) and lands in fault-in.
  # (Both boots take it: the embedded one through scripts/qemu.sh, which builds its own command.)
  QEMU_BENCH=()
  if [ "$bench" = 1 ] || [ "$prealloc" = 1 ]; then QEMU_BENCH=(-mem-prealloc); fi

  local setup_args=()
  [ "$firmware" != embedded ] && setup_args+=(--tfa)
  "$ROOT/scripts/setup" "${setup_args[@]}" || die "scripts/setup failed"
  # A bad scenario is refused here, by the parser the hypervisor and the realm use (built for the
  # host), before anything is built for or booted on QEMU.
  if [ -n "$scenario" ]; then
    local checked
    checked=$(cd "$ROOT" && cargo run -q --target host-tuple -p scenario --features host --bin scenario-check -- "$scenario" 2>&1) \
      || die "$(basename "$scenario"): ${checked##*$'\n'}"
  fi
  build_hyp "$profile"
  HYP_ELF=$(hyp_elf "$profile") REALM_ELF=""
  if [ -n "$scenario" ]; then
    realm_bin=$(build_realm) || die "${realm_bin##*FAIL: }"
    REALM_ELF=${realm_bin%.bin}
  fi
  flags=$(( trace | bench << 1 | verbose << 2 | map << 3 | interactive << 5 | rmi2 << 7 | prefault << 8 ))
  if [ "$linux" = 1 ]; then
    linux_bundle "$work" "$flags" "$linux_ram"
    bundle=(-device "loader,file=$work/bundle.bin,addr=0x50000000,force-raw=on")
  # No realm and no flags: no bundle at all, which means the same (self-check only).
  elif [ -n "$scenario" ] || [ "$flags" != 0 ]; then
    make_bundle "$realm_bin" "$scenario" "$work/bundle.bin" "$flags" "$(trace_filter)"
    bundle=(-device "loader,file=$work/bundle.bin,addr=0x50000000,force-raw=on")
  fi
  case $firmware in
    embedded) BOOT_QEMU=("$ROOT/scripts/qemu.sh" "$HYP_ELF" "${bundle[@]}" "${QEMU_BENCH[@]}") ;;
    *)
      case $firmware in
        trp) fw=$(tfa_build) || die "${fw##*FAIL: }" ;;
        rmm) fw=$(tfa_build "$rmm_img") || die "${fw##*FAIL: }" ;;
        dir) fw=$fw_dir ;;
      esac
      flash_image "$fw" "$HYP_ELF" "$work/flash.bin"
      BOOT_QEMU=(qemu-system-aarch64 "${QEMU_TFA_MACHINE[@]}" "${QEMU_COMMON[@]}" "${QEMU_BENCH[@]}" -bios "$work/flash.bin" "${bundle[@]}") ;;
  esac
}
