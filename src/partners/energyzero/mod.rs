//! EnergyZero, all of it: the client (partner token, impersonation, GraphQL) and its wire
//! types, the mirror tables, and the mirror job.

mod client;
pub mod mirror_job;
pub mod store;
pub mod wire;

pub use client::{EnergyzeroClient, EnergyzeroError, PAGE_SIZE, PARTNER, UserPass};
pub use wire::{Contract, User};
