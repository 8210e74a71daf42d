# Debian's arm64 kernel, the modules the realm needs and busybox for the Linux realm, and its
# initramfs (sourced, not run).
#
#   linux_assets                 make sure the cache is there (runs `scripts/setup --linux` quietly
#                                if not), then print four lines: the Image path, the busybox
#                                path, the kernel release (e.g. 7.3.4+deb13-arm64), the modules
#                                directory (for build_initramfs --modules)
#   build_initramfs OUT BUSYBOX [--interactive] [--modules DIR]
#                                write a newc cpio with BUSYBOX and linux/init to OUT (--modules:
#                                and DIR/order with the modules it lists, in /lib/modules/hyp)
#   linux_cached [--verify]      true when $LINUX_DIR holds Image, busybox, VERSION and the modules
#                                that look right (--verify: also their recorded sha256)
#   linux_fetch ARCHIVE_URI      (scripts/setup --linux) fill $LINUX_DIR on first use
#
# The cache, $CACHE/linux (~/.cache/hyp/linux):
#   Image     the raw arm64 Image (decompressed here if the package ships it compressed)
#   busybox   busybox-static, an aarch64 static ELF
#   modules/  LINUX_MODULES (the virtio-mmio transport, virtio console and block) and every module
#             they depend on, decompressed to plain NAME.ko; the ones built into Debian's kernel
#             (virtio_console in 7.x) are not there. modules/order: one file name a line, in load
#             order (dependencies first); /init insmods them in that order.
#   VERSION   line 1: the kernel release; then "kernel-package NAME VERSION SUITE",
#             "metapackage linux-image-arm64 VERSION", "modules-package NAME VERSION SUITE",
#             "modules-wanted LINUX_MODULES", "busybox-package NAME VERSION SUITE"
#   SHA256SUMS  of Image, busybox, modules/order and the modules, for `linux_cached --verify`
# Delete the directory to fetch the newest kernel again. A cache without modules/order, or made for
# another LINUX_MODULES, is not "cached": the next run fetches again, once.
#
# Packages come through a private apt: its own configuration, sources, state and cache under
# $CACHE/apt-arm64, arm64 only, with the machine's Debian archive URI (the caller derives it from
# the machine's apt sources) and the machine's debian-archive-keyring as Signed-By. The machine's
# apt configuration, lists, dpkg status and architectures are not touched, and the fetch needs no
# root. The lists and apt's binary cache are deleted after each fetch (they take 100 MB).

: "${ROOT:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${CACHE:=${HYP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hyp}}"
LINUX_DIR=$CACHE/linux
LINUX_APT=$CACHE/apt-arm64
# Where the kernel comes from, in order of preference: the first suite whose linux-image-arm64 is
# at least LINUX_MIN_VERSION wins (trixie itself has 6.12, too old for a realm guest).
LINUX_KERNEL_SUITES=${HYP_LINUX_SUITES:-"trixie-backports forky"}
LINUX_BUSYBOX_SUITES="trixie forky"
LINUX_MIN_VERSION=6.13
LINUX_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# The modules the realm's virtio devices need (Debian builds them as modules; those it builds in
# are skipped): the virtio-mmio transport, the virtio console (hvc0) and block (vda) drivers.
LINUX_MODULES="virtio_mmio virtio_console virtio_blk"

_linux_log() { printf 'setup: %s\n' "$*" >&2; }
_linux_die() { printf 'FAIL: %s\n' "$*"; exit 1; }

# --- the cache ------------------------------------------------------------------------------------

# _linux_hex FILE OFFSET COUNT: COUNT bytes of FILE at OFFSET as hex, no spaces.
_linux_hex() { od -An -v -tx1 -j "$2" -N "$3" "$1" 2>/dev/null | tr -d ' \n'; }

