//! Data-parallel training over the cores of one machine: the batch is
//! split in `REPLICAS` fixed parts, each trained by its own copy of the
//! step (`Shard::part`, as MPI splits it over processes) on its own
//! thread, with the gradients and batch statistics summed between them
//! (`nnc_runtime::ThreadTeam`). A step then forks and joins once, not once
//! per product and routine, and each core keeps its half of the
//! activations in its own cache. A whole epoch forks and joins once: each
//! replica selects its own rows of every batch and runs its steps one
//! after another (`Trainer::epoch_replicated`), so no step waits for
//! sleeping threads to wake or for the main thread to prepare the next.
//!
//! Where the weights and optimizer state outgrow the caches
//! (`SHARED_STORE_FROM`) and the plans allow (`plan::share_store`: the
//! update element by element after the sums), the replicas share the
//! trainer's store, each writing its own part of the summed update: each
//! pass of the update over VGG-16's 553 MB of weights, bound by memory,
//! then reads and writes half as much, and so does each product of a
//! weight of a million values, which the replicas then compute together
//! (`plan::team_products`). Otherwise every replica applies
//! the same summed update to its own copy of the store, so the copies
//! stay equal bit for bit. Either way, the number of parts does not
//! depend on the cores, so neither do the results. Health's sums over a
//! shared update are each replica's over its part, added up as the
//! activations' sums over its rows are.
//!
//! The replicas' threads flush subnormal floats to zero
//! (`nnc_runtime::flush_subnormals`): a Fashion-MNIST epoch took 1–2 % longer
//! on the microcode assists they cost in the backward pass.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use nnc_runtime::ThreadTeam;
use rayon::ThreadPool;
use rayon::prelude::*;

use super::health::HealthSums;
use super::{Compiled, Hypers, Stopped, Store, TrainError, Trainer, rows_of};
use crate::check::Layer;
use crate::data::Dataset;
use crate::ir::{Shard, TrainGraph};
use crate::pipeline;
use store::{ReplicaStore, replica_stores};

/// Parts of every batch: two, whatever the cores (their results would
/// otherwise depend on the machine).
pub const REPLICAS: usize = 2;

/// The most steps `step_while` plans for one replicated epoch: its
/// learning rates and batch order are planned in full.
const BENCH_EPOCH_STEPS: usize = 1024;

/// Multiply-adds of a replica's step (forward, and twice that backward)
/// below which splitting it costs more than it gains. The convolutional
/// autoencoder's step (2.65 M a replica at batch 32) ran 31 k samples/s
/// unsplit, its threads woken about ten times a step, and 133 k split.
const MIN_STEP_MACS: u64 = 2_000_000;

/// Multiply-adds a replica's step must do per parameter, whose gradient it
/// exchanges: the bundled LeNet (about 600) and Fashion-MNIST CNN (about
/// 1,400) train faster split, an MLP at a few hundred slower.
const MACS_PER_EXCHANGED: u64 = 500;

/// The same for a model with a recurrent layer, whose step is a chain of
/// small kernels, time step after time step, that no kernel spreads over
/// the cores: split, lstm(8) and rnn(8) over the digits' rows (about 280
/// and 200 a parameter, 0.2 M and 0.05 M multiply-adds a replica) trained
/// 1.2–1.6× faster, `models/lstm_mnist.nn` 1.23×. A large embedding
/// table, whose gradient the replicas would exchange at every step for
/// few multiply-adds, keeps its steps whole.
const RECURRENT_MACS_PER_EXCHANGED: u64 = 50;

/// Values of the store (weights and optimizer state) from which the
/// replicas share it: past the second-level caches the update's passes
/// stream from memory, and sharing halves them; below, a copy for each
/// replica stays in its core's caches, where sharing would move the
/// other half across the cores at every step (`separable_digits`, a few
/// thousand weights, trained 4 % slower sharing them).
const SHARED_STORE_FROM: usize = 1 << 20;

