//! Where the producer's batches go: one PutRecords call. Kinesis in production,
//! the in-memory stream twin in tests.

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use super::batch::Put;
use crate::aws::{classify, describe};
use crate::retrieval::kinesis::KinesisStream;
use crate::retrieval::memory::{Fault, MemoryStream};
use crate::retrieval::{Shard, StreamClient, StreamError};

/// What happened to one entry of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Accepted {
        shard: String,
        sequence: String,
    },
    /// Refused (`ProvisionedThroughputExceededException`, `InternalFailure`): put it again.
    Failed {
        code: String,
    },
}

#[async_trait]
pub trait PutSink: Send + Sync {
    /// One PutRecords call; on success one [`Entry`] per record, in order.
    async fn put_records(&self, records: &[Put]) -> Result<Vec<Entry>, StreamError>;
    /// The stream's shards, with their hash key ranges (for `--aggregate`).
    async fn shards(&self) -> Result<Vec<Shard>, StreamError>;
}

pub struct KinesisSink {
    pub client: aws_sdk_kinesis::Client,
    pub stream: String,
}

#[async_trait]
impl PutSink for KinesisSink {
    async fn put_records(&self, records: &[Put]) -> Result<Vec<Entry>, StreamError> {
        let entries = records
            .iter()
            .map(|r| {
                PutRecordsRequestEntry::builder()
                    .partition_key(r.partition_key())
                    .set_explicit_hash_key(r.explicit_hash_key().map(|h| h.to_string()))
                    .data(Blob::new(r.data()))
                    .build()
                    .expect("partition key and data are set")
            })
            .collect();
        let out = self.client.put_records().stream_name(&self.stream).set_records(Some(entries)).send().await.map_err(
            |err| StreamError {
                class: classify(&err),
                message: format!("PutRecords to stream '{}' failed: {}", self.stream, describe(&err)),
            },
        )?;
        Ok(out
            .records
            .into_iter()
            .map(|e| match (e.error_code, e.shard_id, e.sequence_number) {
                (None, Some(shard), Some(sequence)) => Entry::Accepted { shard, sequence },
                (code, _, _) => Entry::Failed { code: code.unwrap_or_else(|| "unknown".into()) },
            })
            .collect())
    }

    async fn shards(&self) -> Result<Vec<Shard>, StreamError> {
        KinesisStream::new(self.client.clone(), &self.stream).list_shards().await
    }
}

/// The twin takes one injected fault per call: `Throttled` and `Transient` fail
/// the call, `PartialPut` refuses every other entry.
#[async_trait]
impl PutSink for MemoryStream {
    async fn put_records(&self, records: &[Put]) -> Result<Vec<Entry>, StreamError> {
        let put = |r: &Put| {
            let (shard, sequence) = match r.explicit_hash_key() {
                Some(hash) => self.put_hashed(hash, r.partition_key(), r.data()),
                None => self.put(r.partition_key(), r.data()),
            };
            Entry::Accepted { shard, sequence }
        };
        let fault = self.wait_and_take_fault().await;
        match fault {
            Some(Fault::PartialPut) => Ok(records
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    if i % 2 == 1 {
                        Entry::Failed { code: "ProvisionedThroughputExceededException".into() }
                    } else {
                        put(r)
                    }
                })
                .collect()),
            Some(fault) => Err(crate::retrieval::memory::fault_error(fault)),
            None => Ok(records.iter().map(put).collect()),
        }
    }

    async fn shards(&self) -> Result<Vec<Shard>, StreamError> {
        self.list_shards().await
    }
}