linux_cached() {
  local d=$LINUX_DIR
  [ -s "$d/VERSION" ] && [ -s "$d/Image" ] && [ -s "$d/busybox" ] || return 1
  [ "$(_linux_hex "$d/Image" 56 4)" = 41524d64 ] || return 1      # "ARM\x64" at 0x38
  [ "$(_linux_hex "$d/busybox" 0 4)" = 7f454c46 ] || return 1     # "\x7fELF"
  [ -n "$(head -n1 "$d/VERSION")" ] || return 1
  [ -f "$d/modules/order" ] && grep -qxF "modules-wanted $LINUX_MODULES" "$d/VERSION" || return 1
  local m
  while IFS= read -r m; do
    [ "$(_linux_hex "$d/modules/$m" 0 4)" = 7f454c46 ] || return 1
  done <"$d/modules/order"
  if [ "${1-}" = --verify ]; then
    (cd "$d" && sha256sum --status -c SHA256SUMS 2>/dev/null) || return 1
  fi
}

linux_assets() {
  if ! linux_cached --verify; then
    local out
    printf "linux: fetching Debian's arm64 kernel, its virtio modules and busybox into %s (scripts/setup --linux)\n" "$LINUX_DIR" >&2
    if ! out=$("$ROOT/scripts/setup" --linux 2>&1); then
      printf '%s\n' "$out" | tail -n 15 >&2
      printf 'FAIL: scripts/setup --linux could not fetch the kernel and busybox (above)\n'
      return 1
    fi
    linux_cached --verify || { printf 'FAIL: scripts/setup --linux left no usable kernel in %s\n' "$LINUX_DIR"; return 1; }
  fi
  printf '%s\n' "$LINUX_DIR/Image" "$LINUX_DIR/busybox" "$(head -n1 "$LINUX_DIR/VERSION")" \
    "$LINUX_DIR/modules"
}

