//! Partner APIs: wire types and typed client calls. Nothing here knows about storage or jobs.

pub mod energyzero;
pub(crate) mod lenient;
pub mod rabobank;
pub mod rabot;
