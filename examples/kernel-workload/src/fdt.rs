//! A minimal reader for the flattened device tree (FDT/DTB) that the
//! firmware passes to the boot CPU, extracting what the demo kernels need:
//! the RAM ranges, the reserved ranges, the CPU ids, and a few devices
//! (riscv64: timer frequency, test finisher; aarch64: PSCI conduit, GICv2,
//! PL011 UART).
//!
//! Format: a 40-byte big-endian header, a memory reservation block (pairs of
//! u64 address/size ending with 0/0), a structure block of 32-bit tokens
//! (`BEGIN_NODE name`, `PROP len nameoff value`, `END_NODE`, `NOP`, `END`),
//! and a strings block holding property names (Devicetree Specification
//! v0.4, chapter 5). The walk below is bounds-checked safe code over a byte
//! slice; only turning the firmware's pointer into that slice is unsafe.
//!
//! It runs before the allocator exists, so results go into fixed-capacity
//! lists.

use core::fmt;

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
/// How deep nodes may nest (QEMU's `virt` tree is 5 deep).
const MAX_DEPTH: usize = 16;

/// What can be wrong with a device tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    /// The blob does not start with the FDT magic number.
    BadMagic(u32),
    /// The blob is older than version 16 (last compatible version > 17).
    Unsupported(u32),
    /// An offset or length points outside the blob.
    Truncated,
    /// Tokens out of order, or a malformed property value.
    Malformed(&'static str),
    /// More entries than a fixed-capacity list holds.
    TooMany(&'static str),
}

impl fmt::Display for FdtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic(m) => write!(f, "bad magic {m:#x}"),
            Self::Unsupported(v) => write!(f, "unsupported version {v}"),
            Self::Truncated => f.write_str("truncated blob"),
            Self::Malformed(what) => write!(f, "malformed {what}"),
            Self::TooMany(what) => write!(f, "too many {what}"),
        }
    }
}

/// A half-open physical address range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Range {
    /// The range of `size` bytes at `start` (saturating at the top of the
    /// address space).
    pub fn new(start: u64, size: u64) -> Self {
        Self {
            start,
            end: start.saturating_add(size),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no byte.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start, self.end)
    }
}

/// A fixed-capacity list (no allocator at boot).
#[derive(Clone, Copy, Debug)]
pub struct List<T: Copy + Default, const N: usize> {
    items: [T; N],
    len: usize,
}

impl<T: Copy + Default, const N: usize> Default for List<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Default, const N: usize> List<T, N> {
    /// An empty list.
    pub fn new() -> Self {
        Self {
            items: [T::default(); N],
            len: 0,
        }
    }

    /// Appends `item`, or fails with `TooMany(what)` when full.
    pub fn push(&mut self, item: T, what: &'static str) -> Result<(), FdtError> {
        let slot = self
            .items
            .get_mut(self.len)
            .ok_or(FdtError::TooMany(what))?;
        *slot = item;
        self.len += 1;
        Ok(())
    }

    /// The items pushed so far.
    pub fn as_slice(&self) -> &[T] {
        &self.items[..self.len]
    }

    /// The items pushed so far, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.items[..self.len]
    }
}

/// What the kernel learns from the device tree.
#[derive(Debug)]
pub struct BootInfo {
    /// Where the blob itself lives (it must not be handed to the allocator).
    pub blob: Range,
    /// RAM, from the `reg` of the `/memory` nodes.
    pub memory: List<Range, 8>,
    /// The memory reservation block and the `/reserved-memory` children.
    pub reserved: List<Range, 16>,
    /// The `reg` of the enabled `/cpus/cpu@N` nodes: hart ids on RISC-V,
    /// MPIDR affinity values on Arm.
    pub cpus: List<u64, 16>,
    /// `timebase-frequency` of `/cpus` (or of a cpu node): `time` CSR ticks
    /// per second.
    pub timebase_hz: Option<u64>,
    /// The address of a SiFive "test finisher" device (compatible
    /// `sifive,test0`), which QEMU's `virt` machine has: writing it powers
    /// off with an exit code of our choosing.
    pub test_finisher: Option<u64>,
    /// How to call PSCI (the `method` of the `arm,psci*` node).
    pub psci: Option<PsciConduit>,
    /// A GICv2 (`arm,cortex-a15-gic` or `arm,gic-400`): its distributor and
    /// CPU interface.
    pub gic_v2: Option<(Range, Range)>,
    /// An Arm PL011 UART (`arm,pl011`): its registers' base address.
    pub pl011: Option<u64>,
}

/// The instruction that calls PSCI firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciConduit {
    /// `hvc #0` (QEMU `virt` without EL2 emulated: QEMU itself answers).
    Hvc,
    /// `smc #0` (firmware at EL3, or QEMU `virt,virtualization=on`).
    Smc,
}

