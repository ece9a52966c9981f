//! Executables: a planned graph ready to run on either backend — the
//! reference interpreter or the Cranelift JIT — and the flat *store* of
//! parameters and state it reads and updates.
//!
//! One store serves every compiled graph of a model (any batch size, forward
//! passes and training steps): its layout is `plan::StoreLayout`, and a graph
//! is only run on a store whose layout holds its own.

use crate::interp::{self, Bindings};
use crate::ir::{Graph, Op, TrainGraph, ValueId, numel};
use crate::jit::{self, Executable, SharedStore};
use crate::plan::{self, StoreLayout};
use nnc_runtime::Arena;

/// Which executor runs the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Cranelift-compiled kernels (the default).
    Jit,
    /// The compiled kernels, each timed as it runs (`nnc bench --kernels`,
    /// `nnc_runtime::profile`).
    Profiled,
    /// The reference interpreter: plain loops, the oracle.
    Interp,
}

impl Backend {
    /// Whether the graph is compiled (else interpreted).
    pub fn compiles(self) -> bool {
        self != Backend::Interp
    }
}

/// Parameters and state, flat, laid out by `StoreLayout`.
#[derive(Debug, Default)]
pub struct Store {
    /// Written only through `data_mut`, which gives the values a new version.
    /// From a cache line (an `Arena`), as every tensor then is: vector loads
    /// of weights never straddle two lines (a batch-1 MNIST MLP's products
    /// took 8.5 µs on weights 16 bytes off a line, 4.4 µs on a line).
    data: Arena,
    pub layout: StoreLayout,
    /// The version of `data` (`nnc_runtime::fresh_version`): forward passes
    /// keep what they make from the weights (Winograd's filter transforms)
    /// while it stays the same.
    version: u64,
}

impl Clone for Store {
    /// The same values under a version of their own (each copy is written
    /// and dropped on its own).
    fn clone(&self) -> Store {
        Store { data: self.data.clone(), layout: self.layout.clone(), version: nnc_runtime::fresh_version() }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        nnc_runtime::release(self.version);
    }
}

impl PartialEq for Store {
    fn eq(&self, other: &Store) -> bool {
        self.data[..] == other.data[..] && self.layout == other.layout
    }
}

impl Store {
    /// A store for `graph`'s parameters (zero) and states (at their fill).
    pub fn new(graph: &Graph) -> Store {
        let layout = StoreLayout::of(&graph.params, &graph.states);
        let mut data = Arena::zeros(layout.len);
        for (s, &(o, n)) in graph.states.iter().zip(&layout.states) {
            data[o..o + n].fill(s.fill);
        }
        Store { data, layout, version: nnc_runtime::fresh_version() }
    }

    /// A store of `len` zeros and no tensors, for tests of what is copied in.
    #[cfg(test)]
    pub(crate) fn zeros(len: usize) -> Store {
        Store { data: Arena::zeros(len), layout: StoreLayout::default(), version: nnc_runtime::fresh_version() }
    }

    /// The values, to read.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The values, to write: from now on they are a new version (and
    /// nothing made from the old one is kept).
    pub fn data_mut(&mut self) -> &mut [f32] {
        self.renew_version();
        &mut self.data
    }

    /// The values, for steps that write their own parts of them at the
    /// same time (`Compiled::call`): a new version, as `data_mut`.
    pub fn shared(&mut self) -> (&StoreLayout, SharedStore<'_>) {
        self.renew_version();
        (&self.layout, SharedStore::new(&mut self.data))
    }

    /// The values, for one step alone to write (`Compiled::call`): a new
    /// version, as `data_mut`.
    pub fn exclusive(&mut self) -> (&StoreLayout, SharedStore<'_>) {
        self.renew_version();
        (&self.layout, SharedStore::alone(&mut self.data))
    }

    fn renew_version(&mut self) {
        nnc_runtime::release(self.version);
        self.version = nnc_runtime::fresh_version();
    }

