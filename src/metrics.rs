//! Every metric name, in one place: `stream_worker_<name>_<unit>[_total]`.
//! Labels stay low-cardinality (`shard_id` is bounded by the shard count).

/// Counter: Kinesis records read, by the worker's shard consumers and by the
/// Lambda, before de-aggregation (a KPL aggregate counts once). No labels.
pub const RECORDS_READ: &str = "stream_worker_records_read_total";
/// Counter, bytes: the data bytes of the Kinesis records counted by
/// [`RECORDS_READ`]. No labels.
pub const BYTES_READ: &str = "stream_worker_bytes_read_total";
/// Counter: records handed to the processing core, after de-aggregation (each
/// user record of an aggregate counts), whether they became rows or dead
/// letters; a slice handed again counts again. No labels.
pub const RECORDS_PROCESSED: &str = "stream_worker_records_processed_total";
/// Counter: tweets written to the tweets table by the processing core
/// (including `dead-letters replay`). No labels.
pub const TWEETS_WRITTEN: &str = "stream_worker_records_written_total";
/// Counter: records dead-lettered, counted as each is sent to the dead-letter
/// table. Label `reason`: `not_json`, `not_a_tweet`, `invalid_field`,
/// `too_large` or `rejected_by_sink` (see [`Reason`](crate::processor::Reason)).
pub const DEAD_LETTERED: &str = "stream_worker_records_dead_lettered_total";
/// Counter: dead letters the dead-letter table refused; such a record is kept
/// only in the error log, in full. No labels.
pub const DEAD_LETTER_FAILURES: &str = "stream_worker_dead_letter_failures_total";
/// Counter: batches processed: one per non-empty read (a GetRecords call or a
/// fan-out event) of a shard consumer once all its records are durable, one per
/// shard of a Lambda invocation. No labels.
pub const BATCHES: &str = "stream_worker_batches_total";
/// Counter: GetRecords calls, by polling readers and by fan-out's end-of-shard
/// check. No labels.
pub const GET_RECORDS_CALLS: &str = "stream_worker_get_records_calls_total";
/// Counter: GetRecords calls of polling readers that were throttled. No labels.
pub const GET_RECORDS_THROTTLES: &str = "stream_worker_get_records_throttles_total";
/// Counter: GetRecords calls of polling readers that failed other than by
/// throttling or an expired iterator. No labels.
pub const GET_RECORDS_ERRORS: &str = "stream_worker_get_records_errors_total";
/// Histogram, seconds: the latency of polling readers' GetRecords calls,
/// failed ones included. No labels.
pub const GET_RECORDS_SECONDS: &str = "stream_worker_get_records_seconds";
/// Gauge, seconds: the `MillisBehindLatest` of the shard's last read, converted
/// to seconds. Label `shard_id`.
pub const BEHIND_LATEST_SECONDS: &str = "stream_worker_behind_latest_seconds";
/// Gauge, seconds: the age of the newest record of the shard's last read, from
/// its arrival in the stream to now; an empty read sets the
/// `MillisBehindLatest` value instead. Label `shard_id`.
pub const ITERATOR_AGE_SECONDS: &str = "stream_worker_iterator_age_seconds";
/// Gauge, seconds: time since the shard's last checkpoint (or since the lease
/// was taken), set at each renewal of a held lease. Label `shard_id`.
pub const CHECKPOINT_AGE_SECONDS: &str = "stream_worker_checkpoint_age_seconds";
/// Gauge: lease table rows by state, as this worker saw them at its last take
/// round. Label `state`: `owned`, `pending-handoff`, `expired`, `unowned`,
/// `waiting-for-parents` or `finished`.
pub const SHARDS: &str = "stream_worker_shards";
/// Counter: checkpoints written to the lease table (`SHARD_END` included). No
/// labels.
pub const CHECKPOINTS: &str = "stream_worker_checkpoints_total";
/// Per shard: records durable since its last checkpoint (what a crash would read again).
pub const RECORDS_SINCE_CHECKPOINT: &str = "stream_worker_records_since_checkpoint";
/// Counter: checkpoints not written because the lease was lost. No labels.
pub const CHECKPOINT_FAILURES: &str = "stream_worker_checkpoint_failures_total";
/// Gauge: leases this worker holds now. No labels.
pub const LEASES_HELD: &str = "stream_worker_leases_held";
/// Counter: leases taken because they were free, expired or handed over. No
/// labels.
pub const LEASES_TAKEN: &str = "stream_worker_leases_taken_total";
/// Counter: leases taken over from an owner that had not handed them over a
/// failover time after this worker asked (a forced steal). No labels.
pub const LEASES_STOLEN: &str = "stream_worker_leases_stolen_total";
/// Counter: held leases lost: found taken over, or not renewed before their
/// fence. No labels.
pub const LEASES_LOST: &str = "stream_worker_leases_lost_total";
/// Counter: leases this worker released (shutdown, handoff, shard end). No
/// labels.
pub const LEASES_RELEASED: &str = "stream_worker_leases_released_total";
/// Counter: graceful handoffs. Label `side`: `requested` when this worker asks
/// an owner for a lease (`handoffTo`), `asked` when it also tells a protocol 2
/// owner through its heartbeat row, `released` when this worker releases a
/// lease that was asked for.
pub const LEASE_HANDOFFS: &str = "stream_worker_lease_handoffs_total";
/// Counter: lease renewals that succeeded. No labels.
pub const LEASE_RENEWALS: &str = "stream_worker_lease_renewals_total";
/// Counter: lease renewals that failed with a store error (a lost lease is
/// counted by [`LEASES_LOST`] instead). No labels.
pub const LEASE_RENEWAL_FAILURES: &str = "stream_worker_lease_renewal_failures_total";
/// Counter: the zombie fence at work. Label `what`: `lease` when a held
/// lease's fence passed before a renewal was answered (the worker stopped its
/// consumer), `attempt` when a DynamoDB attempt was refused unsent because the
/// fence of the lease it wrote for had passed.
pub const FENCE_TRIPS: &str = "stream_worker_fence_trips_total";
/// Gauge: the coordination protocol the worker runs (1: leases renewed one by
/// one; 2: leases kept by the worker's heartbeat), as the fleet's protocol row says.
pub const PROTOCOL: &str = "stream_worker_protocol";
/// Counter: heartbeats this worker wrote to the heartbeat table. No labels.
pub const HEARTBEATS: &str = "stream_worker_heartbeats_total";
/// Counter: reads of the fleet's heartbeats (one eventually consistent Query of
/// the heartbeat table each). No labels.
pub const HEARTBEAT_READS: &str = "stream_worker_heartbeat_reads_total";
/// Counter: workers this worker marked dead (their beat stood still for the
/// failover time; or a dead marker for an incarnation never seen) before
/// taking their leases. No labels.
pub const WORKERS_MARKED_DEAD: &str = "stream_worker_workers_marked_dead_total";
/// Counter: heartbeats that failed. Label `reason`: `error` (the table did not
/// answer, or refused), `marked-dead` (another worker had marked this
/// incarnation dead; the worker starts a new one).
pub const HEARTBEAT_FAILURES: &str = "stream_worker_heartbeat_failures_total";
/// Gauge: workers holding unexpired leases, this one included, as seen at the
/// last take round. No labels.
pub const WORKERS_SEEN: &str = "stream_worker_workers_seen";
/// Counter: scans of the lease table. Label `kind`: `round` (a take round,
/// eventually consistent), `watch` (this worker's segment of a parallel scan,
/// eventually consistent) or `sync` (shard sync, strongly consistent).
pub const LEASE_TABLE_SCANS: &str = "stream_worker_lease_table_scans_total";
/// Counter: items a table's writer accepted (`BatchWriteItem` for DynamoDB).
/// Label `table`.
pub const SINK_ITEMS_WRITTEN: &str = "stream_worker_sink_items_written_total";
/// Counter: table write calls that failed as throttled. Label `table`.
pub const SINK_THROTTLES: &str = "stream_worker_sink_throttles_total";
/// Counter: items returned unprocessed by a batch write and sent again. Label
/// `table`.
pub const SINK_UNPROCESSED_RETRIES: &str = "stream_worker_sink_unprocessed_retries_total";
/// Histogram, seconds: the latency of each batch write call. Label `table`.
pub const SINK_WRITE_SECONDS: &str = "stream_worker_sink_write_seconds";
/// Counter: KPL aggregates read and replaced by their user records. No labels.
pub const AGGREGATES: &str = "stream_worker_aggregates_total";
/// Counter: records that start with the KPL magic but are not readable
/// aggregates; they are processed as plain records. No labels.
pub const INVALID_AGGREGATES: &str = "stream_worker_invalid_aggregates_total";
/// Counter: user records of aggregates whose hash key is outside their shard's
/// hash key range (a producer routed them before a reshard); they are
/// processed, where the KCL drops them. No labels.
pub const RECORDS_OUTSIDE_SHARD: &str = "stream_worker_records_outside_shard_total";
/// Counter: records (after de-aggregation) that the Lambda reported back to its
/// event source mapping for retry because the invocation ran out of time. No
/// labels.
pub const LAMBDA_RECORDS_RETRIED: &str = "stream_worker_lambda_records_retried_total";
/// Gauge, bytes: bytes of records read and not yet written, all shards
/// together (the memory budget, `--max-in-flight-bytes`). No labels.
pub const IN_FLIGHT_BYTES: &str = "stream_worker_in_flight_bytes";
/// Counter: times a shard consumer had to wait for the memory budget. No
/// labels.
pub const IN_FLIGHT_WAITS: &str = "stream_worker_in_flight_waits_total";
/// Gauge, write capacity units per second: the adaptive write rate's current
/// limit; 0 when nothing limits it. Label `table`.
pub const WRITE_RATE_LIMIT: &str = "stream_worker_write_rate_limit";
/// Gauge, write capacity units per second: the write rate's ceiling, the lower
/// of `--max-write-rate` and this worker's share of the table's capacity; 0
/// when there is none. Label `table`.
pub const WRITE_RATE_CEILING: &str = "stream_worker_write_rate_ceiling";
/// Counter: cuts of the adaptive write rate after DynamoDB throttled. Label
/// `table`.
pub const WRITE_RATE_CUTS: &str = "stream_worker_write_rate_cuts_total";
/// Histogram, seconds: time spent waiting for the write rate limit before a
/// write, zero waits included. No labels.
pub const RATE_LIMIT_WAIT_SECONDS: &str = "stream_worker_rate_limit_wait_seconds";
/// Counter: fan-out SubscribeToShard subscriptions started. No labels.
pub const FAN_OUT_SUBSCRIPTIONS: &str = "stream_worker_fan_out_subscriptions_total";
/// Counter: fan-out subscriptions replaced. Label `reason`: `ended` (by the
/// service), `lifetime`, `idle`, `error` or `not-found`.
pub const FAN_OUT_RESUBSCRIPTIONS: &str = "stream_worker_fan_out_resubscriptions_total";
/// Counter: fan-out SubscribeToShard calls refused or failed. Label `reason`:
/// `in-use` (another subscription to the shard is live), `throttled` or
/// `error`.
pub const FAN_OUT_SUBSCRIBE_FAILURES: &str = "stream_worker_fan_out_subscribe_failures_total";
/// Histogram, seconds: for each record of a fan-out event, the time from its
/// arrival in the stream to the event's receipt. No labels.
pub const FAN_OUT_EVENT_AGE_SECONDS: &str = "stream_worker_fan_out_event_age_seconds";
/// Counter: producer records received from the source. No labels.
pub const PRODUCER_RECEIVED: &str = "stream_worker_producer_received_total";
/// Counter: tweets the producer put that Kinesis accepted (each tweet of an
/// aggregate counts). No labels.
pub const PRODUCER_PUT: &str = "stream_worker_producer_put_total";
/// Counter: tweets the producer put again after Kinesis refused them or the
/// call failed. No labels.
pub const PRODUCER_RETRIED: &str = "stream_worker_producer_retried_total";
/// Counter: producer reconnects to the X API stream. Label `reason`:
/// `network`, `stall`, `closed`, `operational_disconnect`, `http_error` or
/// `rate_limited`.
pub const PRODUCER_RECONNECTS: &str = "stream_worker_producer_reconnects_total";
/// Counter: error objects in the X API stream that were not disconnects. No
/// labels.
pub const PRODUCER_STREAM_ERRORS: &str = "stream_worker_producer_stream_errors_total";
/// Gauge: records the producer received and has not yet taken into a put.
/// No labels.
pub const PRODUCER_BUFFER_RECORDS: &str = "stream_worker_producer_buffer_records";
/// Gauge: 1 while the producer is connected to the X API stream, else 0; a
/// file or synthetic source sets 1. No labels.
pub const PRODUCER_CONNECTED: &str = "stream_worker_producer_connected";
/// Gauge, seconds: time since the producer last received a record, updated
/// every second. No labels.
pub const PRODUCER_LAST_TWEET_AGE_SECONDS: &str = "stream_worker_producer_last_tweet_age_seconds";
/// Histogram, seconds: for each tweet, the time from its receipt by the
/// producer to Kinesis accepting it. No labels.
pub const PRODUCER_PUT_LATENCY_SECONDS: &str = "stream_worker_producer_put_latency_seconds";

