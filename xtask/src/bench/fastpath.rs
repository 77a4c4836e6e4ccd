//! The fast-path check of issue #11: the kernel-style subject's alloc and
//! dealloc entry points in the benchmark binary must contain no locked
//! instruction.
//!
//! `bsa-bench` exports `bsa_kernel_alloc` and `bsa_kernel_dealloc`
//! (`#[inline(never)]`, `#[no_mangle]`), each one `GlobalAlloc` call on the
//! kernel-style subject, and that subject's `GlobalAlloc` impl goes through
//! them, so they are exactly what the benchmarks measure. The allocator's
//! fast path is inlined into them and every slow path is an out-of-line
//! call, so their own bodies ARE the fast paths: disassembled with
//! `objdump -d --no-show-raw-insn --disassemble=<symbol>`, neither may hold
//! a `lock`-prefixed instruction or an `xchg` with a memory operand (an
//! implicitly locked read-modify-write). x86_64 only; elsewhere the check is
//! skipped with a note.

use std::path::Path;
use std::process::Command;

use crate::util::{self, Result};

/// The exported entry points of the kernel-style subject.
pub const ENTRY_POINTS: [&str; 2] = ["bsa_kernel_alloc", "bsa_kernel_dealloc"];

/// What the check found in one entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub symbol: &'static str,
    /// Instructions in the body.
    pub instructions: usize,
    /// The offending disassembly lines, as objdump printed them.
    pub locked: Vec<String>,
    /// Calls or jumps to the `GlobalAlloc` method itself: the fast path was
    /// not inlined, so the body proves nothing.
    pub not_inlined: Vec<String>,
}

/// The outcome of the check, for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not an x86_64 host.
    Skipped(String),
    /// One finding per entry point.
    Checked(Vec<Finding>),
}

impl Outcome {
    /// `Err` listing every offending line if an entry point holds a locked
    /// instruction.
    pub fn verdict(&self, binary: &Path) -> Result {
        let Outcome::Checked(found) = self else {
            return Ok(());
        };
        let outlined: Vec<&Finding> = found.iter().filter(|f| !f.not_inlined.is_empty()).collect();
        if !outlined.is_empty() {
            let mut msg = String::from(
                "the allocator's fast path is not inlined into the kernel-style entry points, \
                 so their bodies prove nothing (make GlobalAlloc::alloc/dealloc #[inline]):",
            );
            for f in outlined {
                msg.push_str(&format!("\n  {}:", f.symbol));
                for l in &f.not_inlined {
                    msg.push_str(&format!("\n    {l}"));
                }
            }
            return Err(msg);
        }
        let bad: Vec<&Finding> = found.iter().filter(|f| !f.locked.is_empty()).collect();
        if bad.is_empty() {
            return Ok(());
        }
        let mut msg = String::from(
            "the kernel-style subject's fast path executes a locked instruction \
             (issue #11: no lock and no atomic read-modify-write on the owner's path):",
        );
        for f in bad {
            msg.push_str(&format!(
                "\n  {} ({} instructions):",
                f.symbol, f.instructions
            ));
            for l in &f.locked {
                msg.push_str(&format!("\n    {l}"));
            }
        }
        msg.push_str(&format!(
            "\n  see: objdump -d --no-show-raw-insn --disassemble={} {}",
            ENTRY_POINTS[0],
            binary.display()
        ));
        Err(msg)
    }
}

