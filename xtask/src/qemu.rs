//! `cargo xtask qemu`: builds the riscv64 demo kernel (`examples/riscv-kernel`)
//! and boots it on QEMU's `virt` machine with 4 harts.
//!
//! The kernel prints its progress on the SBI console, ends with a line that
//! reads exactly `PASS`, and powers the machine off with a success status;
//! any failure prints a `FAIL: ...` line and powers off with a failure status.
//! This command streams the console, enforces a timeout (killing QEMU), and
//! succeeds only if the kernel printed `PASS`, printed no `FAIL` line, and
//! QEMU exited with status 0.

use crate::util::{self, cargo, exec, take_flag, take_opt, which, Result};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The kernel's compilation target.
const TARGET: &str = "riscv64gc-unknown-none-elf";
/// The kernel package directory, relative to the workspace root.
const KERNEL_DIR: &str = "examples/riscv-kernel";
/// The kernel binary's name.
const KERNEL_BIN: &str = "bsa-riscv-kernel";
/// The emulator.
const QEMU: &str = "qemu-system-riscv64";
/// The Debian package that ships it (and, through qemu-system-data, OpenSBI).
const QEMU_PACKAGE: &str = "qemu-system-misc";
/// Seconds before QEMU is killed, unless `--timeout` says otherwise.
const DEFAULT_TIMEOUT_SECS: u64 = 120;
/// Harts to boot, unless `--smp` says otherwise (the kernel supports 2..=8).
const DEFAULT_HARTS: u32 = 4;

/// Builds and boots the demo kernel.
///
/// Options: `--timeout SECONDS` (default 120), `--smp HARTS` (default 4),
/// `--debug` (build the kernel in the dev profile: debug assertions and the
/// allocator's debug checks on, much slower).
pub fn run(mut args: Vec<String>) -> Result {
    let debug = take_flag(&mut args, "--debug");
    let timeout =
        match take_opt(&mut args, "--timeout")? {
            Some(s) => s.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| {
                format!("--timeout wants a positive number of seconds, got `{s}`")
            })?,
            None => DEFAULT_TIMEOUT_SECS,
        };
    let harts = match take_opt(&mut args, "--smp")? {
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (2..=8).contains(n))
            .ok_or_else(|| format!("--smp wants a hart count from 2 to 8, got `{s}`"))?,
        None => DEFAULT_HARTS,
    };
    if let Some(a) = args.first() {
        return Err(format!(
            "unexpected argument `{a}` (usage: cargo xtask qemu [--timeout SECONDS] [--smp HARTS] [--debug])"
        ));
    }

    // The toolchain running xtask (rustup sets RUSTUP_TOOLCHAIN for it) is the
    // one that builds the kernel, so that is the one that needs the target.
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").ok();
    util::ensure_target(toolchain.as_deref(), TARGET)?;
    let qemu = find_qemu()?;
    let kernel = build_kernel(debug)?;
    boot(&qemu, &kernel, harts, Duration::from_secs(timeout))
}

/// Finds QEMU on `PATH`, installing Debian's package when running as root.
fn find_qemu() -> Result<PathBuf> {
    if let Some(path) = which(QEMU) {
        return Ok(path);
    }
    let manual = format!(
        "{QEMU} not found on PATH. Install it, then rerun `cargo xtask qemu`:\n  \
         Debian/Ubuntu: sudo apt-get install {QEMU_PACKAGE}\n  \
         Fedora:        sudo dnf install qemu-system-riscv\n  \
         macOS:         brew install qemu"
    );
    if !util::is_root() || which("apt-get").is_none() {
        return Err(manual);
    }
    eprintln!(
        "xtask qemu: {QEMU} is missing; installing Debian's {QEMU_PACKAGE} with apt-get \
         (running as root)"
    );
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    exec(&mut apt(&["update"])).map_err(|e| format!("{e}\n{manual}"))?;
    exec(&mut apt(&[
        "install",
        "-y",
        "--no-install-recommends",
        QEMU_PACKAGE,
    ]))
    .map_err(|e| format!("{e}\n{manual}"))?;
    which(QEMU)
        .ok_or_else(|| format!("{QEMU_PACKAGE} was installed but {QEMU} is still not on PATH"))
}