/// Reads the device tree at `dtb`.
///
/// # Safety
/// - `dtb` must point to a device tree blob whose header and `totalsize`
///   bytes are readable, and nobody may write them during the call.
pub unsafe fn parse(dtb: *const u8) -> Result<BootInfo, FdtError> {
    if dtb.is_null() || dtb.align_offset(4) != 0 {
        return Err(FdtError::Malformed("blob address"));
    }
    // SAFETY: the caller guarantees the header (40 bytes, the first part of
    // `totalsize`) is readable and unchanging during the call.
    let header = unsafe { core::slice::from_raw_parts(dtb, 40) };
    let magic = be32(header, 0)?;
    if magic != FDT_MAGIC {
        return Err(FdtError::BadMagic(magic));
    }
    let total = be32(header, 4)? as usize;
    if total < header.len() {
        return Err(FdtError::Truncated);
    }
    // SAFETY: the caller guarantees `totalsize` bytes from `dtb` are readable
    // and unchanging during the call; the slice does not outlive it.
    let blob = unsafe { core::slice::from_raw_parts(dtb, total) };
    let mut info = parse_blob(blob)?;
    info.blob = Range::new(dtb as u64, total as u64);
    Ok(info)
}

/// One open node during the walk.
#[derive(Clone, Copy, Default)]
struct Node<'a> {
    name: &'a [u8],
    reg: Option<&'a [u8]>,
    device_type: Option<&'a [u8]>,
    compatible: Option<&'a [u8]>,
    status: Option<&'a [u8]>,
    method: Option<&'a [u8]>,
    /// `#address-cells` / `#size-cells` this node sets for its children
    /// (defaults from the spec: 2 and 1).
    address_cells: u32,
    size_cells: u32,
}

fn parse_blob(blob: &[u8]) -> Result<BootInfo, FdtError> {
    let version = be32(blob, 20)?;
    let last_compatible = be32(blob, 24)?;
    if version < 16 || last_compatible > 17 {
        return Err(FdtError::Unsupported(version));
    }
    let structs = sub(blob, be32(blob, 8)?, be32(blob, 36)?)?;
    let strings = sub(blob, be32(blob, 12)?, be32(blob, 32)?)?;
    let mut info = BootInfo {
        blob: Range::default(),
        memory: List::new(),
        reserved: List::new(),
        cpus: List::new(),
        timebase_hz: None,
        test_finisher: None,
        psci: None,
        gic_v2: None,
        pl011: None,
    };

    // Memory reservation block: (address, size) pairs up to a 0/0 entry.
    let mut off = be32(blob, 16)? as usize;
    loop {
        let address = be64(blob, off)?;
        let size = be64(blob, off + 8)?;
        if address == 0 && size == 0 {
            break;
        }
        info.reserved
            .push(Range::new(address, size), "reserved ranges")?;
        off += 16;
    }

    // Structure block.
    let mut stack = [Node::default(); MAX_DEPTH];
    let mut depth = 0usize; // number of open nodes
    let mut pos = 0usize;
    loop {
        let token = be32(structs, pos)?;
        pos += 4;
        match token {
            FDT_BEGIN_NODE => {
                let name = cstr(structs, pos)?;
                pos = align4(pos + name.len() + 1);
                if depth == MAX_DEPTH {
                    return Err(FdtError::TooMany("nested nodes"));
                }
                stack[depth] = Node {
                    name,
                    address_cells: 2,
                    size_cells: 1,
                    ..Node::default()
                };
                depth += 1;
            }
            FDT_PROP => {
                let len = be32(structs, pos)?;
                let name_off = be32(structs, pos + 4)?;
                let value = sub(structs, (pos + 8) as u32, len)?;
                pos = align4(pos + 8 + value.len());
                let name = cstr(strings, name_off as usize)?;
                let in_cpus = is_cpus(&stack[..depth]);
                let node = match depth.checked_sub(1) {
                    Some(i) => &mut stack[i],
                    None => return Err(FdtError::Malformed("property outside a node")),
                };
                match name {
                    b"reg" => node.reg = Some(value),
                    b"device_type" => node.device_type = Some(value),
                    b"status" => node.status = Some(value),
                    b"compatible" => node.compatible = Some(value),
                    b"method" => node.method = Some(value),
                    b"#address-cells" => node.address_cells = be32(value, 0)?,
                    b"#size-cells" => node.size_cells = be32(value, 0)?,
                    b"timebase-frequency" if in_cpus => {
                        info.timebase_hz
                            .get_or_insert(cells(value, value.len() / 4)?);
                    }
                    _ => {}
                }
            }
            FDT_END_NODE => {
                if depth == 0 {
                    return Err(FdtError::Malformed("node nesting"));
                }
                finish_node(&stack[..depth], &mut info)?;
                depth -= 1;
            }
            FDT_NOP => {}
            FDT_END => break,
            _ => return Err(FdtError::Malformed("structure token")),
        }
    }
    if depth != 0 {
        return Err(FdtError::Malformed("node nesting"));
    }
    Ok(info)
}