/// The replicas' threads, their steps per batch size, and the copies of the
/// store of every replica but the first (which trains the trainer's own).
pub struct Replicas {
    team: ThreadTeam,
    /// One pool per replica, each with its share of rayon's threads.
    pools: Vec<ThreadPool>,
    stores: Vec<Store>,
    /// Whether `stores` hold the trainer's store as it is now.
    synced: bool,
    /// Whether the steps share the trainer's store (then `stores` is empty).
    shared: bool,
    steps: HashMap<usize, Vec<Compiled<TrainGraph>>>,
    /// Each replica's observed health values of the latest step.
    observed: Vec<Vec<f32>>,
    /// For each observed value, whether the replicas' values add up to the
    /// step's (`adds_up`), decided as their steps compile.
    adds_up: Vec<bool>,
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
            shared: false,
            steps: HashMap::new(),
            observed: vec![vec![]; REPLICAS],
            adds_up: vec![],
        })
    }

    /// The trainer's store changed outside a replicated step: the copies are
    /// taken again before the next one.
    pub fn unsync(&mut self) {
        self.synced = false;
    }

    /// Copies `store` for every replica but the first, unless the copies
    /// hold it already or the replicas share it.
    fn sync(&mut self, store: &Store) {
        if !self.shared && !self.synced {
            self.stores = vec![store.clone(); REPLICAS - 1];
            self.synced = true;
        }
    }
}

