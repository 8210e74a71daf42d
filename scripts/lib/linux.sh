# Debian's arm64 kernel and busybox for the Linux realm, and its initramfs (sourced, not run).
#
#   linux_assets                 make sure the cache is there (runs `scripts/setup --linux` quietly
#                                if not), then print three lines: the Image path, the busybox
#                                path, the kernel release (e.g. 7.3.4+deb13-arm64)
#   build_initramfs OUT BUSYBOX [--interactive]
#                                write a newc cpio with BUSYBOX and linux/init to OUT
#   linux_cached [--verify]      true when $LINUX_DIR holds Image, busybox and VERSION that look
#                                right (--verify: also their recorded sha256)
#   linux_fetch ARCHIVE_URI      (scripts/setup --linux) fill $LINUX_DIR on first use
#
# The cache, $CACHE/linux (~/.cache/hyp/linux):
#   Image     the raw arm64 Image (decompressed here if the package ships it compressed)
#   busybox   busybox-static, an aarch64 static ELF
#   VERSION   line 1: the kernel release; then "kernel-package NAME VERSION SUITE",
#             "metapackage linux-image-arm64 VERSION", "busybox-package NAME VERSION SUITE"
#   SHA256SUMS  of Image and busybox, for `linux_cached --verify`
# Delete the directory to fetch the newest kernel again.
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
  if [ "${1-}" = --verify ]; then
    (cd "$d" && sha256sum --status -c SHA256SUMS 2>/dev/null) || return 1
  fi
}

linux_assets() {
  if ! linux_cached --verify; then
    local out
    printf "linux: fetching Debian's arm64 kernel and busybox into %s (scripts/setup --linux)\n" "$LINUX_DIR" >&2
    if ! out=$("$ROOT/scripts/setup" --linux 2>&1); then
      printf '%s\n' "$out" | tail -n 15 >&2
      printf 'FAIL: scripts/setup --linux could not fetch the kernel and busybox (above)\n'
      return 1
    fi
    linux_cached --verify || { printf 'FAIL: scripts/setup --linux left no usable kernel in %s\n' "$LINUX_DIR"; return 1; }
  fi
  printf '%s\n' "$LINUX_DIR/Image" "$LINUX_DIR/busybox" "$(head -n1 "$LINUX_DIR/VERSION")"
}

build_initramfs() {
  [ $# -ge 2 ] || { printf 'FAIL: usage: build_initramfs OUT BUSYBOX [--interactive]\n'; return 1; }
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
  local pkg=linux-image-arm64 ver=$meta_ver hop deps next
  for hop in 1 2 3; do
    deps=$(_linux_pinned_deps "$pkg" "$ver")
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
  rm -f "$deb" "$tmp/vmlinuz" "$tmp/data.tar"

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

  (cd "$tmp" && sha256sum Image busybox >SHA256SUMS) || _linux_die "sha256sum failed"
  printf '%s\n' "$release" "kernel-package $pkg $ver $kernel_suite" \
    "metapackage linux-image-arm64 $meta_ver" "busybox-package busybox-static $bb_ver $bb_suite" >"$tmp/VERSION"
  mv -f "$tmp/Image" "$tmp/busybox" "$tmp/SHA256SUMS" "$d/" && mv -f "$tmp/VERSION" "$d/" \
    || _linux_die "cannot move the files into $d"
  _linux_log "Linux $release and busybox $bb_ver cached in $d ($((SECONDS - t0)) s)"
}

# _linux_py image IN OUT | elf FILE: check (and decompress) the kernel; check busybox.
# Prints what it found; exit status 1 with the reason on stdout.
_linux_py() {
  python3 - "$@" <<'PY'
import gzip, lzma, struct, subprocess, sys, zlib

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

{'image': image, 'elf': elf}[sys.argv[1]](*sys.argv[2:])
PY
}
