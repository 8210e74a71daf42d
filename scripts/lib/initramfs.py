#!/usr/bin/env python3
"""The Linux realm's initramfs: an uncompressed newc ("070701") cpio archive, the same bytes for
the same inputs (entries sorted by name, mtime 0, uid/gid 0, inodes numbered in order).

usage: initramfs.py OUT BUSYBOX [--init FILE] [--interactive] [--modules DIR]
       initramfs.py --list ARCHIVE
       initramfs.py --self-test

Contents: /bin/busybox (0755) with /bin/sh -> busybox (/init installs the other applets as
symlinks), the directories /bin /dev /etc /proc /root /sbin /sys /tmp /usr/bin /usr/sbin,
/dev/console (character device 5,1), and /init (0755, default linux/init). --interactive adds
/etc/hyp-interactive, on which /init starts a shell on the console instead of the workload.
--modules DIR adds /lib /lib/modules /lib/modules/hyp with DIR/order and every module it lists
(one file name a line, load order; 0644), which /init insmods in that order (scripts/lib/linux.sh
caches the kernel's virtio modules that way in ~/.cache/hyp/linux/modules).
"""
import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIRS = ['bin', 'dev', 'etc', 'proc', 'root', 'sbin', 'sys', 'tmp', 'usr', 'usr/bin', 'usr/sbin']
MODULE_DIRS = ['lib', 'lib/modules', 'lib/modules/hyp']
S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR = 0o040000, 0o100000, 0o120000, 0o020000
MAGIC = b'070701'
TRAILER = 'TRAILER!!!'


def entries(busybox, init, interactive=False, modules=None):
    """[(name, mode, data, (rdev major, minor))] for the archive, sorted by name. modules: None, or
    (the order file's bytes, [(file name, bytes)])."""
    e = [(d, S_IFDIR | 0o755, b'', (0, 0)) for d in DIRS]
    e[DIRS.index('tmp')] = ('tmp', S_IFDIR | 0o1777, b'', (0, 0))
    e += [('bin/busybox', S_IFREG | 0o755, busybox, (0, 0)),
          ('bin/sh', S_IFLNK | 0o777, b'busybox', (0, 0)),
          ('dev/console', S_IFCHR | 0o600, b'', (5, 1)),
          ('init', S_IFREG | 0o755, init, (0, 0))]
    if interactive:
        e.append(('etc/hyp-interactive', S_IFREG | 0o644, b'1\n', (0, 0)))
    if modules is not None:
        order, kos = modules
        e += [(d, S_IFDIR | 0o755, b'', (0, 0)) for d in MODULE_DIRS]
        e.append(('lib/modules/hyp/order', S_IFREG | 0o644, order, (0, 0)))
        e += [('lib/modules/hyp/' + n, S_IFREG | 0o644, data, (0, 0)) for n, data in kos]
    return sorted(e)


def read_modules(d):
    """(DIR/order's bytes, [(file name, bytes)]) for --modules DIR; exits with FAIL on a missing
    order, a listed file that is missing or not an ELF, or a name that is not a plain NAME.ko."""
    path = os.path.join(d, 'order')
    if not os.path.isfile(path):
        sys.exit(f'FAIL: initramfs: --modules {d}: no {path} (scripts/setup --linux writes it)')
    order = open(path, 'rb').read()
    kos = []
    for n in order.decode().splitlines():
        if not re.fullmatch(r'[A-Za-z0-9_-]+\.ko', n):
            sys.exit(f"FAIL: initramfs: {path} lists '{n}', not a plain NAME.ko")
        f = os.path.join(d, n)
        data = open(f, 'rb').read() if os.path.isfile(f) else b''
        if data[:4] != b'\x7fELF':
            sys.exit(f'FAIL: initramfs: {path} lists {n}, but {f} is {"not an ELF file" if data else "missing or empty"}')
        kos.append((n, data))
    return order, kos


def _pad(n):
    return b'\0' * (-n % 4)


def archive(ents):
    """The newc cpio bytes of ents, ending with the trailer, padded to 512 bytes."""
    out = bytearray()

    def member(ino, name, mode, data, rdev, nlink):
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        out.extend(MAGIC + b''.join(b'%08X' % f for f in fields) + name.encode() + b'\0')
        out.extend(_pad(len(out)))
        out.extend(data)
        out.extend(_pad(len(out)))

    for ino, (name, mode, data, rdev) in enumerate(ents, 1):
        member(ino, name, mode, data, rdev, 2 if mode & 0o170000 == S_IFDIR else 1)
    member(0, TRAILER, 0, b'', (0, 0), 1)
    out.extend(b'\0' * (-len(out) % 512))
    return bytes(out)


