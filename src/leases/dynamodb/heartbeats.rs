//! The heartbeat table beside the lease table: one row per worker process.
//!
//! Keys: `fleet` (hash; the lease table's name, so that one Query reads the
//! fleet) and `worker` (range; `<worker id>#<incarnation>`). A row is under
//! 200 bytes, so a beat costs one write unit whatever the worker holds; the
//! fleet's rows are one eventually consistent Query (half a read unit per 4 KB,
//! about twenty rows). Rows of processes that died carry `expiresAt`, a day
//! after their last beat, for the table's time to live to remove them.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure, TimeToLiveSpecification,
};

use super::{n, DynamoLeaseStore, Item};
use crate::aws::{classify, describe, ErrorClass};
use crate::leases::{Cas, StoreError};
use crate::model::{Fleet, Heartbeat};

/// Attribute `fleet`, the hash key: the lease table's name.
pub const FLEET: &str = "fleet";
/// Attribute `worker`, the range key: `<worker id>#<incarnation>` ([`Heartbeat::key`]).
pub const WORKER: &str = "worker";
/// Attribute `workerId`: the worker id, as it owns leases.
pub const WORKER_ID: &str = "workerId";
/// Attribute `incarnation`: drawn by each process at start.
pub const INCARNATION: &str = "incarnation";
/// Attribute `beat`: how many beats the incarnation has written.
pub const BEAT: &str = "beat";
/// Attribute `protocol`: the coordination protocol the worker speaks.
pub const PROTOCOL: &str = "protocol";
/// Attribute `speaks`: the newest protocol the worker's build runs; absent in
/// rows of builds before protocol 2.
pub const SPEAKS: &str = "speaks";
/// Attribute `asks`: a string set of lease keys other workers asked the
/// incarnation to let go of; absent when none.
pub const ASKS: &str = "asks";
/// The range key of the fleet's protocol row, which holds `protocol` alone.
/// `~` sorts after every worker id a pod or host name makes.
pub const PROTOCOL_ROW: &str = "~protocol";
/// Attribute `leases`: how many leases the worker held at its last beat.
pub const LEASES: &str = "leases";
/// Attribute `sentAt`: the last beat's time on the writer's clock (RFC 3339),
/// for people; liveness is never judged from it.
pub const SENT_AT: &str = "sentAt";
/// Attribute `deadBy`: the worker that marked the incarnation dead; absent while
/// it lives.
pub const DEAD_BY: &str = "deadBy";
/// Attribute `expiresAt`: Unix seconds a day after the last beat; the table's
/// time-to-live attribute.
pub const EXPIRES_AT: &str = "expiresAt";

/// How long a row outlives its last beat before the table's time to live may
/// remove it.
const KEEP_SECONDS: u64 = 24 * 60 * 60;

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The row of `heartbeat` in the fleet `fleet`, to expire at `expires_at` (Unix
/// seconds).
pub fn to_item(fleet: &str, heartbeat: &Heartbeat, expires_at: u64) -> Item {
    let mut item = HashMap::from([
        (FLEET.to_owned(), s(fleet)),
        (WORKER.to_owned(), s(&heartbeat.key())),
        (WORKER_ID.to_owned(), s(&heartbeat.worker_id)),
        (INCARNATION.to_owned(), s(&heartbeat.incarnation)),
        (BEAT.to_owned(), n(heartbeat.beat)),
        (PROTOCOL.to_owned(), n(u64::from(heartbeat.protocol))),
        (SPEAKS.to_owned(), n(u64::from(heartbeat.speaks))),
        (LEASES.to_owned(), n(u64::from(heartbeat.leases))),
        (SENT_AT.to_owned(), s(&heartbeat.sent_at)),
        (EXPIRES_AT.to_owned(), n(expires_at)),
    ]);
    if let Some(by) = &heartbeat.dead_by {
        item.insert(DEAD_BY.to_owned(), s(by));
    }
    if !heartbeat.asks.is_empty() {
        item.insert(ASKS.to_owned(), AttributeValue::Ss(heartbeat.asks.clone()));
    }
    item
}

/// Reads a heartbeat row; `None` if it lacks the worker id, incarnation or beat.
pub fn from_item(item: &Item) -> Option<Heartbeat> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let num = |name: &str| item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<u64>().ok());
    Some(Heartbeat {
        worker_id: text(WORKER_ID)?,
        incarnation: text(INCARNATION)?,
        beat: num(BEAT)?,
        protocol: num(PROTOCOL).and_then(|p| u32::try_from(p).ok()).unwrap_or(Heartbeat::RENEWALS),
        speaks: num(SPEAKS).and_then(|p| u32::try_from(p).ok()).unwrap_or(Heartbeat::RENEWALS),
        leases: num(LEASES).and_then(|l| u32::try_from(l).ok()).unwrap_or(0),
        sent_at: text(SENT_AT).unwrap_or_default(),
        dead_by: text(DEAD_BY),
        asks: match item.get(ASKS) {
            Some(AttributeValue::Ss(keys)) => keys.clone(),
            _ => Vec::new(),
        },
    })
}

