//! Integration tests of the LogQL parser: a corpus of realistic queries, printing round trips,
//! and garbage that must give an error, never a panic.

mod corpus;
mod garbage;
