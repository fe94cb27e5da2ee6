//! What finance needs beyond the mirror itself: month-end snapshots ([`snapshot_job`]), the
//! retention of history nobody returns any more ([`retention`]), and the erasure of a customer
//! a partner no longer returns ([`forget`]). The as-of functions they read are SQL, in
//! `migrations/20261214000001_as_of.sql`.

pub mod forget;
pub mod retention;
pub mod snapshot_job;
