//! `filter=`: parsing a request's expression and running it over the records
//! a read returns, off the async workers.
//!
//! Parsing refuses expressions whose regular expressions would be expensive
//! (see `mesh_filter`'s limits), but an accepted filter over many large
//! records still costs real CPU time. That time is spent on tokio's blocking
//! pool, at most one evaluation per CPU at once, so a slow filter delays only
//! the requests that carry one: the async workers stay free to answer every
//! other HTTP request, DNS and Raft.

use std::sync::{Arc, LazyLock};

use mesh_filter::Filter;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;

use super::ApiError;

/// Filter evaluations allowed to run at once, process-wide: one per CPU, so
/// they cannot crowd the async workers out of the machine.
static SLOTS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Arc::new(Semaphore::new(cpus))
});

/// Parses a `filter=` expression; 400 with the reason when it is refused.
pub fn parse_filter(expr: &str) -> Result<Filter, ApiError> {
    Filter::parse(expr).map_err(|e| {
        ApiError::bad_request(format!(
            "Failed to create boolean expression evaluator: {e}"
        ))
    })
}

/// The items as JSON, keeping only those a `filter=` expression matches.
pub async fn apply_filter<T>(items: Vec<T>, filter: Option<&str>) -> Result<Vec<Value>, ApiError>
where
    T: Serialize + Send + 'static,
{
    fn to_values<T: Serialize>(items: Vec<T>) -> Vec<Value> {
        items
            .into_iter()
            .map(|i| serde_json::to_value(i).unwrap_or(Value::Null))
            .collect()
    }
    let Some(expr) = filter else {
        return Ok(to_values(items));
    };
    let filter = parse_filter(expr)?;
    off_workers(move || mesh_filter::filter_values(&filter, to_values(items))).await
}

/// The items `filter` matches (all of them without one), in their order.
pub async fn retain_matching<T>(items: Vec<T>, filter: Option<Filter>) -> Result<Vec<T>, ApiError>
where
    T: Serialize + Send + 'static,
{
    let Some(filter) = filter else {
        return Ok(items);
    };
    off_workers(move || {
        items
            .into_iter()
            .filter(|i| serde_json::to_value(i).is_ok_and(|v| filter.matches(&v)))
            .collect()
    })
    .await
}

/// Runs `work` on the blocking pool once a slot is free. The slot goes with
/// the work, not the request: a client that hangs up does not free it while
/// its evaluation still runs.
async fn off_workers<R, F>(work: F) -> Result<R, ApiError>
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    let slot = SLOTS
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::internal("filter evaluation is shut down"))?;
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        work()
    })
    .await
    .map_err(|e| ApiError::internal(format!("filter evaluation failed: {e}")))
}
