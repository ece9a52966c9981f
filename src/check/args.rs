//! Matching a call's arguments against a parameter list, then reading them
//! with typed getters that report wrong types and out-of-range values.
//!
//! Getters never fail: on a mistake they record a diagnostic and return the
//! default, so checking continues and reports every independent error.

use std::collections::HashMap;

use crate::ast::{Arg, Call, Ident, Value};
use crate::diag::{Diag, Span, did_you_mean, messages};

/// Allowed range of a numeric parameter.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    /// x > 0
    Positive,
    /// x ≥ 0
    NonNegative,
    /// 0 ≤ x < 1
    UnitOpen,
    /// 0 < x < 1
    UnitExclusive,
    /// any finite number
    Any,
}

impl Bound {
    fn contains(self, x: f64) -> bool {
        x.is_finite()
            && match self {
                Bound::Positive => x > 0.0,
                Bound::NonNegative => x >= 0.0,
                Bound::UnitOpen => (0.0..1.0).contains(&x),
                Bound::UnitExclusive => x > 0.0 && x < 1.0,
                Bound::Any => true,
            }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Bound::Positive => "a number > 0",
            Bound::NonNegative => "a number ≥ 0",
            Bound::UnitOpen => "a number in [0, 1)",
            Bound::UnitExclusive => "a number in (0, 1)",
            Bound::Any => "a finite number",
        }
    }
}

/// The arguments of one call, matched to parameter names.
pub struct Args<'a> {
    values: HashMap<&'static str, &'a Value>,
}

/// Largest integer a size-like argument may take; bigger ones are typos and
/// would overflow shape arithmetic.
pub const MAX_INT: f64 = 1e9;