/// Whether a failed conditional update's row (`ReturnValuesOnConditionCheckFailure`)
/// is marked dead.
fn failed_on_dead(err: &SdkError<UpdateItemError, aws_smithy_runtime_api::http::Response>) -> bool {
    match err.as_service_error() {
        Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
            failed.item().is_some_and(|item| item.contains_key(DEAD_BY))
        }
        _ => false,
    }
}

impl DynamoLeaseStore {
    /// The heartbeat table's name: `<lease table>-workers`.
    pub fn workers_table(&self) -> &str {
        &self.workers
    }

    fn heartbeat_error(&self, op: &str, err: String) -> StoreError {
        StoreError(format!("heartbeat table '{}': {op}: {err}", self.workers))
    }

    fn heartbeat_key(&self, heartbeat: &Heartbeat) -> Item {
        HashMap::from([(FLEET.to_owned(), s(&self.table)), (WORKER.to_owned(), s(&heartbeat.key()))])
    }

    /// Turns on the table's time to live on `expiresAt`, for a table this worker
    /// just created. A failure is logged, not returned: rows of dead processes
    /// then stay, a few hundred bytes each, and are ignored.
    pub(super) async fn expire_heartbeats(&self) {
        let spec = TimeToLiveSpecification::builder()
            .attribute_name(EXPIRES_AT)
            .enabled(true)
            .build()
            .expect("complete time-to-live specification");
        if let Err(e) =
            self.client.update_time_to_live().table_name(&self.workers).time_to_live_specification(spec).send().await
        {
            tracing::warn!(table = %self.workers, error = %describe(&e), "could not turn on the heartbeat table's time to live; rows of stopped workers stay");
        }
    }

