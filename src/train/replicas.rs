//! Data-parallel training over the cores of one machine: the batch is
//! split in `REPLICAS` fixed parts, each trained by its own copy of the
//! step (`Shard::part`, as MPI splits it over processes) on its own
//! thread, with the gradients and batch statistics summed between them
//! (`nnc_runtime::ThreadTeam`). A step then forks and joins once, not once
//! per product and routine, and each core keeps its half of the
//! activations in its own cache.
//!
//! Every replica applies the same summed update to its own copy of the
//! store, so the copies stay equal bit for bit. The number of parts does
//! not depend on the cores, so neither do the results.
//!
//! The replicas' threads flush subnormal floats to zero
//! (`nnc_runtime::flush_subnormals`): a Fashion-MNIST epoch took 1–2 % longer
//! on the microcode assists they cost in the backward pass.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

use nnc_runtime::ThreadTeam;
use rayon::ThreadPool;
use rayon::prelude::*;

use super::{Backend, Compiled, Store, TrainError, Trainer, rows_of};
use crate::check::Layer;
use crate::ir::{Shard, TrainGraph};
use crate::pipeline;

/// Parts of every batch: two, whatever the cores (their results would
/// otherwise depend on the machine).
pub const REPLICAS: usize = 2;

/// Multiply-adds of a replica's step (forward, and twice that backward)
/// below which splitting it costs more than it gains.
const MIN_STEP_MACS: u64 = 4_000_000;

/// Multiply-adds a replica's step must do per parameter, whose gradient it
/// exchanges: the bundled LeNet (about 600) and Fashion-MNIST CNN (about
/// 1,400) train faster split, an MLP at a few hundred slower.
const MACS_PER_EXCHANGED: u64 = 500;

/// The replicas' threads, their steps per batch size, and the copies of the
/// store of every replica but the first (which trains the trainer's own).
pub struct Replicas {
    team: ThreadTeam,
    /// One pool per replica, each with its share of rayon's threads.
    pools: Vec<ThreadPool>,
    stores: Vec<Store>,
    /// Whether `stores` hold the trainer's store as it is now.
    synced: bool,
    steps: HashMap<usize, Vec<Compiled<TrainGraph>>>,
    /// Each replica's observed health values of the latest step.
    observed: Vec<Vec<f32>>,
}

impl Replicas {
    fn new() -> Result<Replicas, String> {
        let threads = (rayon::current_num_threads() / REPLICAS).max(1);
        let pools = (0..REPLICAS)
            .map(|r| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(move |i| format!("nnc-replica-{r}-{i}"))
                    .start_handler(|_| nnc_runtime::flush_subnormals())
                    .build()
                    .map_err(|e| format!("cannot start the training threads: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Replicas {
            team: ThreadTeam::new(REPLICAS),
            pools,
            stores: vec![],
            synced: false,
            steps: HashMap::new(),
            observed: vec![vec![]; REPLICAS],
        })
    }

    /// The trainer's store changed outside a replicated step: the copies are
    /// taken again before the next one.
    pub fn unsync(&mut self) {
        self.synced = false;
    }
}

/// Runs `calls[r]` on `pools[r]`, all at once, and returns when all have.
/// The caller sleeps meanwhile (rayon would have it spin, taking a core
/// from the replicas).
fn run_side_by_side(pools: &[ThreadPool], calls: Vec<impl FnOnce() + Send>) {
    let finished = (Mutex::new(0), Condvar::new());
    let count = calls.len();
    in_scopes(pools, calls, &finished, &|| {
        let (lock, signal) = &finished;
        let mut done = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *done < count {
            done = signal.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    });
}

/// Spawns each call in its pool's scope, nested, and runs `wait` inside them all.
fn in_scopes<'a>(
    pools: &[ThreadPool],
    mut calls: Vec<impl FnOnce() + Send + 'a>,
    finished: &'a (Mutex<usize>, Condvar),
    wait: &(dyn Fn() + Sync),
) {
    /// Counts its call as finished when dropped, also when the call unwinds
    /// (the scope then passes the panic on, instead of `wait` waiting forever).
    struct Finished<'a>(&'a (Mutex<usize>, Condvar));
    impl Drop for Finished<'_> {
        fn drop(&mut self) {
            *self.0.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            self.0.1.notify_one();
        }
    }
    let Some(call) = calls.pop() else { return wait() };
    let (pool, others) = pools.split_last().expect("one pool per call");
    pool.in_place_scope(|scope| {
        scope.spawn(move |_| {
            let _finished = Finished(finished);
            call();
        });
        in_scopes(others, calls, finished, wait);
    });
}

impl Trainer {
    /// Optimizer steps on one batch for as long as `go_on(steps taken)`
    /// holds, each taken as `fit_epoch` takes it (split over the replicas
    /// where they apply); returns the last loss. What `nnc bench` measures.
    pub fn step_while(
        &mut self,
        x: &[f32],
        y: &[f32],
        rows: usize,
        lr: f64,
        mut go_on: impl FnMut(usize) -> bool,
    ) -> Result<f64, TrainError> {
        if let Some(replicas) = self.replicas.as_mut() {
            replicas.unsync();
        }
        let (mut loss, mut steps) = (f64::NAN, 0);
        while go_on(steps) {
            loss = self.step_as_fitted(x, y, rows, lr)?;
            steps += 1;
        }
        Ok(loss)
    }