impl<'a> Args<'a> {
    /// Matches positional arguments in order and keyword arguments by name.
    /// `required` names must be present.
    pub fn match_call(
        call: &'a Call,
        params: &[&'static str],
        required: &[&'static str],
        diags: &mut Vec<Diag>,
    ) -> Args<'a> {
        Args::match_args(&call.name, call.span, &call.args, params, required, diags)
    }

    /// Like `match_call`, for the arguments of the callee `name` at `span`.
    pub fn match_args(
        name: &Ident,
        span: Span,
        call_args: &'a [Arg],
        params: &[&'static str],
        required: &[&'static str],
        diags: &mut Vec<Diag>,
    ) -> Args<'a> {
        let callee = name;
        let mut values: HashMap<&'static str, &'a Value> = HashMap::new();
        let mut spans: HashMap<&'static str, Span> = HashMap::new();
        let mut position = 0;
        for arg in call_args {
            let name = match &arg.key {
                Some(key) => match params.iter().find(|p| **p == key.name) {
                    Some(p) => *p,
                    None => {
                        let suggestion = did_you_mean(&key.name, params.iter().copied());
                        diags.push(messages::unknown_argument(key, &callee.name, params, suggestion));
                        continue;
                    }
                },
                None => match params.get(position) {
                    Some(p) => {
                        position += 1;
                        *p
                    }
                    None => {
                        diags.push(messages::too_many_arguments(arg.span, &callee.name, params));
                        continue;
                    }
                },
            };
            if let Some(first) = spans.get(name) {
                diags.push(messages::duplicate_argument(arg.span, *first, name));
                continue;
            }
            spans.insert(name, arg.span);
            values.insert(name, &arg.value);
        }
        for name in required {
            if !values.contains_key(name) {
                diags.push(messages::missing_argument(callee, span, name, params));
            }
        }
        Args { values }
    }

    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    pub fn value(&self, name: &str) -> Option<&'a Value> {
        self.values.get(name).copied()
    }

    /// A number in `bound`; `default` when absent or wrong.
    pub fn float(&self, name: &str, default: f64, bound: Bound, diags: &mut Vec<Diag>) -> f64 {
        self.opt_float(name, bound, diags).unwrap_or(default)
    }

    pub fn opt_float(&self, name: &str, bound: Bound, diags: &mut Vec<Diag>) -> Option<f64> {
        let value = self.value(name)?;
        let Value::Number(n) = value else {
            diags.push(messages::wrong_type(value, name, "a number"));
            return None;
        };
        // Training runs in f32: a value beyond it would become ±inf.
        if n.value.abs() > f64::from(f32::MAX) {
            diags.push(messages::beyond_f32(n, name));
            return None;
        }
        if !bound.contains(n.value) {
            diags.push(messages::out_of_range(n, name, bound.describe()));
            return None;
        }
        Some(n.value)
    }

    /// A whole number ≥ `min`; `default` when absent or wrong.
    pub fn int(&self, name: &str, default: usize, min: usize, diags: &mut Vec<Diag>) -> usize {
        self.opt_int(name, min, diags).unwrap_or(default)
    }

    /// A count with its own upper bound (`max`), for counts whose cost grows
    /// with them (Gibbs steps, epochs).
    pub fn count(&self, name: &str, default: usize, (min, max): (usize, usize), diags: &mut Vec<Diag>) -> usize {
        match self.value(name) {
            Some(value) => int_in(value, name, min, max as f64, diags).unwrap_or(default),
            None => default,
        }
    }

    pub fn opt_int(&self, name: &str, min: usize, diags: &mut Vec<Diag>) -> Option<usize> {
        let value = self.value(name)?;
        int_value(value, name, min, diags)
    }

    pub fn bool(&self, name: &str, default: bool, diags: &mut Vec<Diag>) -> bool {
        match self.value(name) {
            None => default,
            Some(Value::Name(id)) if id.name == "true" => true,
            Some(Value::Name(id)) if id.name == "false" => false,
            Some(v) => {
                diags.push(messages::wrong_type(v, name, "`true` or `false`"));
                default
            }
        }
    }

    pub fn string(&self, name: &str, diags: &mut Vec<Diag>) -> Option<String> {
        match self.value(name)? {
            Value::String(s, _) => Some(s.clone()),
            v => {
                diags.push(messages::wrong_type(v, name, "a string in double quotes"));
                None
            }
        }
    }

    /// A non-empty list of numbers, each in `bound` (`weights = [1, 4]`).
    pub fn floats(&self, name: &str, bound: Bound, diags: &mut Vec<Diag>) -> Option<Vec<f64>> {
        let value = self.value(name)?;
        let Value::List(items, _) = value else {
            diags.push(messages::wrong_type(value, name, "a list of numbers like [1, 4]"));
            return None;
        };
        if items.is_empty() {
            diags.push(messages::wrong_type(value, name, "a list of numbers like [1, 4]"));
            return None;
        }
        let mut numbers = Vec::with_capacity(items.len());
        for item in items {
            let Value::Number(n) = item else {
                diags.push(messages::wrong_type(item, name, "a list of numbers like [1, 4]"));
                return None;
            };
            if !bound.contains(n.value) || n.value.abs() > f64::from(f32::MAX) {
                diags.push(messages::out_of_range(n, name, bound.describe()));
                return None;
            }
            numbers.push(n.value);
        }
        Some(numbers)
    }

    /// One string or a list of them (`"price"`, `["area", "rooms"]`);
    /// empty when absent or wrong.
    pub fn strings(&self, name: &str, diags: &mut Vec<Diag>) -> Vec<String> {
        let wrong = |v: &Value, diags: &mut Vec<Diag>| {
            diags.push(messages::wrong_type(v, name, "a string or a list of strings in double quotes"));
            Vec::new()
        };
        match self.value(name) {
            None => Vec::new(),
            Some(Value::String(s, _)) => vec![s.clone()],
            Some(Value::List(items, _)) => {
                let mut names = Vec::with_capacity(items.len());
                for item in items {
                    let Value::String(s, _) = item else { return wrong(item, diags) };
                    names.push(s.clone());
                }
                names
            }
            Some(v) => wrong(v, diags),
        }
    }

    /// A bare name argument such as a layer label: `tied = encoder`.
    pub fn name(&self, name: &str, diags: &mut Vec<Diag>) -> Option<&'a Ident> {
        match self.value(name)? {
            Value::Name(id) => Some(id),
            v => {
                diags.push(messages::wrong_type(v, name, "a name"));
                None
            }
        }
    }
}

/// A whole number ≥ `min` written as a literal.
pub fn int_value(value: &Value, name: &str, min: usize, diags: &mut Vec<Diag>) -> Option<usize> {
    int_in(value, name, min, MAX_INT, diags)
}

/// `value` as a whole number in [min, max], or a diagnostic.
fn int_in(value: &Value, name: &str, min: usize, max: f64, diags: &mut Vec<Diag>) -> Option<usize> {
    let Value::Number(n) = value else {
        diags.push(messages::wrong_type(value, name, "a whole number"));
        return None;
    };
    if n.value.fract() != 0.0 || !n.value.is_finite() {
        diags.push(messages::wrong_type(value, name, "a whole number"));
        return None;
    }
    if n.value < min as f64 || n.value > max {
        diags.push(messages::int_out_of_range(n, name, min, max));
        return None;
    }
    Some(n.value as usize)
}
