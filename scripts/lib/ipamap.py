#!/usr/bin/env python3
"""Draw a realm's stage-2 IPA map, as the hypervisor prints it at the end of a run, as an SVG.

Usage: ipamap.py LOG OUT.svg [--title TEXT]

Reads the console LOG, takes its last "map: begin" ... "map: end" group and writes OUT.svg: one
row per 2 MiB block of guest-physical space that overlaps a memslot, one cell per 4 KiB page, a
colour per page state, the RTTs the host holds beside each row, and a legend with counts.
Prints "wrote OUT.svg (N blocks)". A malformed map line is reported as "LOG:LINE: ..." on stderr
and skipped; a log with no map, or a map with no usable block line, is one "FAIL: ..." line on
stderr and exit status 1. Python 3 standard library only.

The lines (issue 10, item 5), GPAs and IPAs in hex:
  map: begin ipa-bits N shared-bit 0xX
  map: slot START END ram|shared      a memslot, [START, END) in GPA space
  map: rtt LEVEL BASE                 an RTT the host holds; BASE is an IPA (either alias)
  map: block GPA <512 chars>          one 2 MiB block, one char per 4 KiB page (STATES below)
  map: end
"""
import re
import sys
from html import escape

PAGE, BLOCK, PAGES = 4096, 2 << 20, 512
MIB = 1 << 20

# char: (meaning, fill, hatch colour or None). Block mappings are hatched and darker than the
# page mappings of the same alias, so a folded block reads as one texture at any size.
STATES = {
    'P': ('private, mapped as a page', '#7ea6e6', None),
    'B': ('private, in a 2 MiB block mapping', '#2f5fb3', '#173a7a'),
    'S': ('shared, mapped as a page', '#f6bf5a', None),
    'T': ('shared, in a block mapping', '#d07d0c', '#8a4f00'),
    'E': ('RIPAS EMPTY, not mapped', '#d68fc0', None),
    '.': ('RIPAS RAM, not yet mapped', '#f2f2f2', None),
    '-': ('not in any memslot', '#c4c4c4', None),
}
SLOT_KINDS = ('ram', 'shared')
RTT_LEVELS = range(-1, 4)  # RMM 1.0 uses 0..3; -1 is LPA2's extra level
MAX_REPORTED = 10
RUN = re.compile(r'(.)\1*')


def fail(msg):
    print(f'FAIL: {msg}', file=sys.stderr)
    sys.exit(1)


def rtt_span(level):
    """Bytes of IPA space one RTT at LEVEL maps (a level-3 table: 2 MiB)."""
    return 1 << (12 + 9 * (4 - level))


def hexnum(s):
    if not s.lower().startswith('0x'):
        raise ValueError(f"'{s}' is not a 0x-prefixed hex number")
    return int(s, 16)


class Map:
    def __init__(self):
        self.begin_line = 0
        self.complete = False
        self.ipa_bits = None
        self.shared_bit = None
        self.slots = []     # (start, end, kind)
        self.rtts = []      # (level, gpa, True: unprotected alias / False: protected / None: both)
        self.blocks = {}    # gpa -> 512 chars
        self.bad = []       # (line number, reason, text)


def parse(path):
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except OSError as e:
        fail(f'cannot read {path}: {e.strerror}')
    lines = raw.decode('utf-8', 'replace').split('\n')  # numbered as grep -n and editors do
    begin = None
    for i, line in enumerate(lines):
        if line.rstrip('\r').startswith('map: begin'):
            begin = i
    if begin is None:
        fail(f"no IPA map in {path} (no 'map: begin' line; scripts/run --map asks the hypervisor for one)")
    m = Map()
    m.begin_line = begin + 1
    for i in range(begin, len(lines)):
        text = lines[i].rstrip('\r')
        if not text.startswith('map: '):
            continue  # other console output between the map's lines
        try:
            if parse_line(m, text.split()[1:]):
                m.complete = True
                break
        except ValueError as e:
            m.bad.append((i + 1, str(e), text))
    return m


