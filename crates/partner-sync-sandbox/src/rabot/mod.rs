//! The RABOT Partner API as RABOT's partner documentation describes it: the OAuth
//! client-credentials token endpoint, the customer list and a customer's contracts, over data
//! generated from a seed.
//!
//! Every JSON shape here is written by hand from that document; nothing is borrowed from the
//! client in src/partners, so the integration tests check the client against the docs.
//!
//! `api.rs` answers the token endpoint and the lists, `costs.rs` a contract's price components,
//! `metrics.rs` its consumption,
//! `linking.rs` the customer links, and `data.rs` generates the customers; this file holds the
//! partner's state.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use serde_json::Value;

mod api;
mod costs;
mod data;
mod linking;
mod metrics;

#[cfg(test)]
mod tests;

pub use costs::documented_components as documented_cost_components;
pub use linking::{CUSTOMER_PASSWORD, LinkableCustomer};
pub use metrics::UNREADABLE_MOMENT as UNREADABLE_METRICS_MOMENT;

use crate::gate::PartnerPaths;
use crate::oauth::TokenStore;
use crate::{Sandbox, SandboxOptions, Shared, lock};
use api::Page;

pub(super) const TOKEN_PATH: &str = "/rabot/connect/token";
pub(super) const API_BASE_PATH: &str = "/rabot/partner/v1";
const PREFIX: &str = "/rabot";

/// Customer ordinals are printed with 7 digits and external ids with 6; beyond this the
/// generated identifiers would stop being unique.
pub(super) const MAX_CUSTOMERS: usize = 1_000_000;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(TOKEN_PATH, post(api::issue_token))
        .route("/rabot/partner/v1/customers", get(api::list_customers))
        .route(
            "/rabot/partner/v1/customers/{customer_number}/contracts",
            get(api::list_contracts),
        )
        .route(
            "/rabot/partner/v1/customers/{customer_number}/contracts/{contract_number}/costs",
            get(costs::contract_costs),
        )
        .route(
            "/rabot/partner/v1/customers/{customer_number}/contracts/{contract_number}/metrics",
            get(metrics::contract_metrics),
        )
        .merge(linking::routes())
}

/// Where this partner's paths lie, for the gate.
pub(crate) const PATHS: PartnerPaths = PartnerPaths {
    prefix: PREFIX,
    token: TOKEN_PATH,
    api_base: API_BASE_PATH,
    reject: api::rejection,
    count_request: None,
};

fn has_scope(scopes: &[String], wanted: &str) -> bool {
    scopes.iter().any(|scope| scope == wanted)
}

/// The simulated RABOT: its one API client, the tokens it issued, and its customers.
pub(super) struct Rabot {
    client_id: String,
    client_secret: String,
    granted_scopes: Vec<String>,
    token_lifetime: Duration,
    tokens: TokenStore,
    customers: Mutex<Customers>,
    /// Customer links waiting for the customer, by the `state` in their authorization URL.
    links: Mutex<HashMap<String, linking::PendingLink>>,
    /// Contract costs answer `data` as the latest period alone instead of the array.
    costs_as_object: AtomicBool,
    /// The knobs of the contract metrics answers.
    metrics: metrics::MetricsKnobs,
}

enum ContractPage {
    Found(Vec<Value>, bool),
    UnknownCustomer,
    NotPermitted,
}

struct Customers {
    list: Vec<Customer>,
    /// Position in `list` by customer number, rebuilt when a customer is removed.
    index: HashMap<String, usize>,
    /// Customers of the platform the partner cannot see (no relation to it) until they link.
    hidden: Vec<Customer>,
}

struct Customer {
    number: String,
    /// The customer object exactly as the API serves it.
    record: Value,
    contracts: Vec<Value>,
    /// Contract costs a test edited, by contract number; the others are generated when asked.
    costs: HashMap<String, Vec<Value>>,
}

impl Customer {
    fn external_id(&self) -> Option<&str> {
        self.record["externalIdentifier"].as_str()
    }

    /// The docs let a partner without a role read the contracts of a customer who linked it.
    fn is_linked(&self) -> bool {
        self.record["relations"]
            .as_array()
            .is_some_and(|relations| relations.iter().any(|relation| relation == "Linked"))
    }

