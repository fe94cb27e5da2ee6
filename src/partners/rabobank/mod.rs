//! Rabobank, all of it: the OAuth client and its wire types, the stored grants, the consent
//! and refresh flows over them, and the rotation job.

mod client;
pub mod grant_store;
pub mod grants;
pub mod rotation_job;
pub mod wire;

pub use client::{ConsentError, PARTNER, REFRESH_LIMIT, RabobankClient, TokenError, TokenGrant};
pub use wire::{ConsentDetails, RabobankTokenFields};