def parse_line(m, f):
    """Takes one map line's words after "map:" into M; True at "end"; ValueError if malformed."""
    if not f:
        raise ValueError('empty map line')
    kind, args = f[0], f[1:]
    if kind == 'begin':
        if len(args) % 2:
            raise ValueError('begin takes KEY VALUE pairs')
        kv = dict(zip(args[::2], args[1::2]))
        if 'ipa-bits' in kv:
            m.ipa_bits = int(kv['ipa-bits'])
            if not 32 <= m.ipa_bits <= 52:
                raise ValueError(f'ipa-bits {m.ipa_bits} is outside 32..52')
        if 'shared-bit' in kv:
            m.shared_bit = hexnum(kv['shared-bit'])
        # Either one gives the other: the shared bit is the top bit of the IPA.
        if m.ipa_bits is None and m.shared_bit:
            m.ipa_bits = m.shared_bit.bit_length()
        if m.shared_bit is None and m.ipa_bits:
            m.shared_bit = 1 << (m.ipa_bits - 1)
        if m.ipa_bits is None:
            raise ValueError('begin needs ipa-bits N or shared-bit 0xX')
        if m.shared_bit != 1 << (m.ipa_bits - 1):
            raise ValueError(f'shared-bit {m.shared_bit:#x} is not 1 << (ipa-bits - 1)')
    elif kind == 'end':
        if args:
            raise ValueError('end takes nothing')
        return True
    elif kind == 'slot':
        if len(args) != 3 or args[2] not in SLOT_KINDS:
            raise ValueError('slot takes START END ram|shared')
        start, end = hexnum(args[0]), hexnum(args[1])
        if start >= end or start % PAGE or end % PAGE:
            raise ValueError('slot range is empty or not 4 KiB aligned')
        m.slots.append((start, end, args[2]))
    elif kind == 'rtt':
        if len(args) != 2:
            raise ValueError('rtt takes LEVEL BASE')
        level, base = int(args[0]), hexnum(args[1])
        if level not in RTT_LEVELS:
            raise ValueError(f'RTT level {level} is outside -1..3')
        if base % rtt_span(level):
            raise ValueError(f'a level-{level} RTT base is not aligned to the {mib(rtt_span(level))} it maps')
        if m.shared_bit and rtt_span(level) > m.shared_bit:
            shared = None       # a root-level table: it maps both aliases
        else:
            shared = bool(m.shared_bit and base & m.shared_bit)
        m.rtts.append((level, base & ~m.shared_bit if shared else base, shared))
    elif kind == 'block':
        if len(args) != 2:
            raise ValueError('block takes GPA and 512 page chars')
        gpa, cells = hexnum(args[0]), args[1]
        if gpa % BLOCK:
            raise ValueError('block GPA is not 2 MiB aligned')
        if m.shared_bit and gpa >= m.shared_bit:
            raise ValueError('block GPA has the shared bit set')
        if len(cells) != PAGES:
            raise ValueError(f'block has {len(cells)} page chars, not {PAGES}')
        odd = sorted(set(cells) - set(STATES))
        if odd:
            raise ValueError(f"page char(s) {''.join(odd)!r} not one of {''.join(STATES)}")
        if gpa in m.blocks:
            raise ValueError(f'block {gpa:#x} given twice (the first is kept)')
        m.blocks[gpa] = cells
    else:
        raise ValueError(f"unknown map line '{kind}'")
    return False


def mib(nbytes):
    v = nbytes / MIB
    return f'{v:.0f} MiB' if v == int(v) else f'{v:.2f} MiB'