/// Registers every counter at zero, so that dashboards and alerts see a series
/// (and `rate()` a start) before the first event.
pub fn register_counters() {
    for name in [
        RECORDS_READ,
        BYTES_READ,
        RECORDS_PROCESSED,
        TWEETS_WRITTEN,
        AGGREGATES,
        INVALID_AGGREGATES,
        RECORDS_OUTSIDE_SHARD,
        DEAD_LETTER_FAILURES,
        BATCHES,
        GET_RECORDS_CALLS,
        GET_RECORDS_THROTTLES,
        GET_RECORDS_ERRORS,
        CHECKPOINTS,
        CHECKPOINT_FAILURES,
        LEASES_TAKEN,
        LEASES_STOLEN,
        LEASES_LOST,
        LEASES_RELEASED,
        LEASE_RENEWALS,
        LEASE_RENEWAL_FAILURES,
        HEARTBEATS,
        HEARTBEAT_READS,
        WORKERS_MARKED_DEAD,
        FAN_OUT_SUBSCRIPTIONS,
    ] {
        metrics::counter!(name).absolute(0);
    }
    for reason in ["ended", "lifetime", "idle", "error", "not-found"] {
        metrics::counter!(FAN_OUT_RESUBSCRIPTIONS, "reason" => reason).absolute(0);
    }
    for reason in ["in-use", "throttled", "error"] {
        metrics::counter!(FAN_OUT_SUBSCRIBE_FAILURES, "reason" => reason).absolute(0);
    }
    for side in ["requested", "asked", "released"] {
        metrics::counter!(LEASE_HANDOFFS, "side" => side).absolute(0);
    }
    for what in ["lease", "attempt"] {
        metrics::counter!(FENCE_TRIPS, "what" => what).absolute(0);
    }
    for reason in ["error", "marked-dead"] {
        metrics::counter!(HEARTBEAT_FAILURES, "reason" => reason).absolute(0);
    }
}

