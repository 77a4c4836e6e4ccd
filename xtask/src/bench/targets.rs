//! The targets of the benchmark issues, in ONE table ([`TARGETS`]): what is
//! measured, and its limit on the criterion times and/or on the callgrind
//! instruction counts. The report's target table is this list evaluated
//! once against the times and once against the instruction counts.

use std::fmt;

use super::parse::{Efficiency, Instructions, Results};

/// A bound on a measured value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    AtMost(f64),
    AtLeast(f64),
}

impl Limit {
    fn met(self, measured: f64) -> bool {
        match self {
            Limit::AtMost(l) => measured <= l,
            Limit::AtLeast(l) => measured >= l,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::AtMost(l) => write!(f, "≤ {l}"),
            Limit::AtLeast(l) => write!(f, "≥ {l}"),
        }
    }
}

/// What a target measures.
#[derive(Clone, Copy, Debug)]
pub enum Measure {
    /// Per-operation figure of `subject` divided by that of `reference`, in
    /// `workload`. `per` names the operation when it is not the workload's
    /// usual one (`growth-init` counts per page of the heap).
    Ratio {
        workload: &'static str,
        subject: &'static str,
        reference: &'static str,
        per: Option<&'static str>,
    },
    /// The per-operation figure of `subject` in `workload` itself.
    PerOp {
        workload: &'static str,
        subject: &'static str,
    },
    /// Requested live bytes / arena bytes at the first failure (times only).
    Efficiency { subject: &'static str },
}

/// One target: what is measured, and its limit on the times and on the
/// instruction counts (`None`: not a target there).
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub measure: Measure,
    pub time: Option<Limit>,
    pub instructions: Option<Limit>,
}

/// Which measurements a target is evaluated on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Time,
    Instructions,
}

const fn ratio(workload: &'static str, subject: &'static str, reference: &'static str) -> Target {
    Target {
        measure: Measure::Ratio {
            workload,
            subject,
            reference,
            per: None,
        },
        time: None,
        instructions: None,
    }
}

impl Target {
    const fn time(mut self, l: Limit) -> Self {
        self.time = Some(l);
        self
    }

    const fn instructions(mut self, l: Limit) -> Self {
        self.instructions = Some(l);
        self
    }

    /// Limits on both the times and the instruction counts.
    const fn both(self, l: Limit) -> Self {
        self.time(l).instructions(l)
    }

    const fn per(mut self, what: &'static str) -> Self {
        if let Measure::Ratio { per, .. } = &mut self.measure {
            *per = Some(what);
        }
        self
    }
}

use Limit::{AtLeast, AtMost};

/// The growth workloads: a 4 GiB heap against a 64 MiB one, at most 1.2.
const GROWTH: Limit = AtMost(1.2);

/// Every target, in report order. The `bsa` rows are the benchmark issue's;
/// the `bsa-kernel` rows (the kernel-style subject, whose platform promises
/// exclusive CPU indices) and the absolute instruction counts are the
/// per-CPU issue's (#11).
pub const TARGETS: &[Target] = &[
    ratio("pair-64B", "bsa", "mimalloc")
        .time(AtMost(1.5))
        .instructions(AtMost(1.2)),
    ratio("pair-64B", "bsa", "talc").time(AtMost(0.8)),
    ratio("pair-64B", "bsa", "lla").time(AtMost(0.8)),
    ratio("pair-64B", "bsa", "buddy").time(AtMost(0.8)),
    ratio("batch-lifo", "bsa", "mimalloc").both(AtMost(1.5)),
    ratio("batch-lifo", "bsa", "talc").both(AtMost(0.6)),
    ratio("batch-random", "bsa", "mimalloc").both(AtMost(1.5)),
    ratio("batch-random", "bsa", "talc").both(AtMost(0.6)),
    ratio("random-actions", "bsa", "mimalloc").both(AtMost(1.5)),
    ratio("random-actions", "bsa", "talc").both(AtMost(0.6)),
    ratio("pages-1", "bsa", "buddy-frame").both(AtMost(0.1)),
    ratio("pages-8", "bsa", "buddy-frame").both(AtMost(0.1)),
    ratio("cross-thread", "bsa", "mimalloc").time(AtMost(1.25)),
    Target {
        measure: Measure::Efficiency { subject: "bsa" },
        time: Some(AtLeast(0.88)),
        instructions: None,
    },
    ratio("growth-page1", "4GiB", "64MiB").both(GROWTH),
    ratio("growth-mixed", "4GiB", "64MiB").both(GROWTH),
    ratio("growth-init", "4GiB", "64MiB")
        .per("page")
        .both(GROWTH),
    // Issue #11: the kernel-style subject.
    ratio("pair-64B", "bsa-kernel", "mimalloc").time(AtMost(1.5)),
    ratio("pair-64B", "bsa-kernel", "talc").time(AtMost(0.6)),
    ratio("pair-64B", "bsa-kernel", "lla").time(AtMost(0.6)),
    ratio("pair-64B", "bsa-kernel", "buddy").time(AtMost(0.6)),
    ratio("batch-lifo", "bsa-kernel", "mimalloc").time(AtMost(1.3)),
    ratio("batch-random", "bsa-kernel", "mimalloc").time(AtMost(1.3)),
    ratio("random-actions", "bsa-kernel", "mimalloc").time(AtMost(1.5)),
    Target {
        measure: Measure::PerOp {
            workload: "pair-64B",
            subject: "bsa-kernel",
        },
        time: None,
        instructions: Some(AtMost(100.0)),
    },
    Target {
        measure: Measure::PerOp {
            workload: "pair-64B",
            subject: "bsa",
        },
        time: None,
        instructions: Some(AtMost(130.0)),
    },
];