def render(m, title):
    gpas = sorted(m.blocks)
    n = len(gpas)
    cw = 2                                       # px per page: 1024 px per row
    rh = max(2, min(12, 1100 // n))              # px per row: 1 GiB (512 rows) at 2 px
    gap_h = 12                                   # px for a jump in GPA between rows
    x_lab, x_rtt, x0 = 8, 100, 160               # label, RTT columns, grid
    col_w = 14
    y0 = 84
    rtt_cols = [(False, 2), (False, 3), (True, 2), (True, 3)]

    # Row positions, with a gap strip wherever consecutive rows are not adjacent blocks.
    ys, gaps, y = [], [], y0
    for k, g in enumerate(gpas):
        if k and g != gpas[k - 1] + BLOCK:
            gaps.append((y, gpas[k - 1] + BLOCK, g))
            y += gap_h
        ys.append(y)
        y += rh
    grid_end = y
    W = x0 + PAGES * cw + 16

    out = []
    add = out.append
    add(f'<rect x="{x0 - 1}" y="{y0 - 1}" width="{PAGES * cw + 2}" height="{grid_end - y0 + 2}" fill="none" stroke="#444"/>')

    # Page cells: one run of equal chars is one subpath of its state's <path> (not a <rect> a
    # run: a worst-case 1 GiB map stays under 2 MB), and a row the same as the row just above
    # extends that row's runs down (a folded 1 GiB is one rectangle).
    boxes, above, above_boxes = [], None, []
    for k, g in enumerate(gpas):
        cells, y = m.blocks[g], ys[k]
        if cells == above and above_boxes[0][4] == y:
            for box in above_boxes:
                box[4] = y + rh
            continue
        above = cells
        above_boxes = [[r.start(), r.end(), cells[r.start()], y, y + rh] for r in RUN.finditer(cells)]
        boxes.extend(above_boxes)
    paths = {c: [] for c in STATES}
    for i, j, c, ya, yb in boxes:
        w = (j - i) * cw
        paths[c].append(f'M{x0 + i * cw} {ya}h{w}v{yb - ya}h-{w}z')
    for c, d in paths.items():
        if d:
            add(f'<path class="c{ord(c)}" d="{"".join(d)}"/>')

    # Thin lines between rows while rows are tall enough to tell apart.
    if rh >= 6:
        starts = set(ys)
        for y in ys[1:]:
            if y - rh in starts:
                add(f'<line x1="{x0}" x2="{x0 + PAGES * cw}" y1="{y}" y2="{y}" stroke="#fff" stroke-opacity="0.6"/>')

    # Row labels: a GPA every so often (at least 12 px apart), always at a segment's first row;
    # the tick points at the middle of the row it names.
    every = 1
    while every * rh < 12:
        every *= 2
    last = -100
    seg_starts = {ys[0]} | {gy + gap_h for gy, _, _ in gaps}
    for k, g in enumerate(gpas):
        y = ys[k]
        if (y in seg_starts or (g // BLOCK) % every == 0) and y - last >= 12:
            last = y
            mid = y + rh / 2
            add(f'<line x1="{x_rtt - 6}" x2="{x_rtt - 2}" y1="{mid}" y2="{mid}" stroke="#444"/>')
            add(f'<text x="{x_rtt - 8}" y="{mid + 3.5}" class="lab">{g:#x}</text>')
    for gy, a, b in gaps:
        add(f'<rect x="{x0}" y="{gy + 2}" width="{PAGES * cw}" height="{gap_h - 4}" fill="#fff"/>')
        add(f'<text x="{x0 + PAGES * cw / 2}" y="{gy + gap_h - 3}" class="gap">{a:#x} to {b:#x}: {mib(b - a)} outside every memslot</text>')

    # RTT columns: a level-L table of either alias covers a run of rows.
    held = {}
    for level, gpa, shared in m.rtts:
        if shared is not None:
            held.setdefault((shared, level), []).append(gpa)
    for c, (shared, level) in enumerate(rtt_cols):
        x = x_rtt + c * col_w
        span = rtt_span(level)
        bases = set(held.get((shared, level), []))
        fill = '#d07d0c' if shared else '#2f5fb3'
        run = None
        for k, g in enumerate(gpas):
            on = (g - g % span) in bases
            if on and run and run[1] == ys[k]:
                run[1] = ys[k] + rh
                continue
            if run:
                add(f'<rect x="{x + 1}" y="{run[0]}" width="{col_w - 2}" height="{run[1] - run[0]}" fill="{fill}"/>')
                run = None
            if on:
                run = [ys[k], ys[k] + rh]
        if run:
            add(f'<rect x="{x + 1}" y="{run[0]}" width="{col_w - 2}" height="{run[1] - run[0]}" fill="{fill}"/>')
        add(f'<text x="{x + col_w / 2}" y="{y0 - 22}" class="col">{"S" if shared else "P"}{level}</text>')
    add(f'<text x="{x_rtt + 2 * col_w}" y="{y0 - 34}" class="col">RTTs</text>')
    add(f'<line x1="{x_rtt + 1}" x2="{x_rtt + 4 * col_w - 1}" y1="{y0 - 31}" y2="{y0 - 31}" stroke="#444"/>')

    # Page offsets across the top.
    for q in range(5):
        x = x0 + q * PAGES * cw // 4
        add(f'<line x1="{x}" x2="{x}" y1="{y0 - 6}" y2="{y0 - 1}" stroke="#444"/>')
        add(f'<text x="{x}" y="{y0 - 9}" class="col">+{["0", "512K", "1M", "1.5M", "2M"][q]}</text>')
    add(f'<text x="{x_lab}" y="{y0 - 9}" class="small">GPA (2 MiB a row)</text>')

    # Legend: states with page counts, the RTTs, the memslots, what was skipped.
    counts = {c: 0 for c in STATES}
    for cells in m.blocks.values():
        for c in STATES:
            counts[c] += cells.count(c)
    y = grid_end + 24
    for k, (c, (what, _, _)) in enumerate(STATES.items()):
        x, yy = x_lab + (k % 2) * 560, y + (k // 2) * 18
        add(f'<rect x="{x}" y="{yy - 10}" width="22" height="12" class="c{ord(c)}" stroke="#444" stroke-width="0.5"/>')
        add(f'<text x="{x + 30}" y="{yy}" class="leg" data-state="{escape(c)}" data-pages="{counts[c]}">'
            f'{escape(c)}  {escape(what)}: {counts[c]} pages ({mib(counts[c] * PAGE)})</text>')
    y += ((len(STATES) + 1) // 2) * 18 + 6
    rtt_words = []
    for shared, who in ((None, 'root (both aliases)'), (False, 'protected alias'), (True, 'unprotected alias')):
        per = [f'L{lv} {sum(1 for l2, _, s in m.rtts if l2 == lv and s is shared)}'
               for lv in RTT_LEVELS if any(l2 == lv and s is shared for l2, _, s in m.rtts)]
        if per or shared is not None:
            rtt_words.append(f"{who} {', '.join(per) or 'none'}")
    add(f'<text x="{x_lab}" y="{y}" class="leg">RTTs the host holds ({len(m.rtts)}): {"; ".join(rtt_words)}. '
        f'Columns P2 P3 / S2 S3: a level-2 / level-3 table of that alias maps the row.</text>')
    y += 18
    slots = ' · '.join(f'{kind} [{a:#x}, {b:#x}) {mib(b - a)}' for a, b, kind in m.slots) or 'none listed'
    add(f'<text x="{x_lab}" y="{y}" class="leg">memslots: {escape(slots)}</text>')
    notes = []
    if m.bad:
        notes.append(f'{len(m.bad)} malformed map line(s) skipped (first at log line {m.bad[0][0]})')
    if not m.complete:
        notes.append("no 'map: end': the map may be cut short")
    if notes:
        y += 18
        add(f'<text x="{x_lab}" y="{y}" class="leg" fill="#b00">{escape("; ".join(notes))}</text>')
    H = y + 14

    bits = f'ipa-bits {m.ipa_bits}' if m.ipa_bits else 'ipa-bits unknown'
    sb = f', shared bit {m.shared_bit:#x}' if m.shared_bit else ''
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
            f'font-family="sans-serif" shape-rendering="crispEdges">')
    style = ['text{font-size:12px;fill:#222}', '.lab{font:10px monospace;text-anchor:end}',
             '.col{font-size:9px;text-anchor:middle}', '.small{font-size:10px}', '.leg{font-size:12px}',
             '.gap{font-size:9px;text-anchor:middle;fill:#555}', '.title{font-size:16px;font-weight:bold}']
    defs = []
    for c, (_, fill, hatch) in STATES.items():
        if hatch:
            pid = f'h{ord(c)}'
            defs.append(f'<pattern id="{pid}" width="6" height="6" patternUnits="userSpaceOnUse" '
                        f'patternTransform="rotate(45)"><rect width="6" height="6" fill="{fill}"/>'
                        f'<rect width="2" height="6" fill="{hatch}"/></pattern>')
            style.append(f'.c{ord(c)}{{fill:url(#{pid})}}')
        else:
            style.append(f'.c{ord(c)}{{fill:{fill}}}')
    top = [head, f'<style>{" ".join(style)}</style>', f'<defs>{"".join(defs)}</defs>',
           f'<rect width="{W}" height="{H}" fill="#fff"/>',
           f'<text x="{x_lab}" y="22" class="title">IPA map{": " + escape(title) if title else ""}</text>',
           f'<text x="{x_lab}" y="40" class="small">{bits}{sb}; {n} blocks of 2 MiB '
           f'from {gpas[0]:#x} to {gpas[-1] + BLOCK:#x}, one cell per 4 KiB page</text>']
    return '\n'.join(top + out + ['</svg>', ''])


def main(argv):
    args, title = [], ''
    it = iter(argv)
    for a in it:
        if a == '--title':
            title = next(it, None)
            if title is None:
                fail('--title needs a value')
        elif a in ('-h', '--help'):
            print(__doc__.strip())
            return 0
        else:
            args.append(a)
    if len(args) != 2:
        fail('usage: ipamap.py LOG OUT.svg [--title TEXT]')
    log, out = args
    m = parse(log)
    for line, why, text in m.bad[:MAX_REPORTED]:
        short = text if len(text) <= 72 else text[:69] + '...'
        print(f'{log}:{line}: malformed map line skipped ({why}): {short}', file=sys.stderr)
    if len(m.bad) > MAX_REPORTED:
        print(f'{log}: ... and {len(m.bad) - MAX_REPORTED} more malformed map lines', file=sys.stderr)
    if not m.complete:
        print(f"{log}:{m.begin_line}: the map has no 'map: end' (cut short?); drawing what is there", file=sys.stderr)
    if not m.blocks:
        fail(f'the IPA map at {log}:{m.begin_line} has no usable block line')
    try:
        with open(out, 'w') as f:
            f.write(render(m, title))
    except OSError as e:
        fail(f'cannot write {out}: {e.strerror}')
    print(f"wrote {out} ({len(m.blocks)} block{'' if len(m.blocks) == 1 else 's'})")
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
