//! In-memory [`LeaseStore`], for unit tests of the coordinator and the taker.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{apply, Cas, LeaseStore, StoreError};
use crate::model::{Checkpoint, Lease};

#[derive(Debug, Default)]
pub struct MemoryLeaseStore {
    rows: Mutex<BTreeMap<String, Lease>>,
}

impl MemoryLeaseStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies `next(stored)` if the stored row matches `lease`'s counter (and
    /// owner, when `check_owner`).
    fn cas(&self, lease: &Lease, check_owner: bool, next: impl FnOnce(&Lease) -> Lease) -> Cas<Lease> {
        let mut rows = self.rows.lock().unwrap();
        match rows.get_mut(&lease.key) {
            Some(row) if row.counter == lease.counter && (!check_owner || row.owner == lease.owner) => {
                *row = next(row);
                Cas::Done(row.clone())
            }
            _ => Cas::Lost,
        }
    }
}

#[async_trait]
impl LeaseStore for MemoryLeaseStore {
    async fn ensure_table(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Lease>, StoreError> {
        Ok(self.rows.lock().unwrap().values().cloned().collect())
    }

    async fn create(&self, lease: &Lease) -> Result<Cas<()>, StoreError> {
        let mut rows = self.rows.lock().unwrap();
        if rows.contains_key(&lease.key) {
            return Ok(Cas::Lost);
        }
        rows.insert(lease.key.clone(), lease.clone());
        Ok(Cas::Done(()))
    }

    async fn take(&self, lease: &Lease, owner: &str) -> Result<Cas<Lease>, StoreError> {
        Ok(self.cas(lease, false, |row| apply::take(row, owner)))
    }

    async fn renew(&self, lease: &Lease) -> Result<Cas<Lease>, StoreError> {
        Ok(self.cas(lease, true, apply::renew))
    }

    async fn release(&self, lease: &Lease) -> Result<Cas<Lease>, StoreError> {
        Ok(self.cas(lease, true, apply::release))
    }

    async fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
        children: &[String],
        records: u64,
    ) -> Result<Cas<Lease>, StoreError> {
        Ok(self.cas(lease, true, |row| apply::checkpoint(row, checkpoint, children, records)))
    }

    async fn rewind(&self, lease: &Lease, checkpoint: &Checkpoint) -> Result<Cas<Lease>, StoreError> {
        Ok(self.cas(lease, false, |row| apply::rewind(row, checkpoint)))
    }

    async fn request_handoff(&self, lease: &Lease, to: &str) -> Result<Cas<Lease>, StoreError> {
        Ok(self.cas(lease, true, |row| apply::request_handoff(row, to)))
    }

    async fn delete(&self, lease: &Lease) -> Result<Cas<()>, StoreError> {
        let mut rows = self.rows.lock().unwrap();
        match rows.get(&lease.key) {
            Some(row) if row.counter == lease.counter => {
                rows.remove(&lease.key);
                Ok(Cas::Done(()))
            }
            _ => Ok(Cas::Lost),
        }
    }
}