    fn contract_position(&self, contract_number: &str) -> Option<usize> {
        self.contracts
            .iter()
            .position(|contract| contract["contractNumber"].as_str() == Some(contract_number))
    }
}

impl Customers {
    fn new((list, hidden): (Vec<Customer>, Vec<Customer>)) -> Self {
        let mut customers = Self {
            list,
            index: HashMap::new(),
            hidden,
        };
        customers.reindex();
        customers
    }

    fn reindex(&mut self) {
        self.index = self
            .list
            .iter()
            .enumerate()
            .map(|(position, customer)| (customer.number.clone(), position))
            .collect();
    }

    fn get(&self, number: &str) -> Option<&Customer> {
        self.list.get(*self.index.get(number)?)
    }

    fn get_mut(&mut self, number: &str) -> Option<&mut Customer> {
        self.list.get_mut(*self.index.get(number)?)
    }
}

impl Rabot {
    pub(super) fn generate(options: &SandboxOptions) -> Self {
        Self {
            client_id: options.client_id.clone(),
            client_secret: options.client_secret.clone(),
            granted_scopes: options.granted_scopes.clone(),
            token_lifetime: options.token_lifetime,
            tokens: TokenStore::default(),
            customers: Mutex::new(Customers::new(data::generate_customers(options))),
            links: Mutex::new(HashMap::new()),
            costs_as_object: AtomicBool::new(false),
            metrics: metrics::MetricsKnobs::default(),
        }
    }

    /// The scopes a token request gets: all granted ones when it names none, else exactly the
    /// named ones, or `Err(scope)` for the first scope this client was not granted.
    fn scopes_for(&self, requested: Option<&str>) -> Result<Vec<String>, String> {
        let mut scopes: Vec<String> = Vec::new();
        for scope in requested.unwrap_or_default().split(' ') {
            if scope.is_empty() || has_scope(&scopes, scope) {
                continue;
            }
            if !has_scope(&self.granted_scopes, scope) {
                return Err(scope.to_owned());
            }
            scopes.push(scope.to_owned());
        }
        if scopes.is_empty() {
            scopes.clone_from(&self.granted_scopes);
        }
        Ok(scopes)
    }

    /// The page's customers, whether more follow, and how many match in all.
    fn customer_page(&self, external_id: Option<&str>, page: Page) -> (Vec<Value>, bool, usize) {
        let customers = lock(&self.customers);
        let matching: Vec<&Customer> = customers
            .list
            .iter()
            .filter(|customer| {
                external_id.is_none_or(|wanted| customer.external_id() == Some(wanted))
            })
            .collect();
        let (items, has_more_items) = page.cut(&matching);
        let records = items
            .into_iter()
            .map(|customer| customer.record.clone())
            .collect();
        (records, has_more_items, matching.len())
    }

    fn contract_page(&self, customer_number: &str, has_role: bool, page: Page) -> ContractPage {
        let customers = lock(&self.customers);
        match customers.get(customer_number) {
            // Without a role the partner may not learn which customer numbers exist.
            None if has_role => ContractPage::UnknownCustomer,
            None => ContractPage::NotPermitted,
            Some(customer) if has_role || customer.is_linked() => {
                let (items, has_more_items) = page.cut(&customer.contracts);
                ContractPage::Found(items, has_more_items)
            }
            Some(_) => ContractPage::NotPermitted,
        }
    }

    pub(super) fn customer_count(&self) -> usize {
        lock(&self.customers).list.len()
    }

    pub(super) fn customer_numbers(&self) -> Vec<String> {
        let customers = lock(&self.customers);
        customers
            .list
            .iter()
            .map(|customer| customer.number.clone())
            .collect()
    }

    pub(super) fn external_id_of(&self, customer_number: &str) -> Option<String> {
        let customers = lock(&self.customers);
        customers
            .get(customer_number)?
            .external_id()
            .map(str::to_owned)
    }

