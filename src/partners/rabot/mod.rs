//! RABOT Partner API, all of it: the client and its wire types, the mirror tables and the
//! customer links they are stored in, the linking flow, and the jobs that run them.

mod client;
pub mod customer_refresh_job;
pub mod link_store;
pub mod links;
pub mod mirror_job;
pub mod store;
pub mod wire;

pub use client::{PARTNER, Page, RabotClient, RabotError};
pub use wire::{Contract, Customer, LinkRequest};