    /// A step on all `rows` rows of a batch as `fit_epoch` takes it: over the
    /// replicas where they apply, else this process's rows (`step`).
    pub(super) fn step_as_fitted(&mut self, x: &[f32], y: &[f32], rows: usize, lr: f64) -> Result<f64, TrainError> {
        if self.replicates(rows) { self.step_replicated(x, y, rows, lr) } else { self.step(x, y, rows, lr) }
    }

    /// Whether this trainer's steps of `rows` rows run as replicas: compiled
    /// gradient steps alone in their process, over images (dense products
    /// thread well by themselves: splitting MLP steps measured slower),
    /// with enough work, and enough of it per gradient value the replicas
    /// exchange.
    pub fn replicates(&self, rows: usize) -> bool {
        let nodes = &self.model.checked.nodes;
        let over_images = nodes.iter().any(|n| {
            matches!(
                n.layer,
                Layer::Conv1d { .. } | Layer::Conv2d { .. } | Layer::MaxPool { .. } | Layer::AvgPool { .. }
            )
        });
        let params: u64 = nodes.iter().map(|n| n.params as u64).sum();
        let per_replica = nodes.iter().map(|n| n.macs).sum::<u64>().saturating_mul(3 * (rows / REPLICAS) as u64);
        self.model.backend == Backend::Jit
            && self.team.is_none()
            && self.has_gradients()
            && over_images
            && rows >= 2 * REPLICAS
            && per_replica >= MIN_STEP_MACS
            && per_replica >= MACS_PER_EXCHANGED.saturating_mul(params)
    }

    /// One optimizer step on all `rows` rows of a batch, split over the replicas.
    pub(super) fn step_replicated(&mut self, x: &[f32], y: &[f32], rows: usize, lr: f64) -> Result<f64, TrainError> {
        self.compile_replicas(rows)?;
        self.steps_done += 1;
        let hypers = self.hypers(lr);
        let replicas = self.replicas.as_mut().ok_or_else(|| TrainError::Internal("replicas not started".into()))?;
        if !replicas.synced {
            replicas.stores = vec![self.model.store.clone(); REPLICAS - 1];
            replicas.synced = true;
        }
        let observed_len = self.health.as_ref().map_or(0, |h| h.observed_len());
        replicas.observed.iter_mut().for_each(|o| o.resize(observed_len, 0.0));
        let Replicas { team, pools, stores, steps, observed, .. } = replicas;
        let steps = steps.get_mut(&rows).ok_or_else(|| TrainError::Internal("replica steps".into()))?;
        let store_of = std::iter::once(&mut self.model.store).chain(stores.iter_mut());
        let mut calls = Vec::with_capacity(REPLICAS);
        for ((rank, step), store) in steps.iter_mut().enumerate().zip(store_of) {
            let shard = Shard::part(rows, rank, REPLICAS);
            let (x, y) = (rows_of(x, rows, shard), if y.is_empty() { y } else { rows_of(y, rows, shard) });
            let call = step.call(store, x, y, &hypers).map_err(TrainError::Internal)?;
            let team = &*team;
            calls.push(move || team.member(rank, call));
        }
        run_side_by_side(pools, calls);
        let store_of = std::iter::once(&self.model.store).chain(stores.iter());
        let mut loss = 0.0;
        for ((step, store), observed) in steps.iter().zip(store_of).zip(observed.iter_mut()) {
            // Each replica's loss is its rows' share of the batch's mean.
            loss += f64::from(step.results(store, observed).map_err(TrainError::Internal)?);
        }
        if let Some(h) = self.health.as_mut() {
            // The parameters' health is the same in every replica; the
            // activations' sums are over each one's rows.
            h.observed.copy_from_slice(&observed[0]);
            let params = h.observed_len() - h.activation_sums_mut().len();
            for other in &observed[1..] {
                h.activation_sums_mut().iter_mut().zip(&other[params..]).for_each(|(s, &v)| *s += v);
            }
            h.add_step(rows);
        }
        Ok(loss)
    }

    /// Starts the replicas' threads (once) and compiles (once per batch
    /// size) every replica's step for its part of `rows`.
    pub(super) fn compile_replicas(&mut self, rows: usize) -> Result<(), TrainError> {
        let replicas = match &mut self.replicas {
            Some(replicas) => replicas,
            none => none.insert(Replicas::new().map_err(TrainError::Internal)?),
        };
        if replicas.steps.contains_key(&rows) {
            return Ok(());
        }
        let observe = self.health.is_some();
        // Each replica's step compiles on its own core.
        let steps = (0..REPLICAS)
            .into_par_iter()
            .map(|r| {
                let shard = Shard::part(rows, r, REPLICAS);
                pipeline::compile_step(&self.model.checked, &self.config, shard, observe, self.model.backend)
                    .map_err(|d| TrainError::Compile(d.message))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let observed: usize =
            steps[0].graph.observed.iter().map(|&v| crate::shape::numel(&steps[0].graph.graph.node(v).shape)).sum();
        if let Some(h) = self.health.as_mut().filter(|h| h.observed_len() != observed) {
            h.without_activations();
        }
        replicas.steps.insert(rows, steps);
        Ok(())
    }
}
