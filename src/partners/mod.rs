//! One folder per partner, holding all of it: wire types, client, tables, flows and jobs, in
//! that order from the bottom (a part uses only the parts below it; `tests/layers.rs` checks).
//! Nothing here knows the job table, the schedules or the signals, and no partner uses another.

pub mod energyzero;
pub(crate) mod lenient;
pub mod rabobank;
pub mod rabot;