/// Builds the kernel (release, or dev with `debug`) and returns the path of
/// its ELF file.
///
/// The kernel is its own workspace with its own target directory, which is
/// passed explicitly so that a `CARGO_TARGET_DIR` in the environment does not
/// move the ELF file elsewhere.
fn build_kernel(debug: bool) -> Result<PathBuf> {
    let dir = util::root().join(KERNEL_DIR);
    let target_dir = dir.join("target");
    let profile = if debug { "debug" } else { "release" };
    let mut cmd = cargo();
    cmd.args(["build", "--target", TARGET]);
    if !debug {
        cmd.arg("--release");
    }
    exec(
        cmd.arg("--manifest-path")
            .arg(dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir),
    )
    .map_err(|e| format!("building the demo kernel failed: {e}"))?;
    let elf = target_dir.join(TARGET).join(profile).join(KERNEL_BIN);
    if elf.is_file() {
        Ok(elf)
    } else {
        Err(format!(
            "the kernel build did not produce {}",
            elf.display()
        ))
    }
}

/// What the console scan found.
#[derive(Default)]
struct Verdict {
    /// A line that reads exactly `PASS`.
    passed: bool,
    /// The first line starting with `FAIL`, and up to 3 lines after it.
    failure: Option<String>,
    /// The last lines, for the error message.
    tail: Vec<String>,
}

/// Boots the kernel and judges the run.
fn boot(qemu: &Path, kernel: &Path, harts: u32, timeout: Duration) -> Result {
    let mut cmd = Command::new(qemu);
    cmd.args(["-machine", "virt", "-smp"])
        .arg(harts.to_string())
        .args(["-m", "128M", "-nographic", "-bios", "default", "-kernel"])
        .arg(kernel)
        // No keyboard input: QEMU then leaves the terminal's mode alone, and
        // nobody can type into the monitor by accident.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("$ {}", util::describe(&cmd));
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", qemu.display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let scanner = thread::spawn(move || scan(stdout));

    let status = wait_with_timeout(&mut child, timeout);
    // After QEMU exits (or is killed) its stdout closes and the scanner ends.
    let verdict = scanner
        .join()
        .map_err(|_| "the console reader panicked".to_string())?;
    let secs = start.elapsed().as_secs_f64();
    let context = || {
        if verdict.tail.is_empty() {
            "\n  (the kernel printed nothing)".to_string()
        } else {
            format!(
                "\n  last console lines:\n    {}",
                verdict.tail.join("\n    ")
            )
        }
    };

    let status = match status? {
        Some(status) => status,
        None => {
            return Err(format!(
                "QEMU timed out after {} s and was killed{}\n  \
                 (a hang usually means a deadlock; raise the limit with --timeout SECONDS)",
                timeout.as_secs(),
                context()
            ))
        }
    };
    if let Some(line) = verdict.failure {
        return Err(format!(
            "the kernel reported a failure after {secs:.1} s: {line}\n  QEMU exited with {status}"
        ));
    }
    if !status.success() {
        return Err(format!(
            "QEMU exited with {status} after {secs:.1} s{}",
            context()
        ));
    }
    if !verdict.passed {
        return Err(format!(
            "QEMU exited successfully after {secs:.1} s but the kernel never printed PASS{}",
            context()
        ));
    }
    eprintln!("xtask qemu: PASS ({harts} harts, {secs:.1} s)");
    Ok(())
}

/// Waits for QEMU to exit; kills it when `timeout` elapses (`Ok(None)`).
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) if Instant::now() >= deadline => {
                // The process may exit between the check and the kill; either
                // way it is gone afterwards.
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("waiting for QEMU failed: {e}"));
            }
        }
    }
}

/// Copies the console to our stdout as it arrives and judges it line by line.
fn scan(mut console: impl Read) -> Verdict {
    const TAIL: usize = 15;
    let mut verdict = Verdict::default();
    let mut line = Vec::new();
    let mut buf = [0u8; 4096];
    let mut out = io::stdout();
    let judge = |line: &[u8], verdict: &mut Verdict| {
        let text = String::from_utf8_lossy(line);
        // OpenSBI ends lines with "\r\n"; QEMU may add escape sequences.
        let text = text.trim_end_matches(['\r', '\n']).to_string();
        if text.trim() == "PASS" {
            verdict.passed = true;
        }
        match &mut verdict.failure {
            None if text.starts_with("FAIL") => verdict.failure = Some(text.clone()),
            // Quote a few lines after the first FAIL too (a multi-line
            // message, or what the other harts said).
            Some(failure) if failure.lines().count() < 4 => {
                failure.push_str("\n  ");
                failure.push_str(&text);
            }
            _ => {}
        }
        if verdict.tail.len() == TAIL {
            verdict.tail.remove(0);
        }
        verdict.tail.push(text);
    };
    loop {
        let n = match console.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        // Stream as it arrives, partial lines included; a closed stdout
        // (e.g. `| head`) must not stop the scan.
        let _ = out.write_all(&buf[..n]);
        let _ = out.flush();
        for &b in &buf[..n] {
            if b == b'\n' {
                judge(&line, &mut verdict);
                line.clear();
            } else {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        judge(&line, &mut verdict);
    }
    verdict
}
