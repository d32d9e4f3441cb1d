//! Integration tests of pharos-metrics (one test binary).

mod conformance;
mod promqltest;
