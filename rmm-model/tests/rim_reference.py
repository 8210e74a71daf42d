#!/usr/bin/env python3
"""Independent reference for the values pinned in measurement.rs (the fixed realm's RIM, REMs).

Written from the RMM spec's descriptor tables (DEN0137 1.0-rel0 B4.4.9-B4.4.11) and TF-RMM
rmm-spec-v1.0-rel0 lib/measurement/src/rim.c, with Python's hashlib, sharing no code with the
model. Run it to print the SHA-256 and SHA-512 RIMs of the fixed realm the test builds and the
REMs after the test's two extends.
"""
import hashlib
import struct

PAGE = 4096


def h(algo, data):
    return hashlib.new(algo, data).digest()


def realm_params(flags, s2sz, sve_vl, num_bps, num_wps, pmu_num_ctrs, algorithm):
    # A zeroed 4 KiB RmiRealmParams with only the measured fields, at TF-RMM's C widths.
    p = bytearray(PAGE)
    struct.pack_into("<Q", p, 0x00, flags)
    for off, v in ((0x08, s2sz), (0x10, sve_vl), (0x18, num_bps), (0x20, num_wps), (0x28, pmu_num_ctrs)):
        struct.pack_into("<I", p, off, v)
    p[0x30] = algorithm
    return bytes(p)


def desc(kind, rim):
    # 0x100-byte descriptor head: type, length, current RIM (digest length, zero-padded to 64).
    d = bytearray(0x100)
    d[0] = kind
    struct.pack_into("<Q", d, 0x08, 0x100)
    d[0x10:0x10 + len(rim)] = rim
    return d


def data(algo, rim, ipa, flags, content):
    d = desc(0, rim)
    struct.pack_into("<QQ", d, 0x50, ipa, flags)
    if flags == 1:
        c = h(algo, content)
        d[0x60:0x60 + len(c)] = c
    return h(algo, bytes(d))


def rec(algo, rim, flags, pc, gprs):
    p = bytearray(PAGE)
    struct.pack_into("<Q", p, 0x000, flags)
    struct.pack_into("<Q", p, 0x200, pc)
    struct.pack_into("<8Q", p, 0x300, *gprs)
    c = h(algo, bytes(p))
    d = desc(1, rim)
    d[0x50:0x50 + len(c)] = c
    return h(algo, bytes(d))


def ripas(algo, rim, base, top):
    d = desc(2, rim)
    struct.pack_into("<QQ", d, 0x50, base, top)
    return h(algo, bytes(d))


def page(seed):
    return bytes((j * 7 + seed) & 0xFF for j in range(PAGE))


def fixed_realm(algo, code):
    # Must match `fixed_realm` in measurement.rs step by step.
    rim = h(algo, realm_params(flags=0, s2sz=39, sve_vl=0, num_bps=1, num_wps=1, pmu_num_ctrs=0, algorithm=code))
    for base in range(0, 0x4000, 0x1000):  # INIT_RIPAS [0, 16K): four L3 entries
        rim = ripas(algo, rim, base, base + 0x1000)
    rim = ripas(algo, rim, 0x20_0000, 0x40_0000)  # INIT_RIPAS [2M, 4M): one L2 entry
    rim = ripas(algo, rim, 0, 0x1000)  # INIT_RIPAS [0, 4K) again: already RAM, measured again
    rim = data(algo, rim, 0x0000, 1, page(1))  # DATA_CREATE, RMI_MEASURE_CONTENT
    rim = data(algo, rim, 0x1000, 0, page(2))  # DATA_CREATE, RMI_NO_MEASURE_CONTENT
    # DATA_CREATE_UNKNOWN at 0x2000: not measured. REC 0 runnable; REC 1 not (not measured).
    rim = rec(algo, rim, 1, 0x1000, [0x11 * (i + 1) for i in range(8)])
    return rim.hex()


def rems(algo, size):
    # RSI_MEASUREMENT_EXTEND twice from a zero REM: 5 bytes of x3 = 0x0102030405060708, then all
    # 64 bytes of x3..x10 = 0x1111111111111111 * (i + 1). REM = H(REM[..digest len] || data).
    rem = bytes(size)
    first = h(algo, rem + struct.pack("<Q", 0x0102030405060708)[:5])
    x = struct.pack("<8Q", *[(0x1111111111111111 * (i + 1)) & (2**64 - 1) for i in range(8)])
    return first.hex(), h(algo, first + x).hex()


if __name__ == "__main__":
    print("sha256", fixed_realm("sha256", 0))
    print("sha512", fixed_realm("sha512", 1))
    print("rem sha256", *rems("sha256", 32))
    print("rem sha512", *rems("sha512", 64))