build_initramfs() {
  [ $# -ge 2 ] || { printf 'FAIL: usage: build_initramfs OUT BUSYBOX [--interactive] [--modules DIR]\n'; return 1; }
  python3 "$ROOT/scripts/lib/initramfs.py" "$1" "$2" --init "$ROOT/linux/init" "${@:3}"
}

# --- the private apt ------------------------------------------------------------------------------

# _linux_apt_config URI: write $LINUX_APT's configuration and sources (only when they changed).
_linux_apt_config() {
  local a=$LINUX_APT suites
  suites=$(printf '%s\n' $LINUX_KERNEL_SUITES $LINUX_BUSYBOX_SUITES | awk '!seen[$0]++' | xargs)
  mkdir -p "$a/sources.list.d" "$a/preferences.d" "$a/trusted.gpg.d" "$a/state/lists/partial" \
    "$a/cache/archives/partial" || _linux_die "cannot create $a"
  : >>"$a/sources.list"; : >>"$a/state/status"    # empty: no host sources, nothing "installed"
  local sandbox=""
  # apt drops to the _apt user for downloads when run as root; it cannot enter a private home
  # (/root is 0700), so downloads run as the caller, as apt itself falls back to with a warning.
  [ "$(id -u)" = 0 ] && sandbox='APT::Sandbox::User "root";'
  cat >"$a/apt.conf.tmp" <<CONF
// hyp's private apt for arm64 packages (scripts/lib/linux.sh); used with apt-get -c this-file.
Dir::Etc::sourcelist "$a/sources.list";
Dir::Etc::sourceparts "$a/sources.list.d";
Dir::Etc::preferences "$a/preferences";
Dir::Etc::preferencesparts "$a/preferences.d";
Dir::Etc::trusted "$a/trusted.gpg";
Dir::Etc::trustedparts "$a/trusted.gpg.d";
Dir::State "$a/state";
Dir::State::status "$a/state/status";
Dir::Cache "$a/cache";
Dir::Cache::pkgcache "pkgcache.bin";   // the machine may have it off: then each call takes 2 s
Dir::Cache::srcpkgcache "";
APT::Architecture "arm64";
APT::Architectures "arm64";
Acquire::Languages "none";
$sandbox
// The machine's hooks are about the machine's own cache (PackageKit, appstream, docker-clean).
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Pre-Invoke;
#clear DPkg::Post-Invoke;
CONF
  cat >"$a/sources.list.d/hyp-arm64.sources.tmp" <<SRC
Types: deb
URIs: $1
Suites: $suites
Components: main
Architectures: arm64
Targets: Packages
Signed-By: $LINUX_KEYRING
SRC
  local f
  for f in "$a/apt.conf" "$a/sources.list.d/hyp-arm64.sources"; do
    if cmp -s "$f.tmp" "$f"; then rm -f "$f.tmp"; else mv -f "$f.tmp" "$f"; fi
  done
}

_linux_apt_get() { apt-get -c "$LINUX_APT/apt.conf" "$@"; }
_linux_apt_cache() { apt-cache -c "$LINUX_APT/apt.conf" "$@"; }

_linux_apt_update() {
  local out
  [ -r "$LINUX_KEYRING" ] || _linux_die "no $LINUX_KEYRING: install debian-archive-keyring"
  # apt-get update exits 0 after some failures (a warning per source): those count too.
  if ! out=$(_linux_apt_get -q update 2>&1) \
     || grep -qE '^E:|^W:.*(NO_PUBKEY|signature|not signed|Failed to fetch)' <<<"$out"; then
    printf '%s\n' "$out" | grep -E '^[WE]:' >&2
    if grep -qE 'NO_PUBKEY|signature|not signed' <<<"$out"; then
      _linux_die "$LINUX_KEYRING (debian-archive-keyring $(dpkg-query -W -f='${Version}' debian-archive-keyring 2>/dev/null)) cannot verify the suites above; upgrade debian-archive-keyring (bookworm's 2023.3+deb12u2 and later carry trixie's keys)"
    fi
    _linux_die "apt-get update of the private arm64 sources in $LINUX_APT failed (above)"
  fi
}

# (The helpers below read their input to the end: under pipefail, a reader that stops early can
# fail the whole pipeline with SIGPIPE.)
# _linux_newest PKG SUITE: the newest version of PKG in SUITE (empty if none).
_linux_newest() {
  { _linux_apt_cache madison "$1" 2>/dev/null || true; } \
    | awk -F' *[|] *' -v s=" $2/" 'index($3, s) && !n++ { print $2 }'    # apt lists newest first
}

# _linux_pinned_deps PKG VERSION: "NAME VERSION" for each dependency pinned with (= VERSION).
_linux_pinned_deps() {
  { _linux_apt_cache show "$1=$2" 2>/dev/null || true; } \
    | awk '/^$/ { done = 1 } !done && sub(/^Depends: /, "")' | tr ',' '\n' \
    | sed -n 's/^ *\([^ |(]*\) *(= *\([^)]*\)).*/\1 \2/p'
}

# _linux_download DIR PKG VERSION: sets LINUX_DEB to the .deb's path (apt checks its hash against
# the signed index).
_linux_download() {
  (cd "$1" && _linux_apt_get -qq download "$2=$3" >&2) \
    || _linux_die "apt-get download $2=$3 failed (above)"
  LINUX_DEB=$(compgen -G "$1/${2}_*.deb" || true)
  LINUX_DEB=${LINUX_DEB%%$'\n'*}
  [ -n "$LINUX_DEB" ] || _linux_die "apt-get download $2=$3 left no .deb"
}

# _linux_suite_of PKG VERSION: the suite that has VERSION of PKG (empty if none).
_linux_suite_of() {
  { _linux_apt_cache madison "$1" 2>/dev/null || true; } \
    | awk -F' *[|] *' -v v="$2" '$2 == v && !n++ { split($3, a, " "); sub(/\/.*/, "", a[2]); print a[2] }'
}

# _linux_tar_has TAR ERE: TAR has a member whose name matches ERE.
_linux_tar_has() { tar -tf "$1" | grep -E "$2" >/dev/null; }

_linux_size() { du -h "$1" | cut -f1; }

# --- fetching -------------------------------------------------------------------------------------

linux_fetch() {
  [ -n "${1-}" ] || _linux_die "linux_fetch needs the Debian archive URI"
  local t
  for t in apt-get apt-cache dpkg-deb tar python3 sha256sum flock; do
    command -v "$t" >/dev/null || _linux_die "scripts/setup --linux needs '$t' (a Debian host with apt)"
  done
  mkdir -p "$LINUX_DIR" || _linux_die "cannot create $LINUX_DIR"
  # One fetch at a time (two runs may start on a fresh clone together).
  ( flock 9 || _linux_die "cannot lock $LINUX_DIR/.lock"
    linux_cached --verify && exit 0
    _linux_fetch_locked "$1"
  ) 9>"$LINUX_DIR/.lock" || exit 1
}

_linux_fetch_locked() {
  local uri=$1 d=$LINUX_DIR tmp t0=$SECONDS
  rm -rf "$d"/.fetch.* "$d/VERSION"            # VERSION last: its presence means complete
  tmp=$(mktemp -d "$d/.fetch.XXXXXX") || _linux_die "cannot create a directory in $d"
  # The lists and apt's binary cache (100 MB) only serve this fetch; the next one updates anyway.
  trap "rm -rf $(printf '%q ' "$tmp" "$LINUX_APT/state/lists" "$LINUX_APT/cache")" EXIT
  _linux_apt_config "$uri"
  _linux_log "updating the private arm64 package lists in $LINUX_APT ($(sed -n 's/^Suites: //p' "$LINUX_APT/sources.list.d/hyp-arm64.sources"))"
  _linux_apt_update

  # The kernel: the newest linux-image-arm64 of the first suite that has one new enough.
  local suite meta_ver="" kernel_suite="" seen=""
  for suite in $LINUX_KERNEL_SUITES; do
    local v; v=$(_linux_newest linux-image-arm64 "$suite")
    [ -n "$v" ] || { seen+=" $suite: none;"; continue; }
    if dpkg --compare-versions "$v" lt "$LINUX_MIN_VERSION"; then
      seen+=" $suite: $v;"; continue
    fi
    meta_ver=$v kernel_suite=$suite; break
  done
  [ -n "$meta_ver" ] || _linux_die "no linux-image-arm64 of at least $LINUX_MIN_VERSION (a realm guest needs Linux's RSI support, 6.13 and later) in${seen%;} — set HYP_LINUX_SUITES to other suites, or give scripts/run your own --kernel IMAGE"

  # Follow the metapackage to the package that holds the kernel: linux-image-arm64 →
  # linux-image-<release> → linux-binary-<release> (7.x), or linux-image-<release> itself (6.x).
  local pkg=linux-image-arm64 ver=$meta_ver hop deps next chain=""
  for hop in 1 2 3; do
    deps=$(_linux_pinned_deps "$pkg" "$ver")
    chain+=$deps$'\n'                          # where linux-modules-<release> turns up (7.x)
    next=$(grep -m1 '^linux-binary-[0-9]' <<<"$deps" || grep -m1 '^linux-image-[0-9]' <<<"$deps" || true)
    [ -n "$next" ] || break
    pkg=${next% *} ver=${next#* }
  done
  [ "$pkg" != linux-image-arm64 ] || _linux_die "linux-image-arm64 $meta_ver ($kernel_suite) depends on no linux-image-<release> package"
  _linux_log "kernel: linux-image-arm64 $meta_ver from $kernel_suite -> $pkg $ver"

  local deb path release
  _linux_download "$tmp" "$pkg" "$ver"; deb=$LINUX_DEB
  dpkg-deb --fsys-tarfile "$deb" >"$tmp/data.tar" || _linux_die "$deb is not a readable .deb"
  path=$(tar -tf "$tmp/data.tar" | grep -E '^\./(usr/lib/modules/[^/]+/vmlinuz|boot/vmlinuz-[^/]+)$' || true)
  path=${path%%$'\n'*}
  [ -n "$path" ] || _linux_die "$pkg $ver holds no boot/vmlinuz-* or usr/lib/modules/*/vmlinuz"
  case $path in
    */vmlinuz) release=${path%/vmlinuz}; release=${release##*/} ;;
    *) release=${path##*/vmlinuz-} ;;
  esac
  tar -xOf "$tmp/data.tar" -- "$path" >"$tmp/vmlinuz" || _linux_die "cannot extract $path from $deb"
  _linux_log "$(basename "$deb"): $(_linux_size "$deb"), ${path#./} $(_linux_size "$tmp/vmlinuz")"
  local how; how=$(_linux_py image "$tmp/vmlinuz" "$tmp/Image") || _linux_die "${path#./} from $pkg $ver: $how"
  _linux_log "${path#./} is $how"
  rm -f "$deb" "$tmp/vmlinuz"
  mv -f "$tmp/data.tar" "$tmp/kernel.tar"

  # The modules: 7.x ships them in linux-modules-<release>, pinned by linux-image-<release>; 6.x in
  # the package that holds the kernel. Which are built in is modules.builtin's to say: with the
  # modules (6.x), or in linux-base-<release> (7.x), a pinned dependency of the modules package.
  local mod mod_pkg=$pkg mod_ver=$ver mod_suite tars=() builtin_re='^\./(usr/)?lib/modules/[^/]+/modules\.builtin$'
  mod=$(grep -m1 '^linux-modules-[0-9]' <<<"$chain" || true)
  if [ -n "$mod" ]; then
    mod_pkg=${mod% *} mod_ver=${mod#* }
    rm -f "$tmp/kernel.tar"
    _linux_download "$tmp" "$mod_pkg" "$mod_ver"; deb=$LINUX_DEB
    dpkg-deb --fsys-tarfile "$deb" >"$tmp/modules.tar" || _linux_die "$deb is not a readable .deb"
    _linux_log "modules: $(basename "$deb"): $(_linux_size "$deb")"
    rm -f "$deb"
    tars+=("$tmp/modules.tar")
  else
    tars+=("$tmp/kernel.tar")
  fi
  if ! _linux_tar_has "${tars[0]}" "$builtin_re"; then
    local dep n=0
    for dep in $(_linux_pinned_deps "$mod_pkg" "$mod_ver" | awk -v r="-$release" '
        length($1) > length(r) && substr($1, length($1) - length(r) + 1) == r { print $1 "=" $2 }'); do
      _linux_download "$tmp" "${dep%%=*}" "${dep#*=}"; deb=$LINUX_DEB
      n=$((n + 1))
      dpkg-deb --fsys-tarfile "$deb" >"$tmp/dep$n.tar" || _linux_die "$deb is not a readable .deb"
      rm -f "$deb"
      if _linux_tar_has "$tmp/dep$n.tar" "$builtin_re"; then
        _linux_log "modules: modules.builtin from ${dep%%=*} ${dep#*=}"
        tars+=("$tmp/dep$n.tar"); break
      fi
      rm -f "$tmp/dep$n.tar"
    done
  fi
  mkdir -p "$tmp/modules" || _linux_die "cannot create $tmp/modules"
  how=$(_linux_py modules "$tmp/modules" "$release" $LINUX_MODULES -- "${tars[@]}") \
    || _linux_die "modules from $mod_pkg $mod_ver: $how"
  local l; while IFS= read -r l; do _linux_log "modules: $l"; done <<<"$how"
  mod_suite=$(_linux_suite_of "$mod_pkg" "$mod_ver")
  rm -f "${tars[@]}"

  # busybox-static: the first suite that has it.
  local bb_ver="" bb_suite=""
  for suite in $LINUX_BUSYBOX_SUITES; do
    bb_ver=$(_linux_newest busybox-static "$suite")
    [ -z "$bb_ver" ] || { bb_suite=$suite; break; }
  done
  [ -n "$bb_ver" ] || _linux_die "no busybox-static for arm64 in $LINUX_BUSYBOX_SUITES"
  _linux_download "$tmp" busybox-static "$bb_ver"; deb=$LINUX_DEB
  dpkg-deb --fsys-tarfile "$deb" >"$tmp/data.tar" || _linux_die "$deb is not a readable .deb"
  path=$(tar -tf "$tmp/data.tar" | grep -E '^\./(usr/)?bin/busybox$' || true)
  path=${path%%$'\n'*}
  [ -n "$path" ] || _linux_die "busybox-static $bb_ver holds no bin/busybox"
  tar -xOf "$tmp/data.tar" -- "$path" >"$tmp/busybox" || _linux_die "cannot extract $path from $deb"
  how=$(_linux_py elf "$tmp/busybox") || _linux_die "${path#./} from busybox-static $bb_ver: $how"
  chmod 0755 "$tmp/busybox"
  _linux_log "busybox-static $bb_ver from $bb_suite: $(_linux_size "$deb"), ${path#./} $(_linux_size "$tmp/busybox"), $how"
  rm -f "$deb" "$tmp/data.tar"

  (cd "$tmp" && sha256sum Image busybox modules/order $(sed 's|^|modules/|' modules/order) >SHA256SUMS) \
    || _linux_die "sha256sum failed"
  printf '%s\n' "$release" "kernel-package $pkg $ver $kernel_suite" \
    "metapackage linux-image-arm64 $meta_ver" "modules-package $mod_pkg $mod_ver ${mod_suite:-$kernel_suite}" \
    "modules-wanted $LINUX_MODULES" "busybox-package busybox-static $bb_ver $bb_suite" >"$tmp/VERSION"
  rm -rf "$d/modules"
  mv -f "$tmp/Image" "$tmp/busybox" "$tmp/SHA256SUMS" "$d/" && mv "$tmp/modules" "$d/modules" \
    && mv -f "$tmp/VERSION" "$d/" || _linux_die "cannot move the files into $d"
  _linux_log "Linux $release, its modules ($(xargs <"$d/modules/order")) and busybox $bb_ver cached in $d ($((SECONDS - t0)) s)"
}

# _linux_py image IN OUT | elf FILE | modules OUTDIR RELEASE NAME... -- TAR...: check (and
# decompress) the kernel; check busybox; pick the modules NAME... and what they depend on out of
# the packages' data TARs (see modules() below).
# Prints what it found; exit status 1 with the reason on stdout.
_linux_py() {
  python3 - "$@" <<'PY'
import gzip, lzma, os, re, shutil, struct, subprocess, sys, tarfile, zlib

def image(src, dst):
    data = open(src, 'rb').read()
    how = 'a raw arm64 Image'
    if data[:2] == b'\x1f\x8b':
        data = zlib.decompressobj(31).decompress(data)
        how = 'gzip-compressed; decompressed to a raw arm64 Image'
    elif data[:2] == b'MZ' and data[4:8] == b'zimg':        # EFI zboot
        off, size = struct.unpack_from('<II', data, 8)
        comp = data[0x18:0x38].split(b'\0')[0].decode('ascii', 'replace')
        payload = data[off:off + size]
        if comp == 'gzip':
            data = zlib.decompressobj(31).decompress(payload)
        elif comp in ('xz', 'lzma'):
            data = lzma.LZMADecompressor().decompress(payload)
        elif comp == 'zstd22' or comp == 'zstd':
            try:
                data = subprocess.run(['zstd', '-dcq'], input=payload, capture_output=True).stdout
            except FileNotFoundError:
                sys.exit(print('EFI zboot with zstd; install zstd to decompress it') or 1)
        else:
            sys.exit(print(f'EFI zboot with {comp!r} compression, which this script does not unpack') or 1)
        how = f'EFI zboot ({comp}); decompressed to a raw arm64 Image'
    if len(data) < 64 or data[0x38:0x3c] != b'ARM\x64':
        sys.exit(print('not an arm64 Image (no "ARM\\x64" magic at 0x38)') or 1)
    text_offset, image_size, flags = struct.unpack_from('<QQQ', data, 8)
    if (flags >> 1) & 3 not in (0, 1):
        sys.exit(print(f'an arm64 Image for {({2: "16K", 3: "64K"})[(flags >> 1) & 3]} pages; the realm needs 4K') or 1)
    if flags & 1:
        sys.exit(print('a big-endian arm64 Image') or 1)
    open(dst, 'wb').write(data)
    print(f'{how}, {len(data) / 2**20:.1f} MiB, 4K pages, image_size {image_size / 2**20:.1f} MiB')

def elf(path):
    f = open(path, 'rb')
    h = f.read(64)
    if len(h) < 64 or h[:4] != b'\x7fELF':
        sys.exit(print('not an ELF file') or 1)
    if h[4] != 2 or h[5] != 1 or struct.unpack_from('<H', h, 18)[0] != 183:
        sys.exit(print('not a 64-bit little-endian aarch64 ELF') or 1)
    phoff, = struct.unpack_from('<Q', h, 0x20)
    phentsize, phnum = struct.unpack_from('<HH', h, 0x36)
    f.seek(phoff)
    for _ in range(phnum):
        if struct.unpack_from('<I', f.read(phentsize))[0] == 3:     # PT_INTERP
            sys.exit(print('a dynamically linked ELF (it has an interpreter)') or 1)
    print('an aarch64 static ELF')

def _unpack(data, name):
    """The plain .ko of a module file as packaged (.ko, .ko.xz, .ko.zst or .ko.gz)."""
    if name.endswith('.xz'):
        return lzma.decompress(data)
    if name.endswith('.gz'):
        return gzip.decompress(data)
    if name.endswith('.zst'):
        if shutil.which('zstd'):
            r = subprocess.run(['zstd', '-dcq'], input=data, capture_output=True)
            if r.returncode == 0:
                return r.stdout
            sys.exit(print(f'zstd -d failed on {name}: {r.stderr.decode(errors="replace").strip()}') or 1)
        try:
            import zstandard                                   # python3-zstandard
            return zstandard.ZstdDecompressor().stream_reader(data).read()
        except ImportError:
            pass
        try:
            from compression import zstd                       # Python 3.14
            return zstd.decompress(data)
        except ImportError:
            pass
        sys.exit(print(f'{name} is zstd-compressed and neither the zstd command nor a Python zstd module is here: install zstd') or 1)
    return data

def _modinfo(ko, name):
    """The .modinfo section of an aarch64 ELF64 module as {key: value} (first of each key)."""
    if ko[:4] != b'\x7fELF' or ko[4] != 2 or ko[5] != 1 or struct.unpack_from('<H', ko, 18)[0] != 183:
        sys.exit(print(f'{name} is not a 64-bit little-endian aarch64 ELF once decompressed') or 1)
    shoff, = struct.unpack_from('<Q', ko, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from('<HHH', ko, 0x3a)
    # Elf64_Shdr: name, type, flags, addr, offset, size
    secs = [struct.unpack_from('<IIQQQQ', ko, shoff + i * shentsize) for i in range(shnum)]
    strtab = secs[shstrndx][4]
    for sh_name, _, _, _, off, size in secs:
        if ko[strtab + sh_name:ko.index(b'\0', strtab + sh_name)] == b'.modinfo':
            info = {}
            for kv in ko[off:off + size].split(b'\0'):
                k, eq, v = kv.partition(b'=')
                if eq:
                    info.setdefault(k.decode(), v.decode(errors='replace'))
            return info
    sys.exit(print(f'{name} has no .modinfo section') or 1)

def _modname(path):
    """kernel/drivers/char/hw_random/virtio-rng.ko.xz -> virtio_rng (as depends= names it)."""
    base = re.sub(r'\.(xz|zst|gz)$', '', os.path.basename(path))
    return base[:-len('.ko')].replace('-', '_')

def modules(out, release, *rest):
    """Write the modules named before '--', and every module they depend on (the .modinfo's
    depends=), as plain OUT/NAME.ko, and OUT/order (load order: dependencies first), from the data
    tars after '--'. A name that is no module in the tars must be in their modules.builtin (built
    into the kernel); without a modules.builtin, only dependencies may be missing (then they are
    taken as built in)."""
    split = rest.index('--')
    wanted, tars = [w.replace('-', '_') for w in rest[:split]], rest[split + 1:]
    ko_re = re.compile(r'^\./(?:usr/)?lib/modules/([^/]+)/(kernel/.+\.ko(?:\.xz|\.zst|\.gz)?)$')
    builtin_re = re.compile(r'^\./(?:usr/)?lib/modules/([^/]+)/modules\.builtin$')
    shipped, builtin, pkgs = {}, None, []
    for path in tars:
        t = tarfile.open(path, 'r:')
        pkgs.append(t)
        for m in t.getmembers():
            k = ko_re.match(m.name)
            if k and k.group(1) == release and m.isfile():
                shipped.setdefault(_modname(k.group(2)), (t, m, k.group(2)))
            b = builtin_re.match(m.name)
            if b and b.group(1) == release and m.isfile():
                builtin = (builtin or set()) | {_modname(l) for l in t.extractfile(m).read().decode().split()}
    if not shipped:
        sys.exit(print(f'no kernel/**/*.ko* under lib/modules/{release} in the packages') or 1)
    order, lines, done = [], [], {}

    def visit(name, needed_by):
        if done.get(name) == 'visiting':
            sys.exit(print(f'{name} depends on itself through {needed_by}') or 1)
        if name in done:
            return
        done[name] = 'visiting'
        if name not in shipped:
            if builtin is not None and name not in builtin:
                sys.exit(print(f'{name}{needed_by and f" (needed by {needed_by})"} is neither a module in the package nor built into the kernel (modules.builtin)') or 1)
            if builtin is None and not needed_by:
                sys.exit(print(f'{name} is no module in the package, and no modules.builtin says it is built into the kernel') or 1)
            lines.append(f'{name}: built into the kernel{"" if builtin is not None else " (assumed: no modules.builtin)"}'
                         + (f', needed by {needed_by}' if needed_by else ''))
            done[name] = 'builtin'
            return
        t, m, rel = shipped[name]
        ko = _unpack(t.extractfile(m).read(), rel)
        info = _modinfo(ko, rel)
        magic = info.get('vermagic', '').split()
        if magic[:1] != [release]:
            sys.exit(print(f'{rel} is built for {magic[0] if magic else "no kernel (no vermagic)"}, not {release}') or 1)
        deps = [d.replace('-', '_') for d in info.get('depends', '').split(',') if d]
        for d in deps:
            visit(d, name)
        file = re.sub(r'\.(xz|zst|gz)$', '', os.path.basename(rel))
        if not re.fullmatch(r'[A-Za-z0-9_-]+\.ko', file):
            sys.exit(print(f'{rel}: an unexpected module file name') or 1)
        with open(os.path.join(out, file), 'wb') as f:
            f.write(ko)
        order.append(file)
        lines.append(f'{file} {len(ko) / 1024:.1f} KiB ({rel}{", depends on " + " ".join(deps) if deps else ""}'
                     f'{", needed by " + needed_by if needed_by else ""})')
        done[name] = 'module'

    for w in wanted:
        visit(w, '')
    with open(os.path.join(out, 'order'), 'w') as f:
        f.write(''.join(n + '\n' for n in order))
    lines.append(f'load order: {" ".join(order) or "(none: all built in)"}')
    print('\n'.join(lines))

{'image': image, 'elf': elf, 'modules': modules}[sys.argv[1]](*sys.argv[2:])
PY
}