/// One evaluated row of the report's target table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub what: String,
    pub limit: Limit,
    pub measured: Option<f64>,
}

impl Row {
    /// `met`, `MISSED` or `not measured`.
    pub fn verdict(&self) -> &'static str {
        match self.measured {
            Some(m) if self.limit.met(m) => "met",
            Some(_) => "MISSED",
            None => "not measured",
        }
    }
}

impl Target {
    /// The row's label for `source`.
    fn label(&self, source: Source) -> String {
        match (self.measure, source) {
            (
                Measure::Ratio {
                    workload,
                    subject,
                    reference,
                    per,
                },
                Source::Time,
            ) => {
                let per = per.map_or(String::new(), |p| format!("time per {p}, "));
                format!("{workload}: {per}{subject} / {reference}")
            }
            (
                Measure::Ratio {
                    workload,
                    subject,
                    reference,
                    per,
                },
                Source::Instructions,
            ) => match pair_size(workload) {
                Some(size) => format!("instructions per {size} pair: {subject} / {reference}"),
                None => {
                    let per = per.map_or(String::new(), |p| format!(" per {p}"));
                    format!("{workload} (instructions{per}): {subject} / {reference}")
                }
            },
            (Measure::PerOp { workload, subject }, Source::Time) => {
                format!("{workload}: time per operation of {subject} (ns)")
            }
            (Measure::PerOp { workload, subject }, Source::Instructions) => {
                match pair_size(workload) {
                    Some(size) => format!("instructions per {size} pair: {subject}"),
                    None => format!("{workload} (instructions per operation): {subject}"),
                }
            }
            (Measure::Efficiency { subject }, _) => format!("heap efficiency: {subject}"),
        }
    }
}

/// `64 B` for `pair-64B`.
fn pair_size(workload: &str) -> Option<String> {
    let n = workload.strip_prefix("pair-")?.strip_suffix('B')?;
    Some(format!("{n} B"))
}

/// The per-operation figures a target is evaluated on.
pub trait Figures {
    fn per_op(&self, workload: &str, subject: &str) -> Option<f64>;
}

impl Figures for Results {
    fn per_op(&self, workload: &str, subject: &str) -> Option<f64> {
        self.get(workload)?.get(subject).map(|e| e.per_op())
    }
}

impl Figures for [Instructions] {
    fn per_op(&self, workload: &str, subject: &str) -> Option<f64> {
        self.iter()
            .find(|i| i.workload == workload && i.subject == subject)
            .map(|i| i.per_op)
    }
}

fn measure<F: Figures + ?Sized>(m: Measure, figures: &F, efficiency: &[Efficiency]) -> Option<f64> {
    match m {
        Measure::Ratio {
            workload,
            subject,
            reference,
            ..
        } => Some(figures.per_op(workload, subject)? / figures.per_op(workload, reference)?),
        Measure::PerOp { workload, subject } => figures.per_op(workload, subject),
        Measure::Efficiency { subject } => efficiency
            .iter()
            .find(|e| e.subject == subject)
            .map(|e| e.ratio),
    }
}

