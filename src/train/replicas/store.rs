//! Where each replica's steps keep the weights: a copy of its own, or the
//! trainer's store, which the replicas share, each writing its own part.

use super::REPLICAS;
use crate::exec::{Compiled, Hypers, Store};
use crate::ir::TrainGraph;
use crate::jit::SharedStore;
use crate::plan::StoreLayout;

/// A replica's weights: a copy of its own, or the trainer's, shared.
pub(super) enum ReplicaStore<'a> {
    Own(&'a mut Store),
    Shared((&'a StoreLayout, SharedStore<'a>)),
}

impl ReplicaStore<'_> {
    /// `step`'s call on these weights (`Compiled::call`).
    pub(super) fn call<'b>(
        &'b mut self,
        step: &'b mut Compiled<TrainGraph>,
        x: &'b [f32],
        y: &'b [f32],
        h: &'b Hypers,
    ) -> Result<impl FnOnce() + Send + 'b, String> {
        let store = match self {
            ReplicaStore::Own(store) => store.exclusive(),
            ReplicaStore::Shared(shared) => *shared,
        };
        step.call(store, x, y, h)
    }

    /// The loss of `step`'s last call, and its observed values.
    pub(super) fn results(&self, step: &Compiled<TrainGraph>, observed: &mut [f32]) -> Result<f32, String> {
        match self {
            ReplicaStore::Own(store) => step.results(store, observed),
            ReplicaStore::Shared(_) => step.own_results(observed),
        }
    }
}

/// Each replica's `ReplicaStore`: the trainer's `store` for all when they
/// share it (`copies` is then empty), else it for the first and the copies
/// for the others.
pub(super) fn replica_stores<'a>(store: &'a mut Store, copies: &'a mut [Store]) -> Vec<ReplicaStore<'a>> {
    if copies.is_empty() {
        let shared = store.shared();
        return (0..REPLICAS).map(|_| ReplicaStore::Shared(shared)).collect();
    }
    std::iter::once(store).chain(copies).map(ReplicaStore::Own).collect()
}