    /// Grows the store to `graph`'s layout, which must extend the current one
    /// (a training step adds optimizer state after the model's tensors); the
    /// new states start at their fill.
    pub fn extend_to(&mut self, graph: &Graph) -> Result<(), String> {
        let mut wider = Store::new(graph);
        if !wider.layout.holds(&self.layout) {
            return Err("a training step's store does not extend the model's".into());
        }
        let kept = self.layout.len;
        wider.data[..kept].copy_from_slice(&self.data[..kept]);
        self.renew_version();
        std::mem::swap(&mut self.data, &mut wider.data);
        self.layout = std::mem::take(&mut wider.layout);
        Ok(())
    }

    fn tensors(&self, which: &[(usize, usize)]) -> Vec<Vec<f32>> {
        which.iter().map(|&(o, n)| self.data[o..o + n].to_vec()).collect()
    }

    pub fn params(&self) -> Vec<Vec<f32>> {
        self.tensors(&self.layout.params)
    }

    pub fn set_param(&mut self, p: usize, values: &[f32]) {
        let (o, n) = self.layout.params[p];
        self.data_mut()[o..o + n].copy_from_slice(&values[..n]);
    }

    fn write(&mut self, which: usize, is_state: bool, values: &[f32]) {
        let (o, n) = if is_state { self.layout.states[which] } else { self.layout.params[which] };
        self.data_mut()[o..o + n].copy_from_slice(values);
    }
}

/// A graph ready to run on one backend.
pub struct Compiled<G> {
    pub graph: G,
    /// The store layout the graph was planned for.
    pub layout: StoreLayout,
    exe: Option<Executable>,
}

pub use nnc_runtime::Hypers;

/// Checks `graph` (in debug builds and tests) and compiles it as planned.
fn build(graph: &Graph, plan: impl FnOnce() -> plan::Plan, backend: Backend) -> Result<Option<Executable>, String> {
    if cfg!(debug_assertions) {
        crate::ir::verify(graph)?;
    }
    match backend {
        Backend::Jit => Ok(Some(jit::compile(graph, &plan(), false)?)),
        Backend::Profiled => Ok(Some(jit::compile(graph, &plan(), true)?)),
        Backend::Interp => Ok(None),
    }
}

impl<G> Compiled<G> {
    /// An error unless `store` is laid out for this graph.
    fn check_store(&self, store: &Store) -> Result<(), String> {
        self.check_layout(&store.layout)
    }

    /// An error unless a store laid out as `layout` fits this graph.
    fn check_layout(&self, layout: &StoreLayout) -> Result<(), String> {
        if layout.holds(&self.layout) {
            Ok(())
        } else {
            Err(format!(
                "the parameter store ({} values) is not laid out for this graph ({} values)",
                layout.len, self.layout.len
            ))
        }
    }
}

impl Compiled<TrainGraph> {
    pub fn new(step: TrainGraph, backend: Backend) -> Result<Self, String> {
        Compiled::new_in_part(step, backend, None)
    }

    /// A step compiled as part `index` of `parts` sharing one store, each
    /// writing its own part of it (`plan::share_store`), where its plan
    /// allows (`shares_store`); else as `new` compiles it.
    pub fn new_in_part(mut step: TrainGraph, backend: Backend, part: Option<(usize, usize)>) -> Result<Self, String> {
        if backend.compiles() {
            step.fuse_activations();
        }
        let plan = || {
            let whole = plan::plan_train(&step);
            match part {
                Some(part) => match plan::share_store(&step.graph, whole, part) {
                    Ok(shared) => plan::team_products(&step.graph, shared),
                    Err(whole) => whole,
                },
                None => whole,
            }
        };
        let exe = build(&step.graph, plan, backend)?;
        let layout = StoreLayout::of(&step.graph.params, &step.graph.states);
        Ok(Compiled { graph: step, layout, exe })
    }

    /// Whether the step writes only its part of the store (`new_in_part`).
    pub fn shares_store(&self) -> bool {
        self.exe.as_ref().is_some_and(|exe| exe.shares_store())
    }

    /// For each observed value `results` gives, whether the step computes
    /// it over its part of the store alone (health's sums over the update
    /// loops, `Plan::sums_in_parts`): the parts' values then add up to the
    /// whole step's, where the others are each the whole step's.
    pub fn observed_in_parts(&self) -> Vec<bool> {
        let in_part = |v| self.exe.as_ref().is_some_and(|exe| exe.sums_in_part(v));
        let graph = &self.graph.graph;
        self.graph.observed.iter().flat_map(|&v| std::iter::repeat_n(in_part(v), numel(&graph.node(v).shape))).collect()
    }

