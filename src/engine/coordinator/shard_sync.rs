//! Shard sync: creating a lease for every shard that has none, and deleting the
//! leases of finished parents.

use std::collections::HashMap;

use super::Worker;
use crate::engine::sync;
use crate::leases::{Cas, StoreError};
use crate::metrics as m;
use crate::model::{HashRange, Lease};
use crate::retrieval::{ClosedShards, Shard};

impl Worker {
    /// Creates a lease for every shard that has none. Shards whose parents are
    /// known start at TRIM_HORIZON (after their parents); the others at the
    /// configured initial position.
    /// Returns how many leases it created.
    pub(super) async fn sync_shards(
        &self,
        ranges: &mut HashMap<String, HashRange>,
        closed: &ClosedShards,
        known: &[Lease],
    ) -> Result<usize, anyhow::Error> {
        let shards = self.stream.list_shards().await.map_err(|e| anyhow::anyhow!("ListShards: {}", e.message))?;
        closed.set(&shards);
        *ranges = shards.iter().filter_map(|s| Some((s.id.clone(), s.hash_range?))).collect();
        // The last take round's rows show every shard's lease most of the time:
        // then there is nothing to create and no need for a consistent scan.
        if !known.is_empty()
            && sync::leases_to_create(&shards, known, self.config.initial_position.checkpoint()).is_empty()
        {
            return Ok(0);
        }
        let leases = self.list().await?;
        let created = self.create_leases(&shards, &leases).await?;
        if created > 0 {
            tracing::info!(created, shards = shards.len(), "shard sync created leases");
        }
        Ok(created)
    }

    pub(super) async fn create_leases(&self, shards: &[Shard], leases: &[Lease]) -> Result<usize, StoreError> {
        let mut created = 0;
        for lease in sync::leases_to_create(shards, leases, self.config.initial_position.checkpoint()) {
            if let Cas::Done(()) = self.store.create(&lease).await? {
                created += 1;
            }
        }
        Ok(created)
    }

    /// Deletes the leases of finished parents whose children all started.
    pub(super) async fn clean_up(&self, leases: &[Lease]) -> Result<(), StoreError> {
        for parent in sync::finished_parents(leases) {
            if let Cas::Done(()) = self.store.delete(parent).await? {
                tracing::info!(shard_id = %parent.key, children = ?parent.children, "finished parent's lease deleted");
            }
        }
        Ok(())
    }

    /// Every lease row, strongly consistent: what shard sync creates leases from.
    pub(super) async fn list(&self) -> Result<Vec<Lease>, StoreError> {
        metrics::counter!(m::LEASE_TABLE_SCANS, "kind" => "sync").increment(1);
        self.store.list().await
    }
}
