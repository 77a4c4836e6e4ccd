//! Reading what the benchmark programs wrote: criterion's JSON files, the
//! efficiency probe's tab-separated lines and callgrind's totals.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use super::json::Json;
use crate::util::Result;

/// One criterion result.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// Median time of one iteration, in ns.
    pub median_ns: f64,
    /// Operations per iteration (criterion `Elements` throughput; 1 if none).
    pub ops: u64,
}

impl Estimate {
    /// Median time per operation, in ns.
    pub fn per_op(&self) -> f64 {
        self.median_ns / self.ops as f64
    }
}

/// group → function → estimate.
pub type Results = BTreeMap<String, BTreeMap<String, Estimate>>;

/// One line of the efficiency probe.
#[derive(Clone, Debug, PartialEq)]
pub struct Efficiency {
    pub subject: String,
    pub ratio: f64,
    pub live: u64,
    pub arena: u64,
    pub allocs: u64,
    pub frees: u64,
}

/// Where bsa's arena bytes are at its first failure in the efficiency
/// workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Breakdown {
    pub failed_size: u64,
    /// (what, bytes), summing to the arena.
    pub parts: Vec<(&'static str, u64)>,
}

/// Labels of the `breakdown` line's byte fields, in order.
const BREAKDOWN_PARTS: [&str; 6] = [
    "requested by live objects",
    "size-class rounding of live objects",
    "free slots in slabs",
    "slab headers, bitmaps and tails",
    "free pages in the buddy",
    "metadata and per-CPU area",
];

/// Instructions per operation of one subject in one workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Instructions {
    pub workload: &'static str,
    pub subject: &'static str,
    /// (Ir(N) − Ir(0)) / (N · ops).
    pub per_op: f64,
    pub ir_n: u64,
    pub ir_0: u64,
    /// Iterations N.
    pub n: u64,
    /// Operations per iteration.
    pub ops: u64,
}

/// Parses the efficiency probe's output (see `crates/bench/src/bin/efficiency.rs`).
pub fn efficiency(out: &str) -> Result<(Vec<Efficiency>, Option<Breakdown>)> {
    let mut v = Vec::new();
    let mut breakdown = None;
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() == 3 + BREAKDOWN_PARTS.len() && f[0] == "breakdown" {
            let nums: std::result::Result<Vec<u64>, _> = f[2..].iter().map(|x| x.parse()).collect();
            let nums = nums.map_err(|e| format!("{line:?}: {e}"))?;
            breakdown = Some(Breakdown {
                failed_size: nums[0],
                parts: BREAKDOWN_PARTS
                    .iter()
                    .copied()
                    .zip(nums[1..].iter().copied())
                    .collect(),
            });
        }
        if f.len() == 7 && f[0] == "efficiency" {
            let num = |i: usize| f[i].parse::<u64>().map_err(|e| format!("{line:?}: {e}"));
            v.push(Efficiency {
                subject: f[1].to_string(),
                ratio: f[2].parse().map_err(|e| format!("{line:?}: {e}"))?,
                live: num(3)?,
                arena: num(4)?,
                allocs: num(5)?,
                frees: num(6)?,
            });
        }
    }
    if v.is_empty() {
        return Err(format!("the efficiency probe printed no result:\n{out}"));
    }
    Ok((v, breakdown))
}

/// The instruction count from callgrind's `==pid== Collected : N` line.
pub fn callgrind_collected(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|l| {
        let rest = l.split("Collected :").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The operations per iteration a driver printed (`ops_per_iteration N`;
/// 1 if it printed none).
pub fn ops_per_iteration(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("ops_per_iteration ")?.trim().parse().ok())
        .unwrap_or(1)
}

/// Reads every `new/benchmark.json` + `new/estimates.json` pair under
/// `dir` written after `since`.
pub fn criterion(dir: &Path, since: SystemTime) -> Result<Results> {
    let mut results = Results::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let in_new = p.parent().and_then(Path::file_name) == Some("new".as_ref());
            if !in_new || p.file_name() != Some("benchmark.json".as_ref()) {
                continue;
            }
            let fresh = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since);
            if !fresh {
                continue;
            }
            let est_path = p.with_file_name("estimates.json");
            let (group, function, estimate) =
                criterion_pair(&read_json(&p)?, &read_json(&est_path)?)
                    .map_err(|e| format!("{}: {e}", p.parent().unwrap_or(&p).display()))?;
            results.entry(group).or_default().insert(function, estimate);
        }
    }
    Ok(results)
}