def parse(buf):
    """[(name, mode, data, (rdev major, minor))] of a newc archive, up to its trailer."""
    ents, off = [], 0
    while True:
        if buf[off:off + 6] != MAGIC:
            raise ValueError(f'no newc header at offset {off:#x}')
        f = [int(buf[off + 6 + 8 * i:off + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rdev, namesize = f[1], f[6], (f[9], f[10]), f[11]
        name = buf[off + 110:off + 110 + namesize - 1].decode()
        off += 110 + namesize
        off += -off % 4
        data = buf[off:off + size]
        off += size
        off += -off % 4
        if name == TRAILER:
            if any(buf[off:]):
                raise ValueError('bytes other than padding after the trailer')
            return ents
        ents.append((name, mode, data, rdev))


def build(out, busybox, init, interactive, modules=None):
    bb = open(busybox, 'rb').read()
    if bb[:4] != b'\x7fELF':
        sys.exit(f'FAIL: initramfs: {busybox} is not an ELF file')
    text = open(init, 'rb').read()
    if not text.startswith(b'#!'):
        sys.exit(f'FAIL: initramfs: {init} does not start with #!')
    data = archive(entries(bb, text, interactive, modules and read_modules(modules)))
    tmp = out + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, out)


def listing(path):
    for name, mode, data, rdev in parse(open(path, 'rb').read()):
        kind = {S_IFDIR: 'd', S_IFREG: '-', S_IFLNK: 'l', S_IFCHR: 'c'}.get(mode & 0o170000, '?')
        extra = f' -> {data.decode()}' if kind == 'l' else f' {rdev[0]},{rdev[1]}' if kind == 'c' else ''
        print(f'{kind}{mode & 0o7777:04o} {len(data):9} /{name}{extra}')


def self_test():
    bb, init = b'\x7fELF' + bytes(range(256)) * 3 + b'x', b'#!/bin/busybox sh\necho hi\n'
    plain, inter = archive(entries(bb, init)), archive(entries(bb, init, True))
    assert plain == archive(entries(bb, init)), 'not deterministic'
    assert len(plain) % 512 == 0 and len(inter) % 512 == 0
    got = {n: (m, d, r) for n, m, d, r in parse(plain)}
    assert [n for n, *_ in parse(plain)] == sorted(got), 'not sorted'
    assert set(got) == set(DIRS) | {'bin/busybox', 'bin/sh', 'dev/console', 'init'}, sorted(got)
    assert got['bin/busybox'] == (S_IFREG | 0o755, bb, (0, 0))
    assert got['init'] == (S_IFREG | 0o755, init, (0, 0))
    assert got['bin/sh'] == (S_IFLNK | 0o777, b'busybox', (0, 0))
    assert got['dev/console'] == (S_IFCHR | 0o600, b'', (5, 1))
    assert got['tmp'][0] == S_IFDIR | 0o1777 and got['proc'][0] == S_IFDIR | 0o755
    assert 'etc/hyp-interactive' in {n for n, *_ in parse(inter)}
    # --modules: the order file and the modules it lists under /lib/modules/hyp, read from a DIR.
    with tempfile.TemporaryDirectory() as d:
        kos = {'virtio_mmio.ko': b'\x7fELF mmio', 'virtio-blk.ko': b'\x7fELF blk'}
        for n, data in kos.items():
            open(os.path.join(d, n), 'wb').write(data)
        open(os.path.join(d, 'unlisted.ko'), 'wb').write(b'\x7fELF unlisted')
        open(os.path.join(d, 'order'), 'w').write('virtio_mmio.ko\nvirtio-blk.ko\n')
        mods = read_modules(d)
        with_mods = archive(entries(bb, init, False, mods))
        assert with_mods == archive(entries(bb, init, False, read_modules(d))), 'not deterministic'
        got_m = {n: (m, d_, r) for n, m, d_, r in parse(with_mods)}
        assert set(got_m) == set(got) | set(MODULE_DIRS) | {'lib/modules/hyp/order'} \
            | {'lib/modules/hyp/' + n for n in kos}, sorted(got_m)
        assert [n for n, *_ in parse(with_mods)] == sorted(got_m), 'not sorted'
        assert got_m['lib/modules/hyp/order'] == (S_IFREG | 0o644, b'virtio_mmio.ko\nvirtio-blk.ko\n', (0, 0))
        for n, data in kos.items():
            assert got_m['lib/modules/hyp/' + n] == (S_IFREG | 0o644, data, (0, 0)), n
        for dd in MODULE_DIRS:
            assert got_m[dd][0] == S_IFDIR | 0o755, dd
        # A listed module that is missing, not an ELF, or not a plain NAME.ko; no order at all.
        for order, why in (('gone.ko\n', 'missing'), ('order\n', 'NAME.ko'),
                           ('../virtio_mmio.ko\n', 'NAME.ko')):
            open(os.path.join(d, 'order'), 'w').write(order)
            try:
                read_modules(d)
                raise AssertionError(f'--modules took an order listing {order!r}')
            except SystemExit as e:
                assert str(e).startswith('FAIL: initramfs:') and why in str(e), e
        open(os.path.join(d, 'bad.ko'), 'wb').write(b'text')
        open(os.path.join(d, 'order'), 'w').write('bad.ko\n')
        try:
            read_modules(d)
            raise AssertionError('--modules took a module that is not an ELF')
        except SystemExit as e:
            assert 'not an ELF' in str(e), e
        os.remove(os.path.join(d, 'order'))
        try:
            read_modules(d)
            raise AssertionError('--modules took a DIR without order')
        except SystemExit as e:
            assert 'no ' in str(e) and 'order' in str(e), e
        # An empty order (every module built in) still makes the directories and the file.
        open(os.path.join(d, 'order'), 'w').write('')
        names = {n for n, *_ in parse(archive(entries(bb, init, False, read_modules(d))))}
        assert names == set(got) | set(MODULE_DIRS) | {'lib/modules/hyp/order'}, sorted(names)
    # Every header starts 4-byte aligned, and mtime, uid and gid are 0.
    off = 0
    for name, mode, data, rdev in parse(plain) + [(TRAILER, 0, b'', (0, 0))]:
        assert plain[off:off + 6] == MAGIC and off % 4 == 0
        assert plain[off + 22:off + 38] == b'0' * 16 and plain[off + 46:off + 54] == b'0' * 8
        off += 110 + len(name) + 1
        off += -off % 4 + len(data)
        off += -off % 4
    try:
        parse(plain[:100])
        raise AssertionError('a truncated archive parsed')
    except ValueError:
        pass
    # The real /init, if it is there, is a busybox sh script.
    real = os.path.join(ROOT, 'linux', 'init')
    if os.path.exists(real):
        assert open(real, 'rb').read().startswith(b'#!/bin/busybox sh\n'), real
    print('initramfs.py self-test: ok')


def main(argv):
    if argv[:1] == ['--self-test']:
        return self_test()
    if len(argv) == 2 and argv[0] == '--list':
        return listing(argv[1])
    args, interactive, init, modules = [], False, os.path.join(ROOT, 'linux', 'init'), None
    it = iter(argv)
    for a in it:
        if a == '--interactive':
            interactive = True
        elif a == '--init':
            init = next(it, None) or sys.exit('FAIL: initramfs: --init needs a file')
        elif a == '--modules':
            modules = next(it, None) or sys.exit('FAIL: initramfs: --modules needs a directory')
        elif a in ('-h', '--help'):
            return print(__doc__.strip())
        elif a.startswith('-'):
            sys.exit(f"FAIL: initramfs: unknown option '{a}' (see --help)")
        else:
            args.append(a)
    if len(args) != 2:
        sys.exit('FAIL: initramfs: usage: initramfs.py OUT BUSYBOX [--init FILE] [--interactive] [--modules DIR]')
    for what, path in (('busybox', args[1]), ('init', init)):
        if not os.path.isfile(path):
            sys.exit(f'FAIL: initramfs: no {what} at {path}')
    if modules is not None and not os.path.isdir(modules):
        sys.exit(f'FAIL: initramfs: --modules: no directory {modules}')
    build(args[0], args[1], init, interactive, modules)


if __name__ == '__main__':
    main(sys.argv[1:])