    /// The loss of the last compiled run, with its observed values written
    /// to `observed` as `results` does, from the step's own buffers (while
    /// others may be writing a shared store).
    pub fn own_results(&self, observed: &mut [f32]) -> Result<f32, String> {
        let (exe, loss) =
            (self.exe.as_ref().ok_or("the step is not compiled")?, self.graph.graph.loss.ok_or("no loss")?);
        let mut values = [loss].into_iter().chain(self.graph.observed.iter().copied());
        if let Some(v) = values.find(|&v| exe.scratch_value(v).is_none()) {
            return Err(format!("%{} is not in the step's scratch", v.0));
        }
        gather(observed, self.graph.observed.iter().filter_map(|&v| exe.scratch_value(v)));
        Ok(exe.scratch_value(loss).and_then(|l| l.first().copied()).unwrap_or(f32::NAN))
    }

    /// One training step; updates the store in place and returns the loss.
    pub fn run(&mut self, store: &mut Store, x: &[f32], y: &[f32], h: &Hypers) -> Result<f32, String> {
        self.run_observed(store, x, y, h, &mut [])
    }

    /// `run`, writing the values of the step's observed nodes
    /// (`TrainGraph::observed`, in order, each whole) one after another into
    /// `observed`, as far as it reaches.
    pub fn run_observed(
        &mut self,
        store: &mut Store,
        x: &[f32],
        y: &[f32],
        h: &Hypers,
        observed: &mut [f32],
    ) -> Result<f32, String> {
        self.check_store(store)?;
        if let Some(exe) = &mut self.exe {
            exe.run(store.data_mut(), x, y, h)?;
            return self.results(store, observed);
        }
        let loss = self.graph.graph.loss.ok_or("no loss")?;
        let wanted = &self.graph.observed;
        let values = interpret(&self.graph.graph, store, x, y, h)?;
        gather(observed, wanted.iter().map(|v| values[v.0].as_slice()));
        for (p, v) in self.graph.new_params.iter().enumerate() {
            store.write(p, false, &values[v.0]);
        }
        for (s, v) in self.graph.new_states.iter().enumerate() {
            store.write(s, true, &values[v.0]);
        }
        Ok(values[loss.0][0])
    }

    /// `run_observed` of compiled code in two halves, for steps that run
    /// side by side (`train::Replicas`): the call, which may run on another
    /// thread, and then `results` (or `loss`). The store is the step's
    /// alone (`Store::exclusive`), or one the other parts' steps write at
    /// the same time (`Store::shared`), which only a step that
    /// `shares_store` takes.
    pub fn call<'a>(
        &'a mut self,
        (layout, store): (&StoreLayout, SharedStore<'a>),
        x: &'a [f32],
        y: &'a [f32],
        h: &'a Hypers,
    ) -> Result<impl FnOnce() + Send + 'a, String> {
        self.check_layout(layout)?;
        self.exe.as_mut().ok_or("the step is not compiled")?.call_with(store, x, y, h)
    }

    /// The loss of the last compiled run, with its observed values written
    /// to `observed` as `run_observed` does.
    pub fn results(&self, store: &Store, observed: &mut [f32]) -> Result<f32, String> {
        let (exe, loss) =
            (self.exe.as_ref().ok_or("the step is not compiled")?, self.graph.graph.loss.ok_or("no loss")?);
        gather(observed, self.graph.observed.iter().map(|&v| exe.value(v, &store.data)));
        Ok(exe.value(loss, &store.data).first().copied().unwrap_or(f32::NAN))
    }
}

/// Copies each of `values` after the last into `out`, as far as it reaches.
fn gather<'a>(out: &mut [f32], values: impl Iterator<Item = &'a [f32]>) {
    let mut at = 0;
    for value in values {
        let n = value.len().min(out.len() - at);
        out[at..at + n].copy_from_slice(&value[..n]);
        at += n;
    }
}