/// Disassembles the entry points in `binary` and returns what they hold.
pub fn check(binary: &Path) -> Result<Outcome> {
    if !cfg!(target_arch = "x86_64") {
        return Ok(Outcome::Skipped(format!(
            "skipped: the locked-instruction check knows x86_64 only (this host is {})",
            std::env::consts::ARCH
        )));
    }
    if util::which("objdump").is_none() {
        return Err(
            "objdump is needed for the fast-path check\n  install: apt-get install binutils".into(),
        );
    }
    let mut found = Vec::new();
    for symbol in ENTRY_POINTS {
        let mut cmd = Command::new("objdump");
        cmd.args(["-d", "--no-show-raw-insn", "--demangle"])
            .arg(format!("--disassemble={symbol}"))
            .arg(binary);
        eprintln!("$ {}", util::describe(&cmd));
        let out = cmd
            .output()
            .map_err(|e| format!("could not start objdump: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "objdump failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let body = body(&text, symbol).ok_or_else(|| {
            format!(
                "`{symbol}` is not in {} (is it still exported by bsa-bench, \
                 #[no_mangle] and used by the kernel-style subject?)",
                binary.display()
            )
        })?;
        found.push(Finding {
            symbol,
            instructions: body.len(),
            locked: body.iter().filter(|l| is_locked(l)).cloned().collect(),
            not_inlined: body.into_iter().filter(|l| calls_global_alloc(l)).collect(),
        });
    }
    Ok(Outcome::Checked(found))
}

/// The instruction lines of `symbol`'s body in objdump's output (from its
/// `<symbol>:` header to the next blank line), trimmed.
fn body(disassembly: &str, symbol: &str) -> Option<Vec<String>> {
    let header = format!("<{symbol}>:");
    let mut lines = disassembly.lines();
    lines.find(|l| l.trim_end().ends_with(&header))?;
    Some(
        lines
            .take_while(|l| !l.trim().is_empty())
            .filter(|l| l.contains(":\t"))
            .map(|l| l.trim().to_string())
            .collect(),
    )
}

/// Whether one objdump line (`addr:\tmnemonic operands`, AT&T or Intel
/// syntax) is a locked read-modify-write: a `lock` prefix, or `xchg` with a
/// memory operand (always locked on x86).
fn is_locked(line: &str) -> bool {
    let insn = line.split_once(":\t").map_or(line, |(_, i)| i);
    // A comment (`# 0x1234 <sym>`) is not an operand.
    let insn = insn.split('#').next().unwrap_or("");
    let mut words = insn.split_whitespace();
    let Some(mnemonic) = words.next() else {
        return false;
    };
    if mnemonic == "lock" || mnemonic.starts_with("lock ") {
        return true;
    }
    let operands: String = words.collect();
    mnemonic.starts_with("xchg") && (operands.contains('(') || operands.contains('['))
}

/// Whether one (demangled) objdump line calls or jumps to a
/// `GlobalAlloc::alloc` / `dealloc` implementation.
fn calls_global_alloc(line: &str) -> bool {
    let insn = line.split_once(":\t").map_or(line, |(_, i)| i);
    let is_branch = insn.starts_with("call") || insn.starts_with("jmp");
    is_branch && (insn.contains("GlobalAlloc>::alloc") || insn.contains("GlobalAlloc>::dealloc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "
target/release/deps/peers-1234:     file format elf64-x86-64


Disassembly of section .text:

0000000000051230 <bsa_kernel_alloc>:
   51230:\tpush   %rbx
   51231:\tmov    (%rdi),%rax
   51234:\tlock cmpxchg %rcx,0x40(%rax)
   5123a:\txchg   %ax,%ax
   5123c:\txchg   %rax,0x8(%rbx)
   51240:\tcall   51300 <slow_path>\t# comment (%rip)
   51245:\tret

0000000000051250 <other>:
   51250:\tlock xadd %eax,(%rdi)
";

    #[test]
    fn finds_the_body_and_its_locked_instructions() {
        let b = body(SAMPLE, "bsa_kernel_alloc").unwrap();
        assert_eq!(b.len(), 7);
        let locked: Vec<&String> = b.iter().filter(|l| is_locked(l)).collect();
        assert_eq!(
            locked,
            [
                "51234:\tlock cmpxchg %rcx,0x40(%rax)",
                "5123c:\txchg   %rax,0x8(%rbx)"
            ]
        );
        assert!(body(SAMPLE, "bsa_kernel_dealloc").is_none());
        assert!(body(SAMPLE, "other").unwrap().iter().all(|l| is_locked(l)));
    }

    #[test]
    fn plain_instructions_pass() {
        for l in [
            "1:\tmov    %rax,(%rdi)",
            "2:\txchg   %ax,%ax",
            "3:\tcmpxchg %rcx,(%rdx)",
            "4:\tcall   10 <locker>\t# (%rip)",
            "5:\tjmp    20 <x>",
        ] {
            assert!(!is_locked(l), "{l}");
        }
        assert!(is_locked("6:\txchg   QWORD PTR [rdi],rax"));
        assert!(is_locked("7:\tlock incq 0x10(%rsp)"));
    }

    #[test]
    fn a_tail_call_to_the_allocator_is_not_a_fast_path() {
        let thunk = "1:\tjmp    20 <<bsa_global::GlobalAllocator<P> as core::alloc::global::GlobalAlloc>::alloc>";
        assert!(calls_global_alloc(thunk));
        assert!(!calls_global_alloc(
            "2:\tcall   30 <bsa_global::allocator::slow_alloc>"
        ));
        let f = Outcome::Checked(vec![Finding {
            symbol: "bsa_kernel_alloc",
            instructions: 1,
            locked: vec![],
            not_inlined: vec![thunk.into()],
        }]);
        let e = f.verdict(Path::new("b")).unwrap_err();
        assert!(e.contains("not inlined"), "{e}");
    }

    #[test]
    fn a_clean_body_passes_and_a_locked_one_fails() {
        let clean = Outcome::Checked(vec![Finding {
            symbol: "bsa_kernel_alloc",
            instructions: 20,
            locked: vec![],
            not_inlined: vec![],
        }]);
        assert!(clean.verdict(Path::new("b")).is_ok());
        let locked = Outcome::Checked(vec![Finding {
            symbol: "bsa_kernel_dealloc",
            instructions: 20,
            locked: vec!["1:\tlock cmpxchg %rcx,(%rdx)".into()],
            not_inlined: vec![],
        }]);
        let e = locked.verdict(Path::new("b")).unwrap_err();
        assert!(
            e.contains("bsa_kernel_dealloc") && e.contains("lock cmpxchg"),
            "{e}"
        );
        assert!(Outcome::Skipped("x".into()).verdict(Path::new("b")).is_ok());
    }
}