/// [`TARGETS`] evaluated: first every time target, then (when counted)
/// every instruction target.
pub fn evaluate(
    results: &Results,
    efficiency: &[Efficiency],
    instructions: Option<&[Instructions]>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for t in TARGETS {
        if let Some(limit) = t.time {
            rows.push(Row {
                what: t.label(Source::Time),
                limit,
                measured: measure(t.measure, results, efficiency),
            });
        }
    }
    if let Some(ins) = instructions {
        for t in TARGETS {
            if let Some(limit) = t.instructions {
                rows.push(Row {
                    what: t.label(Source::Instructions),
                    limit,
                    measured: measure(t.measure, ins, efficiency),
                });
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::super::parse::Estimate;
    use super::*;

    fn results(rows: &[(&str, &str, f64)]) -> Results {
        let mut r = Results::new();
        for &(g, f, ns) in rows {
            r.entry(g.into()).or_default().insert(
                f.into(),
                Estimate {
                    median_ns: ns,
                    ops: 1,
                },
            );
        }
        r
    }

    #[test]
    fn labels_match_the_report_rows() {
        let rows = evaluate(&Results::new(), &[], Some(&[]));
        let labels: Vec<&str> = rows.iter().map(|r| r.what.as_str()).collect();
        for want in [
            "pair-64B: bsa / mimalloc",
            "pair-64B: bsa / talc",
            "batch-lifo: bsa / talc",
            "cross-thread: bsa / mimalloc",
            "heap efficiency: bsa",
            "growth-init: time per page, 4GiB / 64MiB",
            "instructions per 64 B pair: bsa / mimalloc",
            "pages-8 (instructions): bsa / buddy-frame",
            "growth-init (instructions per page): 4GiB / 64MiB",
            "growth-mixed (instructions): 4GiB / 64MiB",
            "instructions per 64 B pair: bsa-kernel",
        ] {
            assert!(labels.contains(&want), "missing {want:?} in {labels:#?}");
        }
        // Every label is unique, and every time row precedes every
        // instruction row.
        let mut sorted = labels.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), labels.len());
        let first_ins = labels
            .iter()
            .position(|l| l.contains("instructions"))
            .unwrap();
        assert!(labels[first_ins..]
            .iter()
            .all(|l| l.contains("instructions")));
    }

    #[test]
    fn verdicts_follow_the_limits() {
        let r = results(&[
            ("pair-64B", "bsa", 10.0),
            ("pair-64B", "mimalloc", 5.0),
            ("pair-64B", "talc", 20.0),
        ]);
        let eff = [Efficiency {
            subject: "bsa".into(),
            ratio: 0.9,
            live: 9,
            arena: 10,
            allocs: 1,
            frees: 0,
        }];
        let rows = evaluate(&r, &eff, None);
        let get = |w: &str| rows.iter().find(|r| r.what == w).unwrap();
        assert_eq!(get("pair-64B: bsa / mimalloc").measured, Some(2.0));
        assert_eq!(get("pair-64B: bsa / mimalloc").verdict(), "MISSED");
        assert_eq!(get("pair-64B: bsa / talc").verdict(), "met");
        assert_eq!(get("pair-64B: bsa / lla").verdict(), "not measured");
        assert_eq!(get("heap efficiency: bsa").verdict(), "met");
        assert!(rows.iter().all(|r| !r.what.contains("instructions")));
    }

    #[test]
    fn instruction_targets_use_the_counts() {
        let ins = |subject, per_op| Instructions {
            workload: "pair-64B",
            subject,
            per_op,
            ir_n: 0,
            ir_0: 0,
            n: 1,
            ops: 1,
        };
        let counted = [
            ins("bsa", 120.0),
            ins("mimalloc", 100.0),
            ins("bsa-kernel", 101.0),
        ];
        let rows = evaluate(&Results::new(), &[], Some(&counted));
        let get = |w: &str| rows.iter().find(|r| r.what == w).unwrap();
        assert_eq!(
            get("instructions per 64 B pair: bsa / mimalloc").measured,
            Some(1.2)
        );
        assert_eq!(
            get("instructions per 64 B pair: bsa / mimalloc").verdict(),
            "met"
        );
        assert_eq!(get("instructions per 64 B pair: bsa").verdict(), "met");
        assert_eq!(
            get("instructions per 64 B pair: bsa-kernel").verdict(),
            "MISSED"
        );
    }
}
