//! Small helpers shared by the xtask commands: running processes, finding
//! cargo, and installing rustup targets/components on demand.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// The result type of every command: `Err` carries a message that says what
/// failed and, where possible, what to run or install next.
pub type Result<T = ()> = std::result::Result<T, String>;

/// The workspace root (the parent of the `xtask` directory).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// A `cargo` command for the toolchain that runs xtask (`$CARGO`), started at
/// the workspace root.
pub fn cargo() -> Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root());
    cmd
}

/// A `cargo +<toolchain>` command. `$CARGO` points at one toolchain's cargo,
/// so a different toolchain goes through the rustup proxy instead, and the
/// variables rustup set for the stable toolchain are removed.
pub fn cargo_toolchain(toolchain: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{toolchain}"));
    for var in [
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    cmd.current_dir(root());
    cmd
}

/// Prints the command line, runs it with inherited stdio and fails unless it
/// exits successfully.
pub fn exec(cmd: &mut Command) -> Result {
    let status = status(cmd)?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", describe(cmd)))
    }
}

/// Prints the command line and runs it, returning its exit status.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    eprintln!("$ {}", describe(cmd));
    cmd.status()
        .map_err(|e| format!("could not start `{}`: {e}", describe(cmd)))
}

/// Runs a command quietly and returns its stdout, or `None` if it could not be
/// started or failed.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A printable form of a command line, environment overrides included.
pub fn describe(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!("{}={:?} ", k.to_string_lossy(), v));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Makes sure `rustup` knows `target` for `toolchain`, installing it if needed.
pub fn ensure_target(toolchain: Option<&str>, target: &str) -> Result {
    let mut list = Command::new("rustup");
    if let Some(tc) = toolchain {
        list.arg(format!("+{tc}"));
    }
    list.args(["target", "list", "--installed"]);
    list.env_remove("RUSTUP_TOOLCHAIN");
    let installed = output(&mut list).ok_or_else(|| {
        "rustup is needed to manage targets: install it from rustup.rs, then rerun".to_string()
    })?;
    if installed.lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    eprintln!("xtask: installing rustup target {target} (missing)");
    let mut add = Command::new("rustup");
    add.env_remove("RUSTUP_TOOLCHAIN");
    if let Some(tc) = toolchain {
        add.arg(format!("+{tc}"));
    }
    exec(add.args(["target", "add", target]))
        .map_err(|e| format!("{e}\n  try: rustup target add {target}"))
}

/// Makes sure the nightly toolchain and the given components are installed.
pub fn ensure_nightly(components: &[&str]) -> Result {
    let mut check = Command::new("rustup");
    check.env_remove("RUSTUP_TOOLCHAIN");
    let have_nightly = output(check.args(["run", "nightly", "rustc", "--version"])).is_some();
    if !have_nightly {
        eprintln!("xtask: installing the nightly toolchain (missing; needed for Miri/fuzzing)");
        let mut inst = Command::new("rustup");
        inst.env_remove("RUSTUP_TOOLCHAIN");
        exec(inst.args(["toolchain", "install", "nightly", "--profile", "minimal"]))
            .map_err(|e| format!("{e}\n  try: rustup toolchain install nightly"))?;
    }
    let mut list = Command::new("rustup");
    list.env_remove("RUSTUP_TOOLCHAIN");
    let installed =
        output(list.args(["component", "list", "--installed", "--toolchain", "nightly"]))
            .unwrap_or_default();
    for comp in components {
        let present = installed
            .lines()
            .any(|l| l.trim() == *comp || l.trim().starts_with(&format!("{comp}-")));
        if !present {
            eprintln!("xtask: installing nightly component {comp} (missing)");
            let mut add = Command::new("rustup");
            add.env_remove("RUSTUP_TOOLCHAIN");
            exec(add.args(["component", "add", "--toolchain", "nightly", comp])).map_err(|e| {
                format!("{e}\n  try: rustup component add --toolchain nightly {comp}")
            })?;
        }
    }
    Ok(())
}

/// Looks a program up on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Whether this process runs as root (so `apt-get install` may be used).
pub fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

/// Takes `--name VALUE` out of `args`, if present.
pub fn take_opt(args: &mut Vec<String>, name: &str) -> Result<Option<String>> {
    if let Some(i) = args.iter().position(|a| a == name) {
        if i + 1 >= args.len() {
            return Err(format!("{name} needs a value"));
        }
        let v = args.remove(i + 1);
        args.remove(i);
        return Ok(Some(v));
    }
    Ok(None)
}

/// Takes the flag `name` out of `args`, returning whether it was present.
pub fn take_flag(args: &mut Vec<String>, name: &str) -> bool {
    if let Some(i) = args.iter().position(|a| a == name) {
        args.remove(i);
        true
    } else {
        false
    }
}
