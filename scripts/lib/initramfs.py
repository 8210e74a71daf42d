#!/usr/bin/env python3
"""The Linux realm's initramfs: an uncompressed newc ("070701") cpio archive, the same bytes for
the same inputs (entries sorted by name, mtime 0, uid/gid 0, inodes numbered in order).

usage: initramfs.py OUT BUSYBOX [--init FILE] [--interactive]
       initramfs.py --list ARCHIVE
       initramfs.py --self-test

Contents: /bin/busybox (0755) with /bin/sh -> busybox (/init installs the other applets as
symlinks), the directories /bin /dev /etc /proc /root /sbin /sys /tmp /usr/bin /usr/sbin,
/dev/console (character device 5,1), and /init (0755, default linux/init). --interactive adds
/etc/hyp-interactive, on which /init starts a shell on the console instead of the workload.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIRS = ['bin', 'dev', 'etc', 'proc', 'root', 'sbin', 'sys', 'tmp', 'usr', 'usr/bin', 'usr/sbin']
S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR = 0o040000, 0o100000, 0o120000, 0o020000
MAGIC = b'070701'
TRAILER = 'TRAILER!!!'


def entries(busybox, init, interactive=False):
    """[(name, mode, data, (rdev major, minor))] for the archive, sorted by name."""
    e = [(d, S_IFDIR | 0o755, b'', (0, 0)) for d in DIRS]
    e[DIRS.index('tmp')] = ('tmp', S_IFDIR | 0o1777, b'', (0, 0))
    e += [('bin/busybox', S_IFREG | 0o755, busybox, (0, 0)),
          ('bin/sh', S_IFLNK | 0o777, b'busybox', (0, 0)),
          ('dev/console', S_IFCHR | 0o600, b'', (5, 1)),
          ('init', S_IFREG | 0o755, init, (0, 0))]
    if interactive:
        e.append(('etc/hyp-interactive', S_IFREG | 0o644, b'1\n', (0, 0)))
    return sorted(e)


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


def build(out, busybox, init, interactive):
    bb = open(busybox, 'rb').read()
    if bb[:4] != b'\x7fELF':
        sys.exit(f'FAIL: initramfs: {busybox} is not an ELF file')
    text = open(init, 'rb').read()
    if not text.startswith(b'#!'):
        sys.exit(f'FAIL: initramfs: {init} does not start with #!')
    data = archive(entries(bb, text, interactive))
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
    args, interactive, init = [], False, os.path.join(ROOT, 'linux', 'init')
    it = iter(argv)
    for a in it:
        if a == '--interactive':
            interactive = True
        elif a == '--init':
            init = next(it, None) or sys.exit('FAIL: initramfs: --init needs a file')
        elif a in ('-h', '--help'):
            return print(__doc__.strip())
        elif a.startswith('-'):
            sys.exit(f"FAIL: initramfs: unknown option '{a}' (see --help)")
        else:
            args.append(a)
    if len(args) != 2:
        sys.exit('FAIL: initramfs: usage: initramfs.py OUT BUSYBOX [--init FILE] [--interactive]')
    for what, path in (('busybox', args[1]), ('init', init)):
        if not os.path.isfile(path):
            sys.exit(f'FAIL: initramfs: no {what} at {path}')
    build(args[0], args[1], init, interactive)


if __name__ == '__main__':
    main(sys.argv[1:])
