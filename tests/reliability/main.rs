//! The reliability suite: long fault campaigns against the real binary, a real PostgreSQL and
//! the sandbox, kept out of the main integration binary so their bound is their own. The
//! README's "Reliability" section quotes the figures these tests print.

#[path = "../common/mod.rs"]
mod common;

mod mirror_faults;
