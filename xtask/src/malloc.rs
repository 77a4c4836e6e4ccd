//! `cargo xtask malloc`: bsa-malloc (crates/malloc) under real processes.
//!
//! Builds the preloadable library (release), builds and runs the C test
//! program with it preloaded, then runs unmodified system programs (python3,
//! sort, gzip/gunzip, git) with and without it and compares their output.
//! Every preloaded process checks the allocator at exit
//! (`BSA_MALLOC_CHECK=1`) and appends a line to a log, which must show at
//! least one checked process per run and no failure. `--bench` instead
//! times the python workload, the sort and a producer/consumer program on
//! glibc, bsa and (built from the `libmimalloc-sys` sources in the cargo
//! registry, if present) mimalloc.

use crate::util::{self, cargo, exec, root, take_flag, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Usage details for `cargo xtask malloc --help`.
pub const DETAILS: &str = "\
Linux only. Builds crates/malloc (release), compiles crates/malloc/tests/c
with the system `cc`, runs the C test with LD_PRELOAD=libbsa_malloc.so, then
python3, sort, gzip/gunzip and git (those installed) with and without the
library, comparing output. Every preloaded process checks the allocator's
consistency at exit. Scratch files go to target/malloc/.

options:
  --bench   time the python workload, sort and a producer/consumer program
            on glibc, bsa and mimalloc instead (wall time, peak RSS)
";

/// The python workload: dicts, lists and strings from several threads,
/// printing only values that do not depend on the allocator.
const PYTHON_WORKLOAD: &str = r#"
import hashlib, json, random, threading
from collections import Counter

def work(seed, out):
    r = random.Random(seed)
    d = {}
    for i in range(120000):
        k = "k%d_%d" % (r.randrange(40000), i % 7)
        d[k] = [r.random() for _ in range(r.randrange(6))] + ["x" * (i % 40)]
        if i % 3 == 0:
            d.pop(next(iter(d)))
    words = " ".join("w%d" % r.randrange(5000) for _ in range(100000)).split()
    c = Counter(words)
    s = json.dumps(sorted(d.items())[:3000]) + json.dumps(c.most_common(50))
    out[seed] = "%s %d %d" % (hashlib.sha256(s.encode()).hexdigest(), len(d), len(c))

out = {}
threads = [threading.Thread(target=work, args=(s, out)) for s in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for k in sorted(out):
    print(k, out[k])
big = [str(i) * 3 for i in range(300000)]
print(len("".join(big)), sum(map(len, big)))
"#;

/// The git session: a scratch repository with fixed identities and dates,
/// so its output (hashes included) is the same on every run.
const GIT_SESSION: &str = r#"
set -e
rm -rf "$1"; mkdir -p "$1"; cd "$1"
export GIT_AUTHOR_NAME=bsa GIT_AUTHOR_EMAIL=bsa@example.invalid
export GIT_COMMITTER_NAME=bsa GIT_COMMITTER_EMAIL=bsa@example.invalid
export GIT_AUTHOR_DATE='2020-01-01T00:00:00Z' GIT_COMMITTER_DATE='2020-01-01T00:00:00Z'
git -c init.defaultBranch=main init -q .
i=0
while [ $i -lt 40 ]; do
  seq $i 3 20000 > "f$((i % 7)).txt"
  git add -A
  git commit -q -m "commit $i"
  i=$((i + 1))
done
git log --format='%H %s' | head -5
git diff HEAD~10 --stat | tail -1
git gc -q
git fsck --no-progress 2>&1
git count-objects -v | grep -v size
"#;

pub fn run(mut args: Vec<String>) -> Result {
    let bench = take_flag(&mut args, "--bench");
    if let Some(a) = args.first() {
        return Err(format!(
            "unexpected argument `{a}` (see `cargo xtask malloc --help`)"
        ));
    }
    if !cfg!(target_os = "linux") {
        eprintln!("xtask malloc: skipped (bsa-malloc is Linux-only)");
        return Ok(());
    }
    let lib = build_library()?;
    let dir = scratch()?;
    if bench {
        return run_bench(&lib, &dir);
    }
    let test = compile_c(&dir, "malloc_test")?;
    run_c_test(&lib, &dir, &test)?;
    let checked = run_programs(&lib, &dir)?;
    eprintln!("xtask malloc: every output matched; {checked} preloaded processes checked at exit");
    Ok(())
}

/// `cargo build --release -p bsa-malloc`; the path of the shared library.
fn build_library() -> Result<PathBuf> {
    exec(cargo().args(["build", "--release", "-p", "bsa-malloc"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let lib = target.join("release/libbsa_malloc.so");
    lib.exists()
        .then_some(lib)
        .ok_or_else(|| "libbsa_malloc.so missing after the build".to_string())
}

fn scratch() -> Result<PathBuf> {
    let dir = root().join("target/malloc");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// Compiles `crates/malloc/tests/c/<name>.c` with the system C compiler.
fn compile_c(dir: &Path, name: &str) -> Result<PathBuf> {
    if util::which("cc").is_none() {
        return Err("no C compiler `cc` (install gcc or clang)".into());
    }
    let src = root().join(format!("crates/malloc/tests/c/{name}.c"));
    let out = dir.join(name);
    exec(
        Command::new("cc")
            .args(["-O2", "-g", "-fno-builtin", "-Wall", "-Wextra", "-Werror"])
            .args([
                "-Wno-alloc-size-larger-than",
                "-Wno-free-nonheap-object",
                "-pthread",
                "-o",
            ])
            .arg(&out)
            .arg(&src),
    )?;
    Ok(out)
}

/// A command under `timeout` (so a hang fails the stage instead of CI).
fn timed(program: impl AsRef<std::ffi::OsStr>, secs: u32) -> Command {
    let mut c = Command::new("timeout");
    c.arg(secs.to_string()).arg(program);
    c
}

/// Sets the preload and the exit check (logging to a fresh `log`).
fn preload(cmd: &mut Command, lib: &Path, log: &Path) {
    let _ = fs::remove_file(log);
    cmd.env("LD_PRELOAD", lib)
        .env("BSA_MALLOC_CHECK", "1")
        .env("BSA_MALLOC_CHECK_LOG", log);
}

/// How many processes the exit-check log shows, failing on a failed check
/// or on none at all.
fn checked(log: &Path, what: &str) -> Result<usize> {
    let text = fs::read_to_string(log).unwrap_or_default();
    let n = text.lines().count();
    if text.contains("FAILED") {
        return Err(format!("{what}: an exit consistency check failed:\n{text}"));
    }
    if n == 0 {
        return Err(format!("{what}: no process ran the exit consistency check"));
    }
    Ok(n)
}

fn capture(cmd: &mut Command) -> Result<Output> {
    eprintln!("$ {}", util::describe(cmd));
    cmd.output()
        .map_err(|e| format!("could not start `{}`: {e}", util::describe(cmd)))
}

fn run_c_test(lib: &Path, dir: &Path, test: &Path) -> Result {
    let log = dir.join("check-c.log");
    let mut cmd = timed(test, 300);
    preload(&mut cmd, lib, &log);
    cmd.env("BSA_TEST_BSA", "1");
    let out = capture(&mut cmd)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stdout}");
    if !out.status.success() || !stdout.contains("all ok") {
        return Err(format!("C test failed ({}):\n{stderr}", out.status));
    }
    // The misuse section must have been reported, once per bad call.
    for needle in [
        "pointer not managed",
        "double free",
        "does not start a live allocation",
    ] {
        if !stderr.contains(needle) {
            return Err(format!("C test: no `{needle}` report on stderr:\n{stderr}"));
        }
    }
    let n = checked(&log, "C test")?;
    eprintln!("C test passed; {n} processes checked at exit (the test and its forked children)");
    Ok(())
}

/// A deterministic text file of `lines` random lines for sort and gzip.
fn generate_text(path: &Path, lines: usize) -> Result {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut text = String::with_capacity(lines * 24);
    for _ in 0..lines {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let len = 4 + (s % 36) as usize;
        let mut x = s;
        for _ in 0..len {
            text.push(char::from(b'a' + (x % 26) as u8));
            x = x.rotate_right(5).wrapping_mul(0x2545_F491_4F6C_DD1D);
        }
        text.push('\n');
    }
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// One unmodified program: a name and how to start it.
struct Program {
    name: &'static str,
    cmd: fn(&Path) -> Command,
}

fn programs(dir: &Path) -> Result<Vec<Program>> {
    let text = dir.join("words.txt");
    if !text.exists() {
        generate_text(&text, 1_000_000)?;
    }
    fs::write(dir.join("workload.py"), PYTHON_WORKLOAD).map_err(|e| e.to_string())?;
    fs::write(dir.join("git-session.sh"), GIT_SESSION).map_err(|e| e.to_string())?;
    let mut v = Vec::new();
    if util::which("python3").is_some() {
        v.push(Program {
            name: "python3",
            cmd: |d| {
                // The distribution's interpreter when there is one (not a
                // version manager's shim script), so the timing is python's.
                let py = if Path::new("/usr/bin/python3").exists() {
                    "/usr/bin/python3"
                } else {
                    "python3"
                };
                let mut c = timed(py, 600);
                c.arg(d.join("workload.py"));
                c
            },
        });
    }
    if util::which("sort").is_some() {
        v.push(Program {
            name: "sort",
            cmd: |d| {
                let mut c = timed("sort", 600);
                c.env("LC_ALL", "C").arg(d.join("words.txt"));
                c
            },
        });
    }
    if util::which("gzip").is_some() && util::which("gunzip").is_some() {
        v.push(Program {
            name: "gzip",
            cmd: |d| {
                let mut c = timed("sh", 600);
                c.args([
                    "-c",
                    "gzip -c \"$1\" > \"$1.gz\" && gunzip -c \"$1.gz\"",
                    "sh",
                ])
                .arg(d.join("words.txt"));
                c
            },
        });
    }
    if util::which("git").is_some() {
        v.push(Program {
            name: "git",
            cmd: |d| {
                let mut c = timed("sh", 600);
                c.arg(d.join("git-session.sh")).arg(d.join("git-scratch"));
                c
            },
        });
    }
    Ok(v)
}

/// Runs each program without and with the library; outputs must match.
fn run_programs(lib: &Path, dir: &Path) -> Result<usize> {
    let mut total = 0;
    for p in programs(dir)? {
        let plain = capture(&mut (p.cmd)(dir))?;
        if !plain.status.success() {
            return Err(format!(
                "{} failed without bsa ({}): {}",
                p.name,
                plain.status,
                String::from_utf8_lossy(&plain.stderr)
            ));
        }
        let log = dir.join(format!("check-{}.log", p.name));
        let mut cmd = (p.cmd)(dir);
        preload(&mut cmd, lib, &log);
        let bsa = capture(&mut cmd)?;
        if !bsa.status.success() {
            return Err(format!(
                "{} failed on bsa ({}): {}",
                p.name,
                bsa.status,
                String::from_utf8_lossy(&bsa.stderr)
            ));
        }
        if plain.stdout != bsa.stdout {
            let a = dir.join(format!("{}.glibc.out", p.name));
            let b = dir.join(format!("{}.bsa.out", p.name));
            let _ = fs::write(&a, &plain.stdout);
            let _ = fs::write(&b, &bsa.stdout);
            return Err(format!(
                "{}: output differs on bsa (compare {} and {})",
                p.name,
                a.display(),
                b.display()
            ));
        }
        if bsa.stderr.windows(11).any(|w| w == b"bsa-malloc:") {
            return Err(format!(
                "{}: bsa reported misuse: {}",
                p.name,
                String::from_utf8_lossy(&bsa.stderr)
            ));
        }
        let n = checked(&log, p.name)?;
        eprintln!(
            "{}: same output ({} bytes) with and without bsa; {n} processes checked",
            p.name,
            bsa.stdout.len()
        );
        total += n;
    }
    Ok(total)
}

/// mimalloc's preloadable library, built from the `libmimalloc-sys`
/// sources already in the cargo registry (a dependency of crates/bench).
fn build_mimalloc(dir: &Path) -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let mut src = None;
    for index in fs::read_dir(home.join("registry/src")).ok()?.flatten() {
        for krate in fs::read_dir(index.path()).ok()?.flatten() {
            let name = krate.file_name().to_string_lossy().into_owned();
            let c = krate.path().join("c_src/mimalloc/v2");
            if name.starts_with("libmimalloc-sys-") && c.join("src/static.c").exists() {
                src = Some(c);
            }
        }
    }
    let src = src?;
    let out = dir.join("libmimalloc.so");
    let ok = Command::new("cc")
        .args(["-O2", "-DNDEBUG", "-shared", "-fPIC", "-pthread", "-I"])
        .arg(src.join("include"))
        .arg(src.join("src/static.c"))
        .arg("-o")
        .arg(&out)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(out)
}

/// Wall seconds and peak RSS (KiB) of a command, from `/usr/bin/time`.
fn measure(mut cmd: Command, preload: Option<&Path>) -> Result<(f64, u64)> {
    let mut t = Command::new("/usr/bin/time");
    t.args(["-f", "BSA_TIME %e %M"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            t.env(k, v);
        }
    }
    if let Some(lib) = preload {
        t.env("LD_PRELOAD", lib);
    }
    cmd = t;
    let out = cmd.output().map_err(|e| format!("/usr/bin/time: {e}"))?;
    if !out.status.success() {
        return Err(format!("{} failed: {}", util::describe(&cmd), out.status));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("BSA_TIME "))
        .ok_or("no timing from /usr/bin/time")?;
    let mut f = line.split_whitespace();
    let secs = f.next().and_then(|x| x.parse().ok()).unwrap_or(0.0);
    let kib = f.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    Ok((secs, kib))
}

fn run_bench(lib: &Path, dir: &Path) -> Result {
    if !Path::new("/usr/bin/time").exists() {
        return Err("--bench needs /usr/bin/time (apt-get install time)".into());
    }
    let pc = compile_c(dir, "bench_pc")?;
    let mut subjects: Vec<(&str, Option<PathBuf>)> =
        vec![("glibc", None), ("bsa", Some(lib.to_path_buf()))];
    match build_mimalloc(dir) {
        Some(m) => subjects.push(("mimalloc", Some(m))),
        None => eprintln!("mimalloc: sources not found in the cargo registry; skipped"),
    }
    let progs = programs(dir)?;
    println!("| workload | allocator | wall s | peak RSS MiB | time / glibc | RSS / glibc |");
    println!("|---|---|---|---|---|---|");
    for p in progs
        .iter()
        .filter(|p| p.name == "python3" || p.name == "sort")
    {
        let mut base = None;
        for (name, pre) in &subjects {
            let (s, kib) = measure((p.cmd)(dir), pre.as_deref())?;
            let (bs, bk) = *base.get_or_insert((s, kib));
            println!(
                "| {} | {name} | {s:.2} | {:.1} | {:.2} | {:.2} |",
                p.name,
                kib as f64 / 1024.0,
                s / bs,
                kib as f64 / bk as f64
            );
        }
    }
    println!("\n| producer/consumer 64 B | allocator | ns/object |");
    println!("|---|---|---|");
    for (name, pre) in &subjects {
        let mut c = Command::new(&pc);
        if let Some(l) = pre {
            c.env("LD_PRELOAD", l);
        }
        let out = c.output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        println!(
            "| 10M objects | {name} | {} |",
            text.trim().trim_end_matches(" ns/object")
        );
    }
    Ok(())
}