    pub(super) async fn beat_row(
        &self,
        heartbeat: &Heartbeat,
        leases: u32,
        sent_at: &str,
    ) -> Result<Cas<Heartbeat>, StoreError> {
        let values = HashMap::from([
            (":worker_id".to_owned(), s(&heartbeat.worker_id)),
            (":incarnation".to_owned(), s(&heartbeat.incarnation)),
            (":zero".to_owned(), n(0)),
            (":one".to_owned(), n(1)),
            (":protocol".to_owned(), n(u64::from(heartbeat.protocol))),
            (":speaks".to_owned(), n(u64::from(heartbeat.speaks))),
            (":leases".to_owned(), n(u64::from(leases))),
            (":sent_at".to_owned(), s(sent_at)),
            (":expires_at".to_owned(), n(unix_now() + KEEP_SECONDS)),
        ]);
        let mut values = values;
        let mut update = format!(
            "SET {WORKER_ID} = :worker_id, {INCARNATION} = :incarnation, {BEAT} = if_not_exists({BEAT}, :zero) + :one, \
             {PROTOCOL} = :protocol, {SPEAKS} = :speaks, {LEASES} = :leases, {SENT_AT} = :sent_at, {EXPIRES_AT} = :expires_at"
        );
        if !heartbeat.asks.is_empty() {
            update.push_str(&format!(" DELETE {ASKS} :handled"));
            values.insert(":handled".to_owned(), AttributeValue::Ss(heartbeat.asks.clone()));
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.workers)
            .set_key(Some(self.heartbeat_key(heartbeat)))
            .update_expression(update)
            .condition_expression(if heartbeat.beat == 0 {
                format!("attribute_not_exists({DEAD_BY})")
            } else {
                // A row removed at a graceful stop is not brought back by a
                // beat that was still on its way.
                format!("attribute_not_exists({DEAD_BY}) AND attribute_exists({BEAT})")
            })
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let stored = out.attributes.as_ref().and_then(from_item);
                Ok(Cas::Done(stored.unwrap_or_else(|| heartbeat.next(leases, sent_at))))
            }
            Err(err) if classify(&err) == ErrorClass::ConditionFailed => Ok(Cas::Lost),
            Err(err) => Err(self.heartbeat_error("beat", describe(&err))),
        }
    }

    pub(super) async fn query_fleet(&self) -> Result<Fleet, StoreError> {
        let mut fleet = Fleet::default();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.workers)
                .key_condition_expression(format!("{FLEET} = :fleet"))
                .expression_attribute_values(":fleet", s(&self.table))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.heartbeat_error("query", describe(&e)))?;
            for item in out.items() {
                if item.get(WORKER).and_then(|w| w.as_s().ok()).is_some_and(|w| w == PROTOCOL_ROW) {
                    fleet.protocol = item.get(PROTOCOL).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok());
                } else if let Some(row) = from_item(item) {
                    fleet.workers.push(row);
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(fleet),
            }
        }
    }

    pub(super) async fn mark_row_dead(&self, heartbeat: &Heartbeat, by: &str) -> Result<Cas<()>, StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.workers)
            .set_key(Some(self.heartbeat_key(heartbeat)))
            .expression_attribute_values(":by", s(by))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let update = if heartbeat.beat == 0 {
            // Never seen beat: a dead marker, only where the row does not exist,
            // so that the incarnation's first beat is refused.
            update
                .update_expression(format!(
                    "SET {DEAD_BY} = :by, {WORKER_ID} = :worker_id, {INCARNATION} = :incarnation, \
                     {BEAT} = :beat, {EXPIRES_AT} = :expires_at"
                ))
                .condition_expression(format!("attribute_not_exists({WORKER})"))
                .expression_attribute_values(":worker_id", s(&heartbeat.worker_id))
                .expression_attribute_values(":incarnation", s(&heartbeat.incarnation))
                .expression_attribute_values(":beat", n(0))
                .expression_attribute_values(":expires_at", n(unix_now() + KEEP_SECONDS))
        } else {
            update
                .update_expression(format!("SET {DEAD_BY} = :by"))
                .condition_expression(format!("{BEAT} = :beat AND attribute_not_exists({DEAD_BY})"))
                .expression_attribute_values(":beat", n(heartbeat.beat))
        };
        match update.send().await {
            Ok(_) => Ok(Cas::Done(())),
            Err(err) if classify(&err) == ErrorClass::ConditionFailed => {
                Ok(if failed_on_dead(&err) { Cas::Done(()) } else { Cas::Lost })
            }
            Err(err) => Err(self.heartbeat_error("mark dead", describe(&err))),
        }
    }

    pub(super) async fn ask_row(&self, worker_id: &str, incarnation: &str, key: &str) -> Result<(), StoreError> {
        let row = HashMap::from([
            (FLEET.to_owned(), s(&self.table)),
            (WORKER.to_owned(), s(&format!("{worker_id}#{incarnation}"))),
        ]);
        let result = self
            .client
            .update_item()
            .table_name(&self.workers)
            .set_key(Some(row))
            .update_expression(format!("ADD {ASKS} :key"))
            .condition_expression(format!("attribute_exists({BEAT}) AND attribute_not_exists({DEAD_BY})"))
            .expression_attribute_values(":key", AttributeValue::Ss(vec![key.to_owned()]))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Gone or dead: its leases are taken by the heartbeat rule instead.
            Err(err) if classify(&err) == ErrorClass::ConditionFailed => Ok(()),
            Err(err) => Err(self.heartbeat_error("ask", describe(&err))),
        }
    }

    pub(super) async fn set_protocol_row(&self, from: Option<u32>, to: u32) -> Result<Cas<()>, StoreError> {
        let row = HashMap::from([(FLEET.to_owned(), s(&self.table)), (WORKER.to_owned(), s(PROTOCOL_ROW))]);
        let update = self
            .client
            .update_item()
            .table_name(&self.workers)
            .set_key(Some(row))
            .update_expression(format!("SET {PROTOCOL} = :to"))
            .expression_attribute_values(":to", n(u64::from(to)));
        let update = match from {
            None => update.condition_expression(format!("attribute_not_exists({PROTOCOL})")),
            Some(from) => update
                .condition_expression(format!("{PROTOCOL} = :from"))
                .expression_attribute_values(":from", n(u64::from(from))),
        };
        match update.send().await {
            Ok(_) => Ok(Cas::Done(())),
            Err(err) if classify(&err) == ErrorClass::ConditionFailed => Ok(Cas::Lost),
            Err(err) => Err(self.heartbeat_error("set protocol", describe(&err))),
        }
    }

    pub(super) async fn delete_heartbeat_row(&self, heartbeat: &Heartbeat) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.workers)
            .set_key(Some(self.heartbeat_key(heartbeat)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.heartbeat_error("delete", describe(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let mut hb = Heartbeat::new("worker-a", "5e1f00aa").next(7, "2026-12-06T13:00:00Z");
        assert_eq!(from_item(&to_item("leases", &hb, 1)), Some(hb.clone()));
        hb.dead_by = Some("worker-b".into());
        let item = to_item("leases", &hb, 1);
        assert_eq!(item[WORKER].as_s().unwrap(), "worker-a#5e1f00aa");
        assert_eq!(from_item(&item), Some(hb));
        assert!(crate::aws::item_size(&item) < 1024, "one write unit a beat");
        assert!(from_item(&HashMap::from([(WORKER_ID.to_owned(), s("w"))])).is_none());
    }
}