/// Whether the innermost open node is `/cpus` or one of its children.
fn is_cpus(path: &[Node]) -> bool {
    path.get(1).is_some_and(|n| n.name == b"cpus")
}

/// Records the innermost node of `path` (root first) if it is one we want.
fn finish_node(path: &[Node], info: &mut BootInfo) -> Result<(), FdtError> {
    let [.., parent, node] = path else {
        return Ok(());
    };
    // `compatible` is a list of NUL-terminated strings.
    let compatible = |what: &[u8]| {
        node.compatible
            .is_some_and(|c| c.split(|&b| b == 0).any(|s| s == what))
    };
    let is_psci = node.compatible.is_some_and(|c| c.starts_with(b"arm,psci"));
    if is_psci && info.psci.is_none() {
        info.psci = match node.method {
            Some(b"hvc\0") => Some(PsciConduit::Hvc),
            Some(b"smc\0") => Some(PsciConduit::Smc),
            _ => return Err(FdtError::Malformed("psci method")),
        };
    }
    let Some(reg) = node.reg else { return Ok(()) };
    let unit = node.name.split(|&b| b == b'@').next().unwrap_or(&[]);
    let enabled = node
        .status
        .is_none_or(|s| s.starts_with(b"okay") || s.starts_with(b"ok\0"));
    if compatible(b"sifive,test0") && enabled {
        if let Some(r) = reg_ranges(reg, parent)?.next() {
            info.test_finisher.get_or_insert(r?.start);
        }
    }
    if compatible(b"arm,pl011") && enabled {
        if let Some(r) = reg_ranges(reg, parent)?.next() {
            info.pl011.get_or_insert(r?.start);
        }
    }
    if (compatible(b"arm,cortex-a15-gic") || compatible(b"arm,gic-400")) && enabled {
        let mut regs = reg_ranges(reg, parent)?;
        if let (Some(dist), Some(cpu)) = (regs.next(), regs.next()) {
            info.gic_v2.get_or_insert((dist?, cpu?));
        }
    }
    match path.len() {
        // /memory@...
        2 if unit == b"memory" => {
            for r in reg_ranges(reg, parent)? {
                info.memory.push(r?, "memory ranges")?;
            }
        }
        // /cpus/cpu@N
        3 if path[1].name == b"cpus" && node.device_type == Some(b"cpu\0") && enabled => {
            let id = cells(reg, parent.address_cells as usize)?;
            info.cpus.push(id, "cpus")?;
        }
        // /reserved-memory/<anything>
        3 if path[1].name == b"reserved-memory" => {
            for r in reg_ranges(reg, parent)? {
                info.reserved.push(r?, "reserved ranges")?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Splits a `reg` value into ranges, with the cell sizes the parent declares.
fn reg_ranges<'a>(
    reg: &'a [u8],
    parent: &Node,
) -> Result<impl Iterator<Item = Result<Range, FdtError>> + 'a, FdtError> {
    let (ac, sc) = (parent.address_cells as usize, parent.size_cells as usize);
    let entry = (ac + sc) * 4;
    if ac == 0 || ac > 2 || sc > 2 || reg.len() % entry != 0 {
        return Err(FdtError::Malformed("reg"));
    }
    Ok(reg.chunks_exact(entry).map(move |e| {
        let start = cells(&e[..ac * 4], ac)?;
        let size = cells(&e[ac * 4..], sc)?;
        Ok(Range::new(start, size))
    }))
}

/// Reads `n` (at most 2) big-endian 32-bit cells as one number.
fn cells(value: &[u8], n: usize) -> Result<u64, FdtError> {
    if n > 2 || value.len() < n * 4 {
        return Err(FdtError::Malformed("cells"));
    }
    (0..n).try_fold(0u64, |acc, i| {
        Ok((acc << 32) | u64::from(be32(value, i * 4)?))
    })
}

fn be32(b: &[u8], off: usize) -> Result<u32, FdtError> {
    let bytes = b
        .get(off..off.checked_add(4).ok_or(FdtError::Truncated)?)
        .ok_or(FdtError::Truncated)?;
    Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn be64(b: &[u8], off: usize) -> Result<u64, FdtError> {
    Ok((u64::from(be32(b, off)?) << 32) | u64::from(be32(b, off + 4)?))
}

/// `len` bytes at `off` inside `b`.
fn sub(b: &[u8], off: u32, len: u32) -> Result<&[u8], FdtError> {
    let start = off as usize;
    let end = start.checked_add(len as usize).ok_or(FdtError::Truncated)?;
    b.get(start..end).ok_or(FdtError::Truncated)
}

/// The NUL-terminated string at `off` (without the NUL).
fn cstr(b: &[u8], off: usize) -> Result<&[u8], FdtError> {
    let rest = b.get(off..).ok_or(FdtError::Truncated)?;
    let len = rest
        .iter()
        .position(|&c| c == 0)
        .ok_or(FdtError::Truncated)?;
    Ok(&rest[..len])
}

fn align4(x: usize) -> usize {
    (x + 3) & !3
}
