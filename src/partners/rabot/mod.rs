//! RABOT Partner API, all of it: the client and its wire types, the mirror tables (customers,
//! contracts, contract costs and consumption) and the customer links they are stored in, the linking flow, and
//! the jobs that run them.

mod client;
pub mod consumption_job;
pub mod consumption_store;
pub mod cost_store;
pub mod cost_wire;
pub mod costs_job;
pub mod customer_refresh_job;
pub mod link_store;
pub mod links;
pub mod metrics_wire;
pub mod mirror_job;
pub mod store;
pub mod wire;

pub use client::{MetricsQuery, PARTNER, Page, RabotClient, RabotError};
pub use cost_wire::{ContractCosts, CostComponent, CostPeriod};
pub use metrics_wire::{ContractMetrics, Interval, MetricPeriod};
pub use wire::{Contract, Customer, LinkRequest};
