//! Shared workloads for the bsa benchmarks (filled in by issue 6).
