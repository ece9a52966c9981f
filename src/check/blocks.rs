//! Blocks: a call binds a block's parameters, and its body is checked in
//! place of the call with the arguments substituted.

use std::collections::HashMap;

use super::*;

impl ModelChecker<'_> {
    /// Binds a block's parameters to the call's arguments and returns its body
    /// with the parameters substituted.
    pub(super) fn expand_block(&mut self, block: &ast::BlockDef, call: &Call) -> Option<Vec<Stage>> {
        let mut bound: HashMap<&str, Value> = HashMap::new();
        let mut position = 0;
        let mut ok = true;
        for arg in &call.args {
            let param = match &arg.key {
                Some(key) => block.params.iter().find(|p| p.name == key.name),
                None => {
                    position += 1;
                    block.params.get(position - 1)
                }
            };
            let Some(param) = param else {
                let names: Vec<&str> = block.params.iter().map(|p| p.name.as_str()).collect();
                self.diags.push(messages::block_argument(arg.span, &block.name, &names));
                ok = false;
                continue;
            };
            if bound.insert(&param.name, arg.value.clone()).is_some() {
                self.diags.push(messages::duplicate_argument(arg.span, arg.span, &param.name));
                ok = false;
            }
        }
        for param in &block.params {
            if !bound.contains_key(param.name.as_str()) {
                self.diags.push(messages::missing_block_argument(call, &block.name, param));
                ok = false;
            }
        }
        ok.then(|| block.body.iter().map(|s| substitute_stage(s, &bound)).collect())
    }
}

fn substitute_stage(stage: &Stage, bound: &HashMap<&str, Value>) -> Stage {
    match stage {
        Stage::Layer { call, label } => Stage::Layer { call: substitute_call(call, bound), label: label.clone() },
        Stage::Repeat { count, body, span } => Stage::Repeat {
            count: count.clone(),
            body: body.iter().map(|s| substitute_stage(s, bound)).collect(),
            span: *span,
        },
    }
}

fn substitute_call(call: &Call, bound: &HashMap<&str, Value>) -> Call {
    let args = call
        .args
        .iter()
        .map(|a| ast::Arg { key: a.key.clone(), value: substitute_value(&a.value, bound), span: a.span })
        .collect();
    Call { args, ..call.clone() }
}

fn substitute_value(value: &Value, bound: &HashMap<&str, Value>) -> Value {
    match value {
        Value::Name(id) => bound.get(id.name.as_str()).cloned().unwrap_or_else(|| value.clone()),
        Value::List(items, span) => Value::List(items.iter().map(|v| substitute_value(v, bound)).collect(), *span),
        Value::Call(c) => Value::Call(substitute_call(c, bound)),
        Value::Number(_) | Value::String(..) => value.clone(),
    }
}