/// Registers the per-table sink counters at zero.
pub fn register_table_counters(tables: &[&str]) {
    for table in tables {
        for name in [SINK_ITEMS_WRITTEN, SINK_THROTTLES, SINK_UNPROCESSED_RETRIES, WRITE_RATE_CUTS] {
            metrics::counter!(name, "table" => table.to_string()).absolute(0);
        }
    }
}

/// Registers a description for every metric with the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(RECORDS_READ, Unit::Count, "records returned by GetRecords");
    describe_counter!(BYTES_READ, Unit::Bytes, "payload bytes returned by GetRecords");
    describe_counter!(RECORDS_PROCESSED, Unit::Count, "records handled by the processing core");
    describe_counter!(TWEETS_WRITTEN, Unit::Count, "tweets written to the tweets table");
    describe_counter!(AGGREGATES, Unit::Count, "KPL aggregates read and replaced by their user records");
    describe_counter!(
        INVALID_AGGREGATES,
        Unit::Count,
        "records with the KPL magic that were not readable aggregates (processed as plain records)"
    );
    describe_counter!(
        RECORDS_OUTSIDE_SHARD,
        Unit::Count,
        "user records outside their shard's hash key range (processed; the KCL drops them)"
    );
    describe_counter!(DEAD_LETTERED, Unit::Count, "records written to the dead-letter table, by reason");
    describe_counter!(DEAD_LETTER_FAILURES, Unit::Count, "records the dead-letter table refused (logged in full)");
    describe_counter!(BATCHES, Unit::Count, "GetRecords batches processed and checkpointed");
    describe_counter!(GET_RECORDS_CALLS, Unit::Count, "GetRecords calls");
    describe_counter!(GET_RECORDS_THROTTLES, Unit::Count, "GetRecords calls throttled");
    describe_counter!(GET_RECORDS_ERRORS, Unit::Count, "GetRecords calls failed other than by throttling");
    describe_histogram!(GET_RECORDS_SECONDS, Unit::Seconds, "GetRecords latency");
    describe_gauge!(
        BEHIND_LATEST_SECONDS,
        Unit::Seconds,
        "MillisBehindLatest of the last GetRecords, in seconds, per shard"
    );
    describe_gauge!(ITERATOR_AGE_SECONDS, Unit::Seconds, "age of the newest record read, per shard");
    describe_gauge!(CHECKPOINT_AGE_SECONDS, Unit::Seconds, "time since the last checkpoint, per held shard");
    describe_gauge!(
        RECORDS_SINCE_CHECKPOINT,
        "records durable since the shard's last checkpoint (read again after a crash)"
    );
    describe_gauge!(SHARDS, Unit::Count, "shards of the lease table by state, as this worker sees them");
    describe_counter!(CHECKPOINTS, Unit::Count, "checkpoints written");
    describe_counter!(CHECKPOINT_FAILURES, Unit::Count, "checkpoints refused because the lease was lost");
    describe_gauge!(LEASES_HELD, Unit::Count, "leases this worker holds");
    describe_counter!(LEASES_TAKEN, Unit::Count, "leases taken (expired or unowned)");
    describe_counter!(LEASES_STOLEN, Unit::Count, "leases taken by force from a more loaded worker that did not hand them over within a failover time of being asked");
    describe_counter!(LEASES_LOST, Unit::Count, "leases lost (taken by another worker or not renewed in time)");
    describe_counter!(LEASES_RELEASED, Unit::Count, "leases released (shutdown, shard end)");
    describe_counter!(
        LEASE_HANDOFFS,
        Unit::Count,
        "graceful handoffs: side=requested (as taker), side=released (as owner)"
    );
    describe_counter!(LEASE_RENEWALS, Unit::Count, "lease renewals that succeeded");
    describe_counter!(LEASE_RENEWAL_FAILURES, Unit::Count, "lease renewals that failed (store errors)");
    describe_counter!(
        FENCE_TRIPS,
        Unit::Count,
        "lease fences passed before a renewal, and write attempts refused past one"
    );
    describe_counter!(HEARTBEATS, Unit::Count, "heartbeats written to the heartbeat table");
    describe_gauge!(PROTOCOL, "coordination protocol run: 1 renewals, 2 heartbeats");
    describe_counter!(HEARTBEAT_READS, Unit::Count, "reads (Queries) of the fleet's heartbeats");
    describe_counter!(WORKERS_MARKED_DEAD, Unit::Count, "workers marked dead before their leases were taken");
    describe_counter!(HEARTBEAT_FAILURES, Unit::Count, "heartbeats that failed, by reason (error, marked-dead)");
    describe_gauge!(WORKERS_SEEN, Unit::Count, "workers holding unexpired leases, as seen by this worker");
    describe_counter!(
        LEASE_TABLE_SCANS,
        Unit::Count,
        "scans of the lease table by kind: round (take round, eventually consistent), watch (this worker's segment \
         of a parallel scan, eventually consistent), sync (shard sync, strongly consistent)"
    );
    describe_counter!(SINK_ITEMS_WRITTEN, Unit::Count, "items written by BatchWriteItem, by table");
    describe_counter!(SINK_THROTTLES, Unit::Count, "BatchWriteItem calls throttled, by table");
    describe_counter!(SINK_UNPROCESSED_RETRIES, Unit::Count, "items returned as UnprocessedItems and retried");
    describe_histogram!(SINK_WRITE_SECONDS, Unit::Seconds, "BatchWriteItem latency, by table");
    describe_counter!(
        LAMBDA_RECORDS_RETRIED,
        Unit::Count,
        "records the Lambda handed back to its event source mapping for retry (out of time)"
    );
    describe_gauge!(
        WRITE_RATE_LIMIT,
        "the adaptive write rate's current limit, write capacity units per second, by table (0: none)"
    );
    describe_gauge!(IN_FLIGHT_BYTES, Unit::Bytes, "bytes of records read and not yet written (--max-in-flight-bytes)");
    describe_counter!(
        IN_FLIGHT_WAITS,
        Unit::Count,
        "times a shard waited for the memory budget before or after reading"
    );
    describe_gauge!(
        WRITE_RATE_CEILING,
        "the write rate's ceiling, write capacity units per second, by table: the lower of --max-write-rate and \
         this worker's share of the table's capacity (0: none)"
    );
    describe_counter!(WRITE_RATE_CUTS, Unit::Count, "cuts of the write rate after DynamoDB throttled, by table");
    describe_histogram!(RATE_LIMIT_WAIT_SECONDS, Unit::Seconds, "time spent waiting for the write rate limit");
    describe_counter!(FAN_OUT_SUBSCRIPTIONS, Unit::Count, "fan-out: SubscribeToShard subscriptions started");
    describe_counter!(
        FAN_OUT_RESUBSCRIPTIONS,
        Unit::Count,
        "fan-out: subscriptions replaced, by reason (ended by the service, lifetime, idle, error, not-found)"
    );
    describe_counter!(
        FAN_OUT_SUBSCRIBE_FAILURES,
        Unit::Count,
        "fan-out: SubscribeToShard calls refused, by reason (in-use: another subscription is live; throttled; error)"
    );
    describe_histogram!(
        FAN_OUT_EVENT_AGE_SECONDS,
        Unit::Seconds,
        "fan-out: from a record's arrival in the stream to its event's receipt"
    );
    describe_counter!(PRODUCER_RECEIVED, Unit::Count, "producer: records received from the source");
    describe_counter!(PRODUCER_PUT, Unit::Count, "producer: records Kinesis accepted");
    describe_counter!(PRODUCER_RETRIED, Unit::Count, "producer: entries put again after Kinesis refused them");
    describe_counter!(PRODUCER_RECONNECTS, Unit::Count, "producer: reconnects to the X API, by reason");
    describe_counter!(
        PRODUCER_STREAM_ERRORS,
        Unit::Count,
        "producer: error objects in the X stream that were not disconnects"
    );
    describe_gauge!(
        PRODUCER_BUFFER_RECORDS,
        Unit::Count,
        "producer: records received and waiting to be put (the source waits at 10,000)"
    );
    describe_gauge!(PRODUCER_CONNECTED, "producer: 1 while connected to the X API stream");
    describe_gauge!(PRODUCER_LAST_TWEET_AGE_SECONDS, Unit::Seconds, "producer: time since the last record received");
    describe_histogram!(PRODUCER_PUT_LATENCY_SECONDS, Unit::Seconds, "producer: from received to accepted by Kinesis");
}

/// Registers the producer's counters at zero.
pub fn register_producer_counters() {
    for name in [PRODUCER_RECEIVED, PRODUCER_PUT, PRODUCER_RETRIED, PRODUCER_STREAM_ERRORS] {
        metrics::counter!(name).absolute(0);
    }
}