    pub(super) fn contract_numbers(&self, customer_number: &str) -> Vec<String> {
        let customers = lock(&self.customers);
        customers
            .get(customer_number)
            .map(|customer| {
                customer
                    .contracts
                    .iter()
                    .filter_map(|contract| contract["contractNumber"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn update_contract(
        &self,
        customer_number: &str,
        contract_number: &str,
        edit: impl FnOnce(&mut Value),
    ) -> bool {
        let mut customers = lock(&self.customers);
        let Some(customer) = customers.get_mut(customer_number) else {
            return false;
        };
        let Some(position) = customer.contract_position(contract_number) else {
            return false;
        };
        match customer.contracts.get_mut(position) {
            Some(contract) => {
                edit(contract);
                true
            }
            None => false,
        }
    }

    /// Edits the stored JSON object of one customer (its `customerNumber` is kept); false if
    /// it does not exist.
    pub(super) fn update_customer(
        &self,
        customer_number: &str,
        edit: impl FnOnce(&mut Value),
    ) -> bool {
        let mut customers = lock(&self.customers);
        let Some(customer) = customers.get_mut(customer_number) else {
            return false;
        };
        edit(&mut customer.record);
        customer.record["customerNumber"] = Value::from(customer.number.clone());
        true
    }

    pub(super) fn remove_contract(&self, customer_number: &str, contract_number: &str) -> bool {
        let mut customers = lock(&self.customers);
        let Some(customer) = customers.get_mut(customer_number) else {
            return false;
        };
        match customer.contract_position(contract_number) {
            Some(position) => {
                customer.contracts.remove(position);
                customer.costs.remove(contract_number);
                true
            }
            None => false,
        }
    }

    pub(super) fn remove_customer(&self, customer_number: &str) -> bool {
        let mut customers = lock(&self.customers);
        let Some(&position) = customers.index.get(customer_number) else {
            return false;
        };
        customers.list.remove(position);
        customers.reindex();
        true
    }
}

/// RABOT's URLs and knobs.
impl Sandbox {
    pub fn rabot_token_url(&self) -> String {
        format!("{}{}", self.base_url(), TOKEN_PATH)
    }

    pub fn rabot_api_base_url(&self) -> String {
        format!("{}{}", self.base_url(), API_BASE_PATH)
    }

    /// Every token issued so far answers 401 from now on; tokens issued later work.
    pub fn revoke_all_tokens(&self) {
        self.shared.rabot.tokens.revoke_all();
    }

    /// Every access token issued so far, including expired and revoked ones, oldest first.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.rabot.tokens.history()
    }

    /// Current customers, in list order.
    pub fn customer_numbers(&self) -> Vec<String> {
        self.shared.rabot.customer_numbers()
    }

    pub fn external_id_of(&self, customer_number: &str) -> Option<String> {
        self.shared.rabot.external_id_of(customer_number)
    }

    pub fn contract_numbers(&self, customer_number: &str) -> Vec<String> {
        self.shared.rabot.contract_numbers(customer_number)
    }

    /// Edits the stored JSON object of one contract; false if it does not exist.
    pub fn update_contract(
        &self,
        customer_number: &str,
        contract_number: &str,
        edit: impl FnOnce(&mut Value),
    ) -> bool {
        self.shared
            .rabot
            .update_contract(customer_number, contract_number, edit)
    }

    /// Edits the stored JSON object of one customer (not its number); false if it does not exist.
    pub fn update_customer(&self, customer_number: &str, edit: impl FnOnce(&mut Value)) -> bool {
        self.shared.rabot.update_customer(customer_number, edit)
    }

    pub fn remove_contract(&self, customer_number: &str, contract_number: &str) -> bool {
        self.shared
            .rabot
            .remove_contract(customer_number, contract_number)
    }

    pub fn remove_customer(&self, customer_number: &str) -> bool {
        self.shared.rabot.remove_customer(customer_number)
    }

    /// RABOT customers not linked to the partner, who can log in on an authorization page.
    pub fn rabot_linkable_customers(&self) -> Vec<LinkableCustomer> {
        self.shared.rabot.linkable_customers()
    }

    /// The customer's relations to the partner as the API lists them; None if it is hidden.
    pub fn rabot_relations(&self, customer_number: &str) -> Option<Vec<String>> {
        self.shared.rabot.relations(customer_number)
    }
}
