//! Archive a Kinesis stream to files: each shard's records appended, one JSON
//! line each, to files rotated by size, with leases, checkpoints, failover and
//! resharding from the engine. A second application of the engine, beside the
//! tweet pipeline, written with nothing but the crate's public API.
//!
//! ```sh
//! cargo run --release --example archive -- STREAM LEASE_TABLE DIR [MAX_FILE_BYTES]
//! ```
//!
//! `DIR/<shard id>/<first sequence number>-<pid>.jsonl` holds lines
//! `{"seq": …, "sub": …, "key": …, "data": <base64>}`. A slice is written and
//! synced before the engine checkpoints it; a crash appends again what came
//! after the last checkpoint (at least once), always to a new file, so a line
//! cut by a crash can only be a file's last.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use stream_worker::engine::coordinator::{Worker, WorkerConfig};
use stream_worker::engine::{Durable, RecordProcessor};
use stream_worker::leases::dynamodb::DynamoLeaseStore;
use stream_worker::leases::LeaseStore as _;
use stream_worker::model::Record;
use stream_worker::retrieval::kinesis::KinesisStream;

/// Each shard's open file and its size.
struct Archive {
    dir: PathBuf,
    max_file_bytes: u64,
    open: Mutex<HashMap<String, (std::fs::File, u64)>>,
}

impl Archive {
    /// Appends the records to the shard's file, starting a new one whenever a
    /// file reaches the size limit; syncs each file written before returning.
    fn append(&self, shard_id: &str, records: &[Record]) -> std::io::Result<()> {
        let mut open = self.open.lock().unwrap();
        let mut current = open.remove(shard_id);
        for r in records {
            let (mut file, size) = match current.take() {
                Some((file, size)) if size < self.max_file_bytes => (file, size),
                full => {
                    if let Some((file, _)) = full {
                        file.sync_data()?;
                    }
                    let dir = self.dir.join(shard_id);
                    std::fs::create_dir_all(&dir)?;
                    // A process of its own name: a file a crash cut is never appended to.
                    let name = format!("{}-{}.jsonl", r.sequence_number, std::process::id());
                    (std::fs::OpenOptions::new().create(true).append(true).open(dir.join(name))?, 0)
                }
            };
            let data = base64::engine::general_purpose::STANDARD.encode(&r.data);
            let line = serde_json::json!({"seq": r.sequence_number, "sub": r.sub_sequence, "key": r.partition_key, "data": data});
            let line = format!("{line}\n");
            file.write_all(line.as_bytes())?;
            current = Some((file, size + line.len() as u64));
        }
        if let Some((file, size)) = current {
            file.sync_data()?;
            open.insert(shard_id.to_owned(), (file, size));
        }
        Ok(())
    }
}

#[async_trait]
impl RecordProcessor for Archive {
    async fn process(&self, shard_id: &str, records: &[Record], _deadline: Option<tokio::time::Instant>) -> Durable {
        match self.append(shard_id, records) {
            Ok(()) => Durable::All,
            Err(e) => {
                // Nothing is checkpointed; the engine hands the slice again after a pause.
                eprintln!("archive: cannot write {shard_id}: {e}");
                self.open.lock().unwrap().remove(shard_id);
                Durable::Before(0)
            }
        }
    }

    fn lease_lost(&self, shard_id: &str) {
        self.open.lock().unwrap().remove(shard_id);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [stream, lease_table, dir, rest @ ..] = &args[..] else {
        anyhow::bail!("usage: archive STREAM LEASE_TABLE DIR [MAX_FILE_BYTES]");
    };
    let max_file_bytes = rest.first().map_or(Ok(64 << 20), |b| b.parse())?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let store = DynamoLeaseStore::new(aws_sdk_dynamodb::Client::new(&aws), lease_table);
    store.ensure_table().await?;
    let archive = Archive { dir: dir.into(), max_file_bytes, open: Mutex::default() };
    let worker = Worker::new(
        WorkerConfig::new(format!("archive-{}", std::process::id())),
        Arc::new(KinesisStream::new(aws_sdk_kinesis::Client::new(&aws), stream)),
        Arc::new(store),
        Arc::new(archive),
    );
    // SIGTERM or Ctrl-C: finish the slice in flight, checkpoint, release the leases.
    worker.run(stream_worker::shutdown::on_signals()?).await?;
    Ok(())
}
