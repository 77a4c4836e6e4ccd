//! `cargo xtask qemu`: builds a demo kernel and boots it on QEMU's `virt`
//! machine with 4 CPUs: `examples/riscv-kernel` by default or with
//! `--arch riscv64`, `examples/aarch64-kernel` with `--arch aarch64`.
//! `cargo xtask verify`'s qemu stage runs both ([`run_all`]).
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

/// One demo kernel and how to boot it.
struct Arch {
    /// The `--arch` value.
    name: &'static str,
    /// The kernel's compilation target.
    target: &'static str,
    /// The kernel package directory, relative to the workspace root.
    dir: &'static str,
    /// The kernel binary's name.
    bin: &'static str,
    /// The emulator.
    qemu: &'static str,
    /// The Debian package that ships it.
    package: &'static str,
    /// The Fedora package, for the error message.
    fedora: &'static str,
    /// QEMU's arguments before `-smp`.
    machine: &'static [&'static str],
    /// QEMU's arguments between `-smp N` and `-kernel ELF`.
    rest: &'static [&'static str],
}

/// The kernels, the default first.
const ARCHES: [Arch; 2] = [
    Arch {
        name: "riscv64",
        target: "riscv64gc-unknown-none-elf",
        dir: "examples/riscv-kernel",
        bin: "bsa-riscv-kernel",
        qemu: "qemu-system-riscv64",
        // It ships OpenSBI too, through qemu-system-data.
        package: "qemu-system-misc",
        fedora: "qemu-system-riscv",
        machine: &["-machine", "virt"],
        rest: &["-m", "128M", "-nographic", "-bios", "default"],
    },
    Arch {
        name: "aarch64",
        target: "aarch64-unknown-none",
        dir: "examples/aarch64-kernel",
        bin: "bsa-aarch64-kernel",
        qemu: "qemu-system-aarch64",
        package: "qemu-system-arm",
        fedora: "qemu-system-aarch64",
        // No firmware: QEMU starts the ELF in EL1 and answers PSCI by HVC.
        machine: &["-machine", "virt,gic-version=2", "-cpu", "cortex-a57"],
        // No NIC: the default one wants a ROM file Debian ships separately.
        rest: &["-m", "128M", "-nographic", "-nic", "none"],
    },
];
/// Seconds before QEMU is killed, unless `--timeout` says otherwise.
const DEFAULT_TIMEOUT_SECS: u64 = 120;
/// Harts to boot, unless `--smp` says otherwise (the kernel supports 2..=8).
const DEFAULT_HARTS: u32 = 4;

/// Builds and boots the demo kernel.
///
/// Options: `--arch riscv64|aarch64|all` (default riscv64), `--timeout
/// SECONDS` (default 120, per kernel), `--smp CPUS` (default 4),
/// `--debug` (build the kernel in the dev profile: debug assertions and the
/// allocator's debug checks on, much slower).
pub fn run(mut args: Vec<String>) -> Result {
    let debug = take_flag(&mut args, "--debug");
    let names: Vec<&str> = ARCHES.iter().map(|a| a.name).collect();
    let arches: Vec<&Arch> = match take_opt(&mut args, "--arch")? {
        None => vec![&ARCHES[0]],
        Some(s) if s == "all" => ARCHES.iter().collect(),
        Some(s) => vec![ARCHES.iter().find(|a| a.name == s).ok_or_else(|| {
            format!("--arch wants one of {} or all, got `{s}`", names.join(", "))
        })?],
    };
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
            .ok_or_else(|| format!("--smp wants a CPU count from 2 to 8, got `{s}`"))?,
        None => DEFAULT_HARTS,
    };
    if let Some(a) = args.first() {
        return Err(format!(
            "unexpected argument `{a}` (usage: cargo xtask qemu [--arch riscv64|aarch64|all] \
             [--timeout SECONDS] [--smp CPUS] [--debug])"
        ));
    }

    // The toolchain running xtask (rustup sets RUSTUP_TOOLCHAIN for it) is the
    // one that builds the kernel, so that is the one that needs the target.
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").ok();
    for arch in arches {
        util::ensure_target(toolchain.as_deref(), arch.target)?;
        let qemu = find_qemu(arch)?;
        let kernel = build_kernel(arch, debug)?;
        boot(arch, &qemu, &kernel, harts, Duration::from_secs(timeout))
            .map_err(|e| format!("{} kernel: {e}", arch.name))?;
    }
    Ok(())
}

/// `cargo xtask verify`'s qemu stage: every kernel, with the defaults.
pub fn run_all() -> Result {
    run(vec!["--arch".into(), "all".into()])
}

/// Finds QEMU on `PATH`, installing Debian's package when running as root.
fn find_qemu(arch: &Arch) -> Result<PathBuf> {
    let (qemu, package, fedora) = (arch.qemu, arch.package, arch.fedora);
    if let Some(path) = which(qemu) {
        return Ok(path);
    }
    let manual = format!(
        "{qemu} not found on PATH. Install it, then rerun `cargo xtask qemu --arch {}`:\n  \
         Debian/Ubuntu: sudo apt-get install {package}\n  \
         Fedora:        sudo dnf install {fedora}\n  \
         macOS:         brew install qemu",
        arch.name
    );
    if !util::is_root() || which("apt-get").is_none() {
        return Err(manual);
    }
    eprintln!(
        "xtask qemu: {qemu} is missing; installing Debian's {package} with apt-get \
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
        package,
    ]))
    .map_err(|e| format!("{e}\n{manual}"))?;
    which(qemu).ok_or_else(|| format!("{package} was installed but {qemu} is still not on PATH"))
}

/// Builds the kernel (release, or dev with `debug`) and returns the path of
/// its ELF file.
///
/// The kernel is its own workspace with its own target directory, which is
/// passed explicitly so that a `CARGO_TARGET_DIR` in the environment does not
/// move the ELF file elsewhere.
fn build_kernel(arch: &Arch, debug: bool) -> Result<PathBuf> {
    let dir = util::root().join(arch.dir);
    let target_dir = dir.join("target");
    let profile = if debug { "debug" } else { "release" };
    let mut cmd = cargo();
    cmd.args(["build", "--target", arch.target]);
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
    let elf = target_dir.join(arch.target).join(profile).join(arch.bin);
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
fn boot(arch: &Arch, qemu: &Path, kernel: &Path, harts: u32, timeout: Duration) -> Result {
    let mut cmd = Command::new(qemu);
    cmd.args(arch.machine)
        .arg("-smp")
        .arg(harts.to_string())
        .args(arch.rest)
        .arg("-kernel")
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
    eprintln!(
        "xtask qemu: PASS ({}, {harts} CPUs, {secs:.1} s)",
        arch.name
    );
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
