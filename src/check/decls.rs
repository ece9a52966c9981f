//! Declarations: a model's inputs and targets, their kinds and shapes.

use super::*;

impl ModelChecker<'_> {
    fn dims(&mut self, dims: &[ast::Number], what: &str) -> Option<Shape> {
        let mut shape = Vec::new();
        for d in dims {
            shape.push(args::int_value(&Value::Number(d.clone()), what, 1, self.diags)?);
        }
        if shape.is_empty() {
            return None;
        }
        let total = shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d));
        match total {
            Some(t) if t as f64 <= args::MAX_INT => Some(shape),
            _ => {
                let span = dims[0].span.join(dims[dims.len() - 1].span);
                self.diags.push(messages::shape_too_large(span));
                None
            }
        }
    }

    pub(super) fn declare_input(&mut self, decl: &ast::Decl) {
        let (kind, shape) = match &decl.ty {
            ast::TypeExpr::Dims { kind, dims, .. } => {
                let kind = match kind.as_ref().map(|k| k.name.as_str()) {
                    None | Some("real") => InputKind::Real,
                    Some("seq") => InputKind::Seq,
                    Some("tokens") => InputKind::Tokens,
                    Some(_) => {
                        let k = kind.as_ref().map_or(&decl.name, |k| k);
                        self.diags.push(messages::unknown_type(k, &["real", "seq", "tokens"], "input"));
                        return;
                    }
                };
                let Some(shape) = self.dims(dims, "dimension") else {
                    return;
                };
                if kind == InputKind::Seq && shape.len() != 2 {
                    self.diags.push(messages::seq_rank(decl.ty.span(), shape.len()));
                    return;
                }
                if kind == InputKind::Tokens && shape.len() != 1 {
                    self.diags.push(messages::tokens_rank(decl.ty.span(), shape.len()));
                    return;
                }
                (kind, shape)
            }
            ast::TypeExpr::Count { kind, .. } => {
                self.diags.push(messages::input_is_class(kind));
                return;
            }
        };
        let info = Incoming {
            shape: shape.clone(),
            why: format!("input {}", decl.name.name),
            producer: decl.span,
            tokens: kind == InputKind::Tokens,
        };
        let index = self.inputs.len();
        // Token ids are checked against the embedding's vocabulary column by
        // column of the one input; mixed with other inputs they could not be.
        if let Some(other) = self.inputs.iter().find(|i| kind == InputKind::Tokens || i.kind == InputKind::Tokens) {
            self.diags.push(messages::tokens_with_other_inputs(decl.span, other.span));
            return;
        }
        self.inputs.push(InputSpec { name: decl.name.name.clone(), kind, shape, span: decl.span });
        self.define(&decl.name, ValueRef::Input(index), info, "input");
    }

    pub(super) fn declare_target(&mut self, decl: &ast::Decl) {
        let kinds = ["class", "real", "binary"];
        let kind = match &decl.ty {
            ast::TypeExpr::Count { kind, count, .. } => {
                if kind.name != "class" {
                    self.diags.push(messages::unknown_type(kind, &kinds, "target"));
                    return;
                }
                let Some(k) = args::int_value(&Value::Number(count.clone()), "classes", 2, self.diags) else {
                    return;
                };
                TargetKind::Class(k)
            }
            ast::TypeExpr::Dims { kind, dims, span } => {
                let Some(shape) = self.dims(dims, "dimension") else {
                    return;
                };
                match kind.as_ref().map(|k| k.name.as_str()) {
                    None | Some("real") => TargetKind::Real(shape),
                    Some("binary") => TargetKind::Binary(shape),
                    Some("class") => {
                        self.diags.push(messages::class_needs_count(*span));
                        return;
                    }
                    Some(_) => {
                        let k = kind.as_ref().map_or(&decl.name, |k| k);
                        self.diags.push(messages::unknown_type(k, &kinds, "target"));
                        return;
                    }
                }
            }
        };
        let index = self.targets.len();
        let target = TargetSpec { name: decl.name.name.clone(), kind, span: decl.span };
        let shape = match &target.kind {
            TargetKind::Class(k) => vec![*k],
            TargetKind::Real(s) | TargetKind::Binary(s) => s.clone(),
        };
        self.targets.push(target);
        let info = Incoming { shape, why: String::new(), producer: decl.span, tokens: false };
        self.define(&decl.name, ValueRef::Target(index), info, "target");
    }
}