/// Runs `calls[r]` on `pools[r]`, all at once, and returns when all have.
/// The caller runs `meanwhile`, then sleeps (rayon would have it spin,
/// taking a core from the replicas).
fn run_side_by_side(pools: &[ThreadPool], calls: Vec<impl FnOnce() + Send>, meanwhile: &mut dyn FnMut()) {
    let finished = (Mutex::new(0), Condvar::new());
    let count = calls.len();
    in_scopes(pools, calls, &finished, &mut || {
        meanwhile();
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
    wait: &mut dyn FnMut(),
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
    /// Optimizer steps on one batch for as long as `go_on(steps taken,
    /// when the last of them finished)` holds, taken as `fit_epoch` takes
    /// them: where every step replicates, in replicated epochs over the
    /// batch again and again (a few steps may run after `go_on` says stop,
    /// while the replicas hear it; `go_on` hears their steps in bursts, each
    /// with the time it finished), else one by one. Returns how many steps
    /// ran. What `nnc bench` measures.
    pub fn step_while(
        &mut self,
        x: &[f32],
        y: &[f32],
        rows: usize,
        lr: f64,
        mut go_on: impl FnMut(usize, Instant) -> bool,
    ) -> Result<usize, TrainError> {
        if let Some(replicas) = self.replicas.as_mut() {
            replicas.unsync();
        }
        let mut steps = 0;
        if self.replicates_epoch(rows, rows) {
            steps = self.replicated_steps_while(x, y, rows, lr, &mut go_on)?;
        }
        while go_on(steps, Instant::now()) {
            self.step_as_fitted(x, y, rows, lr)?;
            steps += 1;
        }
        Ok(steps)
    }

    /// `step_while`'s replicated epochs, each twice as long as the one
    /// before (up to `BENCH_EPOCH_STEPS`), until `go_on` says stop or a
    /// loss is not finite (the steps then go on one by one, as they did).
    fn replicated_steps_while(
        &mut self,
        x: &[f32],
        y: &[f32],
        rows: usize,
        lr: f64,
        go_on: &mut dyn FnMut(usize, Instant) -> bool,
    ) -> Result<usize, TrainError> {
        let batch = Dataset {
            rows,
            width: x.len() / rows,
            x: x.to_vec(),
            target_width: y.len() / rows,
            y: y.to_vec(),
            columns: Vec::new(),
        };
        let (mut steps, mut epoch_steps) = (0, 1);
        while go_on(steps, Instant::now()) {
            let order: Vec<usize> = (0..epoch_steps).flat_map(|_| 0..rows).collect();
            let lrs = vec![lr; epoch_steps];
            let mut after_step = |step: usize, _, _, finished| go_on(steps + step + 1, finished);
            let (stopped, ran) = self.epoch_replicated(&batch, &order, rows, &lrs, &mut after_step)?;
            steps += ran;
            if matches!(stopped, Some(Stopped::NonFinite { .. })) {
                break;
            }
            epoch_steps = (2 * epoch_steps).min(BENCH_EPOCH_STEPS);
        }
        Ok(steps)
    }

    /// A step on all `rows` rows of a batch as `fit_epoch` takes it: over the
    /// replicas where they apply, else this process's rows (`step`).
    pub(super) fn step_as_fitted(&mut self, x: &[f32], y: &[f32], rows: usize, lr: f64) -> Result<f64, TrainError> {
        if self.replicates(rows) { self.step_replicated(x, y, rows, lr) } else { self.step(x, y, rows, lr) }
    }

    /// Whether this trainer's steps of `rows` rows run as replicas: compiled
    /// gradient steps alone in their process, over images (dense products
    /// thread well by themselves: splitting MLP steps measured slower) with
    /// enough work, and enough of it per gradient value the replicas
    /// exchange; or through a recurrent layer, at any size.
    pub fn replicates(&self, rows: usize) -> bool {
        let nodes = &self.model.checked.nodes;
        let over_images = nodes.iter().any(|n| {
            matches!(
                n.layer,
                Layer::Conv1d { .. } | Layer::Conv2d { .. } | Layer::MaxPool { .. } | Layer::AvgPool { .. }
            )
        });
        let recurrent = nodes.iter().any(|n| matches!(n.layer, Layer::Recurrent { .. }));
        let params: u64 = nodes.iter().map(|n| n.params as u64).sum();
        let per_replica = nodes.iter().map(|n| n.macs).sum::<u64>().saturating_mul(3 * (rows / REPLICAS) as u64);
        let pays = if recurrent {
            per_replica >= RECURRENT_MACS_PER_EXCHANGED.saturating_mul(params)
        } else {
            over_images && per_replica >= MIN_STEP_MACS && per_replica >= MACS_PER_EXCHANGED.saturating_mul(params)
        };
        self.model.backend.compiles() && self.team.is_none() && self.has_gradients() && rows >= 2 * REPLICAS && pays
    }

    /// One optimizer step on all `rows` rows of a batch, split over the replicas.
    pub(super) fn step_replicated(&mut self, x: &[f32], y: &[f32], rows: usize, lr: f64) -> Result<f64, TrainError> {
        self.compile_replicas(rows)?;
        self.steps_done += 1;
        let hypers = self.hypers(lr);
        let replicas = self.replicas.as_mut().ok_or_else(|| TrainError::Internal("replicas not started".into()))?;
        replicas.sync(&self.model.store);
        let observed_len = self.health.as_ref().map_or(0, |h| h.observed_len());
        replicas.observed.iter_mut().for_each(|o| o.resize(observed_len, 0.0));
        let Replicas { team, pools, stores, steps, observed, adds_up, .. } = replicas;
        let steps = steps.get_mut(&rows).ok_or_else(|| TrainError::Internal("replica steps".into()))?;
        let mut replica_stores = replica_stores(&mut self.model.store, stores);
        let mut calls = Vec::with_capacity(REPLICAS);
        for ((rank, step), store) in steps.iter_mut().enumerate().zip(&mut replica_stores) {
            let shard = Shard::part(rows, rank, REPLICAS);
            let (x, y) = (rows_of(x, rows, shard), if y.is_empty() { y } else { rows_of(y, rows, shard) });
            let call = store.call(step, x, y, &hypers).map_err(TrainError::Internal)?;
            let team = &*team;
            calls.push(move || team.member(rank, call));
        }
        run_side_by_side(pools, calls, &mut || {});
        let mut loss = 0.0;
        for ((step, store), observed) in steps.iter().zip(&replica_stores).zip(observed.iter_mut()) {
            // Each replica's loss is its rows' share of the batch's mean.
            loss += f64::from(store.results(step, observed).map_err(TrainError::Internal)?);
        }
        if let Some(h) = self.health.as_mut() {
            h.observed.copy_from_slice(&observed[0]);
            for other in &observed[1..] {
                let added = h.observed.iter_mut().zip(other).zip(&*adds_up).filter(|(_, adds)| **adds);
                added.for_each(|((s, &v), _)| *s += v);
            }
            h.add_step(rows);
        }
        Ok(loss)
    }

    /// Whether every batch of an epoch of `rows` rows in batches of `batch`
    /// runs as replicas (`epoch_replicated`).
    pub(super) fn replicates_epoch(&self, rows: usize, batch: usize) -> bool {
        let full = batch.min(rows);
        full > 0 && self.replicates(full) && (rows.is_multiple_of(full) || self.replicates(rows % full))
    }

    /// Every step of an epoch on the replicas: `order`'s rows in batches of
    /// `batch`, step i at learning rate `lrs[i]`. Each replica selects its
    /// own rows of every batch and runs its steps one after the other; the
    /// replicas meet only in their steps' sums, and in one more per step
    /// (their losses, their health sums, a request to stop), so
    /// no step waits for the main thread or for threads to wake. The main
    /// thread hears each step's loss meanwhile (`after_step(step, rows,
    /// loss, when it finished)`, false to stop). The same updates, losses
    /// and health as `step_replicated` step by step. Returns why the steps
    /// stopped early, if they did, and how many ran.
    pub(super) fn epoch_replicated(
        &mut self,
        train: &Dataset,
        order: &[usize],
        batch: usize,
        lrs: &[f64],
        after_step: &mut dyn FnMut(usize, usize, f64, Instant) -> bool,
    ) -> Result<(Option<Stopped>, usize), TrainError> {
        let full = batch.min(order.len());
        let last = order.len() % full.max(1);
        for rows in [full, last].into_iter().filter(|&rows| rows > 0) {
            self.compile_replicas(rows)?;
        }
        let first = self.steps_done;
        let hypers: Vec<Hypers> =
            lrs.iter().enumerate().map(|(i, &lr)| self.hypers_of_step(first + i as u64 + 1, lr)).collect();
        let targets = !self.model.checked.targets.is_empty();
        let internal = |what: &str| TrainError::Internal(format!("replicated epoch: {what}"));
        let replicas = self.replicas.as_mut().ok_or_else(|| internal("replicas not started"))?;
        replicas.sync(&self.model.store);
        let observed_len = self.health.as_ref().map_or(0, |h| h.observed_len());
        replicas.observed.iter_mut().for_each(|o| o.resize(observed_len, 0.0));
        let Replicas { team, pools, stores, steps, observed, adds_up, .. } = replicas;
        let [full_steps, mut last_steps] = steps.get_disjoint_mut([&full, &last]);
        let full_steps = full_steps.ok_or_else(|| internal("no step for the batch"))?;
        let mut stores = replica_stores(&mut self.model.store, stores);
        // Every call's buffers are checked before any replica starts: one
        // failing in the middle would leave the others waiting in a sum.
        for (rank, store) in stores.iter_mut().enumerate() {
            let sized = [(full, &mut full_steps[rank])]
                .into_iter()
                .chain(last_steps.as_deref_mut().map(|s| (last, &mut s[rank])));
            for (rows, step) in sized {
                let shard = Shard::part(rows, rank, REPLICAS);
                let x = vec![0.0; shard.rows * train.width];
                let y = vec![0.0; if targets { shard.rows * train.target_width } else { 0 }];
                drop(store.call(step, &x, &y, &hypers[0]).map_err(TrainError::Internal)?);
            }
        }
        let plan = EpochPlan { train, order, full, hypers: &hypers, targets, adds_up, stop: &AtomicBool::new(false) };
        let (reports, heard) = channel();
        let mut outcomes: Vec<Result<(Option<Stopped>, usize), String>> =
            (0..REPLICAS).map(|_| Err("the replica did not run".into())).collect();
        let mut health = self.health.as_mut();
        let lasts: Vec<Option<&mut Compiled<TrainGraph>>> = match last_steps {
            Some(steps) => steps.iter_mut().map(Some).collect(),
            None => (0..REPLICAS).map(|_| None).collect(),
        };
        let mut calls = Vec::with_capacity(REPLICAS);
        let parts = full_steps.iter_mut().zip(lasts).zip(stores).zip(observed.iter_mut()).zip(&mut outcomes);
        for (rank, ((((full_step, last_step), store), observed), outcome)) in parts.enumerate() {
            let own = Own {
                steps: (full_step, last_step),
                store,
                observed,
                health: if rank == 0 { health.take() } else { None },
                reports: (rank == 0).then(|| reports.clone()),
            };
            let (team, plan) = (&*team, &plan);
            calls.push(move || *outcome = team.member(rank, || replica_epoch(rank, plan, own)));
        }
        drop(reports);
        let mut go_on = true;
        run_side_by_side(pools, calls, &mut || {
            // Until the first replica has sent its last report.
            for (step, rows, loss, finished) in heard.iter().flatten() {
                if go_on && loss.is_finite() {
                    go_on = after_step(step, rows, loss, finished);
                    plan.stop.store(!go_on, Ordering::Relaxed);
                }
            }
        });
        let mut outcomes = outcomes.into_iter();
        let (stopped, ran) = outcomes.next().ok_or_else(|| internal("no replica"))?.map_err(TrainError::Internal)?;
        for other in outcomes {
            other.map_err(TrainError::Internal)?;
        }
        // Asked to stop after the replicas' last step: the epoch is abandoned all the same.
        let stopped = stopped.or((!go_on).then_some(Stopped::Interrupted));
        self.steps_done += ran as u64;
        Ok((stopped, ran))
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
        // The replicas share a large store unless a plan cannot share it
        // out (`share_store`); health's sums over the update are then each
        // over a replica's part of it, added up like the activations'.
        let large = self.model.store.data().len() >= SHARED_STORE_FROM;
        let share = large && (replicas.steps.is_empty() || replicas.shared);
        // Each replica's step compiles on its own core.
        let steps = (0..REPLICAS)
            .into_par_iter()
            .map(|r| {
                let shard = Shard::part(rows, r, REPLICAS);
                let part = share.then_some((r, REPLICAS));
                pipeline::compile_step(&self.model.checked, &self.config, (shard, part), observe, self.model.backend)
                    .map_err(|d| TrainError::Compile(d.message))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let shared = steps.iter().all(|step| step.shares_store());
        if !replicas.steps.is_empty() && shared != replicas.shared {
            // Every batch size's plan has the same structure.
            return Err(TrainError::Internal("the replicas' steps disagree on sharing the store".into()));
        }
        if share && !shared && steps.iter().any(|step| step.shares_store()) {
            return Err(TrainError::Internal("some replicas' steps share the store, some do not".into()));
        }
        replicas.shared = shared;
        if shared {
            replicas.stores.clear();
        }
        let observed: usize =
            steps[0].graph.observed.iter().map(|&v| crate::shape::numel(&steps[0].graph.graph.node(v).shape)).sum();
        if let Some(h) = self.health.as_mut().filter(|h| h.observed_len() != observed) {
            h.without_activations();
        }
        replicas.adds_up = self.health.as_mut().map_or_else(Vec::new, |h| {
            let (len, activations) = (h.observed_len(), h.activation_sums_mut().len());
            adds_up(&steps[0], len, activations)
        });
        replicas.steps.insert(rows, steps);
        Ok(())
    }
}

/// What every replica of an epoch shares (`Trainer::epoch_replicated`).
struct EpochPlan<'a> {
    train: &'a Dataset,
    order: &'a [usize],
    /// Rows of a whole batch (the last may have fewer).
    full: usize,
    /// Each step's scalars.
    hypers: &'a [Hypers],
    targets: bool,
    /// Whether the replicas' observed values add up to the step's (`adds_up`).
    adds_up: &'a [bool],
    /// Set by the main thread when the epoch is to stop.
    stop: &'a AtomicBool,
}

/// For each of a step's `len` observed values, the last `activations` of
/// them the activations' health, whether the replicas' values add up to
/// the step's: the activations' sums (over each replica's rows) and
/// health's sums over each one's part of a shared store
/// (`Compiled::observed_in_parts`). Each replica has the others whole.
fn adds_up(step: &Compiled<TrainGraph>, len: usize, activations: usize) -> Vec<bool> {
    let mut adds_up = step.observed_in_parts();
    adds_up.resize(len, false);
    adds_up[len.saturating_sub(activations)..].fill(true);
    adds_up
}

/// What one replica of an epoch has to itself: its steps for whole batches
/// and for the last (when it is shorter), its store and observed values;
/// the first replica also the health sums and the channel to the main thread.
struct Own<'a> {
    steps: (&'a mut Compiled<TrainGraph>, Option<&'a mut Compiled<TrainGraph>>),
    store: ReplicaStore<'a>,
    observed: &'a mut Vec<f32>,
    health: Option<&'a mut HealthSums>,
    reports: Option<Sender<Vec<Report>>>,
}

/// One replica's steps of an epoch, on the thread of a `ThreadTeam` member
/// `rank`. After each step the members sum, in one exchange, each one's
/// loss (in its own slot, so each stays exact), a request to stop (the
/// first member's), and their health sums (`adds_up`): every member then
/// stops at the same step. Returns why the steps stopped early, if they
/// did, and how many ran.
fn replica_epoch(rank: usize, plan: &EpochPlan, own: Own) -> Result<(Option<Stopped>, usize), String> {
    let Own { steps: (full, mut last), mut store, observed, mut health, reports } = own;
    if observed.len() != plan.adds_up.len() {
        return Err("observed values that the replicas' steps do not describe".into());
    }
    let (mut exchange, mut summed) =
        (vec![0.0; REPLICAS + 1 + observed.len()], vec![0.0; REPLICAS + 1 + observed.len()]);
    let mut rows = plan.train.select(&[]);
    let (mut heard, mut last_sent) = (Vec::with_capacity(REPORTS_AT_ONCE), Instant::now());
    let chunks = plan.order.chunks(plan.full);
    let count = chunks.len();
    for (i, chunk) in chunks.enumerate() {
        let shard = Shard::part(chunk.len(), rank, REPLICAS);
        plan.train.select_into(&chunk[shard.first..shard.first + shard.rows], &mut rows);
        let y: &[f32] = if plan.targets { &rows.y } else { &[] };
        let step = if chunk.len() == plan.full {
            &mut *full
        } else {
            last.as_deref_mut().ok_or("no step for the last batch")?
        };
        store.call(step, &rows.x, y, &plan.hypers[i])?();
        let loss = store.results(step, observed)?;
        exchange.fill(0.0);
        exchange[rank] = loss;
        exchange[REPLICAS] = f32::from(u8::from(rank == 0 && plan.stop.load(Ordering::Relaxed)));
        // What this replica adds to the team's observed values: the first
        // replica's alone of those each has whole.
        for ((to, &value), &adds) in exchange[REPLICAS + 1..].iter_mut().zip(observed.iter()).zip(plan.adds_up) {
            *to = if adds || rank == 0 { value } else { 0.0 };
        }
        nnc_runtime::all_reduce(&exchange, &mut summed);
        // Each replica's loss is its rows' share of the batch's mean.
        let mut loss = 0.0;
        for &share in &summed[..REPLICAS] {
            loss += f64::from(share);
        }
        if let Some(h) = health.as_deref_mut() {
            h.observed.copy_from_slice(&summed[REPLICAS + 1..]);
            h.add_step(chunk.len());
        }
        let stopped = if !loss.is_finite() {
            Some(Stopped::NonFinite { step: i })
        } else if summed[REPLICAS] != 0.0 {
            Some(Stopped::Interrupted)
        } else {
            None
        };
        if let Some(reports) = &reports {
            heard.push((i, chunk.len(), loss, Instant::now()));
            let due = heard.len() == REPORTS_AT_ONCE || last_sent.elapsed() >= REPORT_AT_LEAST_EVERY;
            if due || stopped.is_some() || i + 1 == count {
                // The main thread hears until the epoch ends, unless it failed.
                let _ = reports.send(std::mem::take(&mut heard));
                last_sent = Instant::now();
            }
        }
        if stopped.is_some() {
            return Ok((stopped, i + 1));
        }
    }
    Ok((None, count))
}

/// A step's number in the epoch, rows, loss and when it finished, as the
/// main thread hears it.
type Report = (usize, usize, f64, Instant);

/// Steps the first replica reports at once: the main thread, woken for
/// each, would take a core from a replica (and the other would wait for
/// it) hundreds of times an epoch.
const REPORTS_AT_ONCE: usize = 16;

/// Longest the first replica holds its reports, so that slow steps still
/// move the progress bar and a Ctrl-C is heard within a step or so.
const REPORT_AT_LEAST_EVERY: Duration = Duration::from_millis(50);

mod store;
#[cfg(test)]
mod tests;
