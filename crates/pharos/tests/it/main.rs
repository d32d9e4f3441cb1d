//! End-to-end tests: each spawns the real `pharos` binary on 127.0.0.1 ports chosen by the OS and
//! talks to it as clients do.

// A test binary has no public API.
#![allow(unreachable_pub)]

mod bad_input;
mod canary;
mod cli;
mod conformance;
mod crash;
mod harness;
mod load;
mod loadgen;
mod logs_diff;
mod loki_contract;
mod loki_push;
mod metrics_store;
mod promql_diff;
mod remote_write;
mod shutdown;
mod tempo_contract;
mod traces_diff;
