//! partner-sync: mirrors energy-partner data into PostgreSQL and keeps the OAuth grants behind
//! it alive. See ARCHITECTURE.md for the map of modules and how data flows between them.

pub mod app;
pub mod cli;
pub mod cron;
pub mod crypto;
#[cfg(feature = "sandbox")]
pub mod demo;
pub mod events;
pub mod finance;
pub mod freshness;
pub mod http;
pub mod job;
pub mod jobs;
pub mod metrics;
pub mod partners;
pub mod resync;
/// The simulated partners (the `partner-sync-sandbox` crate), for `sandbox` and `demo`.
#[cfg(feature = "sandbox")]
pub use partner_sync_sandbox as sandbox;
pub mod server;
pub mod settings;
pub mod status;
pub mod store;
pub mod telemetry;
