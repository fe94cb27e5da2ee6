//! The client side of `partner-sync resync`: store a request (which NOTIFYs every daemon) and,
//! with `--wait`, follow it until each job's run has ended or been skipped.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

use crate::events::dispatcher::host_id;
use crate::jobs::JobName;
use crate::store::audit::Actor;
use crate::store::runs::{self, RunRow};
use crate::store::trigger_requests;

/// How long to wait for some daemon to claim a request before saying none is listening.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How one requested job ended.
#[derive(Debug)]
pub enum Outcome {
    Ran(RunRow),
    NotRun { job: String, reason: String },
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        matches!(self, Outcome::Ran(run) if run.status == runs::RunStatus::Succeeded.as_str())
    }
}

/// Stores a request for `jobs`, made by `actor`; `customer` names the one customer of a
/// targeted refresh.
pub async fn request(
    pool: &PgPool,
    jobs: &[JobName],
    customer: Option<&str>,
    actor: &Actor,
) -> Result<Uuid, sqlx::Error> {
    let names: Vec<&str> = jobs.iter().map(|j| j.as_str()).collect();
    let id = Uuid::new_v4();
    trigger_requests::request(pool, id, &names, &host_id(), customer, actor).await?;
    Ok(id)
}

/// Waits until every job of request `id` has a finished run or a reason it was not run.
pub async fn wait(pool: &PgPool, id: Uuid, timeout: Duration) -> anyhow::Result<Vec<Outcome>> {
    let started = Instant::now();
    let states = loop {
        let states = trigger_requests::state(pool, id).await?;
        if states
            .iter()
            .all(|s| s.skipped.is_some() || s.run_finished_at.is_some())
        {
            break states;
        }
        let unclaimed: Vec<&str> = states
            .iter()
            .filter(|s| s.claimed_by.is_none())
            .map(|s| s.job.as_str())
            .collect();
        if !unclaimed.is_empty() && started.elapsed() > CLAIM_TIMEOUT {
            anyhow::bail!(
                "no daemon took {} within {} s: is `partner-sync run` running with it enabled?",
                unclaimed.join(", "),
                CLAIM_TIMEOUT.as_secs()
            );
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "gave up waiting after {}",
            humantime::format_duration(timeout)
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    let mut outcomes = Vec::with_capacity(states.len());
    for state in states {
        let run = match state.run_id {
            Some(run_id) => runs::get(pool, run_id).await?,
            None => None,
        };
        outcomes.push(match run {
            Some(run) => Outcome::Ran(run),
            None => Outcome::NotRun {
                job: state.job,
                reason: state.skipped.unwrap_or_else(|| "unknown".to_owned()),
            },
        });
    }
    Ok(outcomes)
}
