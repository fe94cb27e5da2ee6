//! Integration tests: one binary (one link step) for all of them.

mod as_of;
mod audit;
mod cli;
#[path = "../common/mod.rs"]
mod common;
mod connect_errors;
mod customer_refresh;
mod daemon;
mod drift;
mod energyzero;
mod energyzero_client;
mod finance_guide;
mod forget;
mod freshness;
mod help;
mod hostile_api;
mod hostile_clients;
mod http_stack;
mod links;
mod mirror_trust;
mod monitoring;
mod operations;
pub mod ops_http;
pub mod rabobank;
mod rabot_consumption;
mod rabot_costs;
mod rabot_mirror;
mod rate_shares;
mod schedule;
mod secrets;
mod settings;
mod snapshots;
mod status;
mod terminal;
mod token_cache;