fn read_json(p: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    Json::parse(&text).map_err(|e| format!("{}: {e}", p.display()))
}

/// (group, function, estimate) from one benchmark's `benchmark.json` and
/// `estimates.json`.
pub fn criterion_pair(bench: &Json, est: &Json) -> Result<(String, String, Estimate)> {
    let field = |k: &str| {
        bench
            .get(k)
            .and_then(Json::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("benchmark.json has no string `{k}`"))
    };
    let group = field("group_id")?;
    let function = field("function_id")?;
    // `throughput` is null or one of {"Elements": n}, {"Bytes": n}, ...:
    // only element counts are operations.
    let ops = match bench.get("throughput") {
        None | Some(Json::Null) => 1,
        Some(t) => match t.get("Elements").and_then(Json::as_f64) {
            Some(n) if n >= 1.0 && n.fract() == 0.0 => n as u64,
            _ => return Err(format!("unexpected throughput {t:?} (want Elements ≥ 1)")),
        },
    };
    let median_ns = est
        .at(&["median", "point_estimate"])
        .and_then(Json::as_f64)
        .ok_or("estimates.json has no median.point_estimate")?;
    Ok((group, function, Estimate { median_ns, ops }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_criterion_json() {
        let bench = Json::parse(
            r#"{"group_id":"pair-64B","function_id":"bsa","value_str":null,
            "throughput":{"Elements":1000},"full_id":"pair-64B/bsa"}"#,
        )
        .unwrap();
        let est = Json::parse(
            r#"{"mean":{"confidence_interval":{"confidence_level":0.95,
            "lower_bound":1.0,"upper_bound":2.0},"point_estimate":1.5,"standard_error":0.1},
            "median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":3.0,
            "upper_bound":4.0},"point_estimate":3.25e1,"standard_error":0.2}}"#,
        )
        .unwrap();
        let (g, f, e) = criterion_pair(&bench, &est).unwrap();
        assert_eq!((g.as_str(), f.as_str()), ("pair-64B", "bsa"));
        assert_eq!(
            e,
            Estimate {
                median_ns: 32.5,
                ops: 1000
            }
        );
        let no_tp = Json::parse(r#"{"group_id":"g","function_id":"f","throughput":null}"#).unwrap();
        assert_eq!(criterion_pair(&no_tp, &est).unwrap().2.ops, 1);
        let bytes =
            Json::parse(r#"{"group_id":"g","function_id":"f","throughput":{"Bytes":8}}"#).unwrap();
        assert!(criterion_pair(&bytes, &est).is_err());
        assert!(criterion_pair(&bench, &Json::parse("{}").unwrap()).is_err());
    }

    #[test]
    fn parses_callgrind_totals() {
        let err = "==12== Events    : Ir\n==12== Collected : 1234567\n==12==\n";
        assert_eq!(callgrind_collected(err), Some(1_234_567));
        assert_eq!(callgrind_collected("nothing"), None);
        assert_eq!(ops_per_iteration("x\nops_per_iteration 1000\n"), 1000);
        assert_eq!(ops_per_iteration(""), 1);
    }

    #[test]
    fn parses_efficiency_lines() {
        let out = "efficiency\tbsa\t0.9012\t100\t111\t5\t1\n\
                   breakdown\tbsa\t64\t1\t2\t3\t4\t5\t6\n";
        let (e, b) = efficiency(out).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].subject, "bsa");
        let b = b.unwrap();
        assert_eq!(b.failed_size, 64);
        assert_eq!(b.parts.iter().map(|p| p.1).sum::<u64>(), 21);
        assert!(efficiency("nothing").is_err());
    }
}