/// Every value of `graph`, computed by the reference interpreter from the
/// store; the store itself is left alone.
pub fn interpret(graph: &Graph, store: &Store, x: &[f32], y: &[f32], h: &Hypers) -> Result<Vec<Vec<f32>>, String> {
    let (params, states) = (store.params(), store.tensors(&store.layout.states));
    let targets: Vec<&[f32]> = if y.is_empty() { vec![] } else { vec![y] };
    let b = Bindings {
        inputs: &[x],
        targets: &targets,
        params: &params,
        states: &states,
        lr: h.lr,
        bias1: h.bias1,
        bias2: h.bias2,
        step: h.step,
    };
    interp::run(graph, &b)
}

impl Compiled<Graph> {
    pub fn new(mut graph: Graph, backend: Backend) -> Result<Self, String> {
        if backend.compiles() {
            crate::ir::fuse_activations(&mut graph, &[]);
        }
        let exe = build(&graph, || plan::plan_forward(&graph), backend)?;
        let layout = StoreLayout::of(&graph.params, &graph.states);
        Ok(Compiled { graph, layout, exe })
    }

    /// Forward pass: the prediction and (when the graph has one) the loss.
    pub fn run(&mut self, store: &mut Store, x: &[f32], y: &[f32]) -> Result<(Vec<f32>, Option<f32>), String> {
        self.check_store(store)?;
        let (pred, loss) = (self.graph.prediction, self.graph.loss);
        if let Some(exe) = &mut self.exe {
            // A forward pass only reads the store: its version stays.
            exe.run(&mut store.data, x, y, &Hypers { weights: store.version, ..Hypers::default() })?;
            let read = |v: ValueId, exe: &Executable| exe.value(v, &store.data).to_vec();
            let prediction = if exe.value(pred, &store.data).is_empty() { x.to_vec() } else { read(pred, exe) };
            return Ok((prediction, loss.map(|l| read(l, exe)[0])));
        }
        // Without targets (prediction only) the unused target leaf reads zeros.
        let unused: Vec<f32> = match self.graph.nodes.iter().find(|n| matches!(n.op, Op::Target(_))) {
            Some(node) if y.is_empty() => vec![0.0; numel(&node.shape)],
            _ => Vec::new(),
        };
        let y = if y.is_empty() { unused.as_slice() } else { y };
        let values = interpret(&self.graph, store, x, y, &Hypers { bias1: 1.0, bias2: 1.0, ..Hypers::default() })?;
        Ok((values[pred.0].clone(), loss.map(|l| values[l.0][0])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Shard;
    use crate::pipeline::{check_source, forward_graph, shard_step_graph};

    /// Whether every tensor of `store` starts on a 64-byte line.
    fn on_lines(store: &Store) -> bool {
        let start = store.data().as_ptr() as usize;
        let mut tensors = store.layout.params.iter().chain(&store.layout.states);
        tensors.all(|&(offset, _)| (start + 4 * offset).is_multiple_of(64))
    }

    /// A model's store, grown for its training step (Adam's moments after
    /// the weights) and copied as replicas copy it, keeps every tensor on
    /// a cache line.
    #[test]
    fn every_tensor_of_a_store_starts_on_a_cache_line() {
        let source = "model m {\n  input x: [300]\n  target y: class(3)\n  \
                      x |> dense(250) |> relu |> dense(3) => logits\n  loss = cross_entropy(logits, y)\n  \
                      train { optimizer = adam(lr = 0.01) batch = 4 }\n}\n";
        let mut checked = check_source("m.nn", source);
        assert!(!checked.has_errors(), "{:?}", checked.diags);
        let model = checked.models.remove(0);
        let mut store = Store::new(&forward_graph(&model, 1, false).expect("forward pass builds"));
        assert!(on_lines(&store) && store.layout.params.len() == 4);
        let step = shard_step_graph(&model, &model.train, Shard::whole(4)).expect("step builds");
        store.extend_to(&step.graph).expect("the step's store extends the model's");
        assert!(on_lines(&store) && store.layout.states.len() >= 8, "{:?}", store.layout);
        assert!(on_lines(&store.clone()));
    }
}
