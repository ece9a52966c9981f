//! Runs a compiled graph on either backend: the reference interpreter or the
//! Cranelift JIT. Parameters and optimizer state live in one flat *store*
//! laid out by the plan, shared by every batch size's compiled step.

use crate::interp::{self, Bindings};
use crate::ir::{Graph, TrainGraph, ValueId, numel};
use crate::jit::{self, Executable};
use crate::plan::{self, Plan};

/// Which executor runs the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Cranelift-compiled kernels (the default).
    Jit,
    /// The reference interpreter: plain loops, the oracle.
    Interp,
}

/// Parameters and optimizer state, flat, at the plan's offsets.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Store {
    pub data: Vec<f32>,
    /// (offset, length) of each parameter and state tensor.
    pub params: Vec<(usize, usize)>,
    pub states: Vec<(usize, usize)>,
}

impl Store {
    pub fn new(graph: &Graph, plan: &Plan) -> Store {
        let params = graph.params.iter().zip(&plan.param_offsets).map(|(p, &o)| (o, numel(&p.shape))).collect();
        let states: Vec<_> = graph.states.iter().zip(&plan.state_offsets).map(|(s, &o)| (o, numel(&s.shape))).collect();
        let mut data = vec![0.0; plan.store_len];
        for (s, &(o, n)) in graph.states.iter().zip(&states) {
            data[o..o + n].fill(s.fill);
        }
        Store { data, params, states }
    }

    fn tensors(&self, which: &[(usize, usize)]) -> Vec<Vec<f32>> {
        which.iter().map(|&(o, n)| self.data[o..o + n].to_vec()).collect()
    }

    pub fn params(&self) -> Vec<Vec<f32>> {
        self.tensors(&self.params)
    }

    pub fn set_param(&mut self, p: usize, values: &[f32]) {
        let (o, n) = self.params[p];
        self.data[o..o + n].copy_from_slice(&values[..n]);
    }

    fn write(&mut self, which: usize, is_state: bool, values: &[f32]) {
        let (o, n) = if is_state { self.states[which] } else { self.params[which] };
        self.data[o..o + n].copy_from_slice(values);
    }
}

/// A graph ready to run on one backend.
pub struct Compiled<G> {
    pub graph: G,
    exe: Option<Executable>,
}

/// Scalars a step reads: learning rate, Adam's bias corrections, step number.
pub type Hypers = [f32; 4];

impl Compiled<TrainGraph> {
    pub fn new(step: TrainGraph, backend: Backend) -> Result<Self, String> {
        if cfg!(debug_assertions) {
            crate::ir::verify(&step.graph)?;
        }
        let exe = match backend {
            Backend::Jit => Some(jit::compile(&step.graph, &plan::plan_train(&step))?),
            Backend::Interp => None,
        };
        Ok(Compiled { graph: step, exe })
    }

    /// One training step; updates the store in place and returns the loss.
    pub fn run(&mut self, store: &mut Store, x: &[f32], y: &[f32], h: &Hypers) -> Result<f32, String> {
        let loss = self.graph.graph.loss.ok_or("no loss")?;
        if let Some(exe) = &mut self.exe {
            exe.run(&mut store.data, x, y, h)?;
            return Ok(exe.value(loss, &store.data).first().copied().unwrap_or(f32::NAN));
        }
        let values = interpret_step(&self.graph, store, x, y, h)?;
        for (p, v) in self.graph.new_params.iter().enumerate() {
            store.write(p, false, &values[v.0]);
        }
        for (s, v) in self.graph.new_states.iter().enumerate() {
            store.write(s, true, &values[v.0]);
        }
        Ok(values[loss.0][0])
    }
}

/// Every value of one training step, computed by the reference interpreter
/// from the store; the store itself is left alone.
pub fn interpret_step(
    step: &TrainGraph,
    store: &Store,
    x: &[f32],
    y: &[f32],
    h: &Hypers,
) -> Result<Vec<Vec<f32>>, String> {
    interpret(&step.graph, store, x, y, h)
}

/// Every value of `graph`, computed by the reference interpreter from the store.
fn interpret(graph: &Graph, store: &Store, x: &[f32], y: &[f32], h: &Hypers) -> Result<Vec<Vec<f32>>, String> {
    let (params, states) = (store.params(), store.tensors(&store.states));
    let targets: Vec<&[f32]> = if y.is_empty() { vec![] } else { vec![y] };
    let b = Bindings {
        inputs: &[x],
        targets: &targets,
        params: &params,
        states: &states,
        lr: h[0],
        bias1: h[1],
        bias2: h[2],
        step: h[3],
    };
    interp::run(graph, &b)
}

impl Compiled<Graph> {
    pub fn new(graph: Graph, backend: Backend) -> Result<Self, String> {
        if cfg!(debug_assertions) {
            crate::ir::verify(&graph)?;
        }
        let exe = match backend {
            Backend::Jit => Some(jit::compile(&graph, &plan::plan_forward(&graph))?),
            Backend::Interp => None,
        };
        Ok(Compiled { graph, exe })
    }

    /// Forward pass: the prediction and (when the graph has one) the loss.
    pub fn run(&mut self, store: &mut Store, x: &[f32], y: &[f32]) -> Result<(Vec<f32>, Option<f32>), String> {
        let (pred, loss) = (self.graph.prediction, self.graph.loss);
        if let Some(exe) = &mut self.exe {
            exe.run(&mut store.data, x, y, &[0.0; 4])?;
            let read = |v: ValueId, exe: &Executable| exe.value(v, &store.data).to_vec();
            let prediction = if exe.value(pred, &store.data).is_empty() { x.to_vec() } else { read(pred, exe) };
            return Ok((prediction, loss.map(|l| read(l, exe)[0])));
        }
        // Without targets (prediction only) the unused target leaf reads zeros.
        let unused: Vec<f32> = match self.graph.nodes.iter().find(|n| matches!(n.op, crate::ir::Op::Target(_))) {
            Some(node) if y.is_empty() => vec![0.0; numel(&node.shape)],
            _ => Vec::new(),
        };
        let y = if y.is_empty() { unused.as_slice() } else { y };
        let values = interpret(&self.graph, store, x, y, &[0.0, 1.0, 1.0, 0.0])?;
        Ok((values[pred.0].clone(), loss.map(|l| values[l.0][0])))
    }
}
