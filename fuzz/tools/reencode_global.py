#!/usr/bin/env python3
"""Re-encode `global` fuzz inputs when variants are appended to its `Action`.

arbitrary's derive picks an enum variant as `(u32 tag * variant_count) >> 32`,
so appending a variant to `Action` in fuzz_targets/global.rs remaps every
tag and the committed seeds (regressions included) would decode to other
actions. This rewrites only each action's 4-byte tag so that every input
decodes to the same actions under the new count:

    python3 fuzz/tools/reencode_global.py NEW_COUNT fuzz/corpus/global/seed-*

`ACTIONS` below must describe `Action` *before* the change (then append
the new variants here too). Check the result: `cargo +nightly fuzz fmt
--fuzz-dir fuzz global <file>` must print the same before and after.
"""
import struct
import sys

SIZE = 'Size'  # the `Size` enum: u32 tag (3 variants); Small/Large carry a u16

# (variant, field sizes in bytes or SIZE), in declaration order.
ACTIONS = [
    ('SetCpu', [1]),
    ('Alloc', [SIZE, 1, 1]),
    ('Dealloc', [2]),
    ('Realloc', [2, SIZE]),
    ('AllocPages', [1, 1, 1]),
    ('DeallocPages', [2]),
    ('AddRegion', []),
    ('Trim', []),
    ('Drain', []),
    ('DeallocStale', [1]),
    ('DeallocWrongLayout', [2, SIZE, 1]),
    ('DeallocInterior', [2, 2, 1]),
    ('DeallocForeign', [4, 2]),
    ('DeallocPagesBad', [2, 1]),
    ('CrossDoubleFree', [2, 1, 1]),
    ('RemoteTwice', [2, 1]),
    ('AllocBadCpu', [1]),
    ('Check', [2]),
    ('BadPages', [1]),
    ('ReallocStale', [1, SIZE]),
]
HEADER = 7  # cpus u8, arena_extra u8, misalign u16, low_split u16, grow bool


def tag_for(idx, count):
    """The smallest u32 tag that selects variant `idx` of `count`."""
    return -(-(idx << 32) // count)


def reencode(data, new_count):
    out = bytearray(data[:HEADER])
    pos = HEADER

    def take(n):
        nonlocal pos
        # Past the end, arbitrary reads zeros (`fill_buffer`): write them.
        b = bytes(data[pos:pos + n]).ljust(n, b'\0')
        pos += n
        return b

    while pos < len(data):
        idx = (struct.unpack('<I', take(4))[0] * len(ACTIONS)) >> 32
        out += struct.pack('<I', tag_for(idx, new_count))
        for f in ACTIONS[idx][1]:
            if f == SIZE:
                tag = take(4)
                out += tag
                if (struct.unpack('<I', tag)[0] * 3) >> 32 != 0:
                    out += take(2)
            else:
                out += take(f)
    return bytes(out)


def main():
    new_count = int(sys.argv[1])
    assert new_count >= len(ACTIONS), 'variants may only be appended'
    for path in sys.argv[2:]:
        with open(path, 'rb') as fh:
            data = fh.read()
        if len(data) > HEADER:
            with open(path, 'wb') as fh:
                fh.write(reencode(data, new_count))


if __name__ == '__main__':
    main()
