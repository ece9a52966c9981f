//! A node's attributes read with their defaults, and the window
//! attributes of nnc's layers: one number per axis, or one for both.

use super::proto::{self, NodeProto, attribute_proto::AttributeType};
use super::unsupported_detail;

pub(super) fn attribute<'n>(node: &'n NodeProto, name: &str) -> Option<&'n proto::AttributeProto> {
    node.attribute.iter().find(|a| a.name.as_deref() == Some(name))
}

pub(super) fn int_attr(node: &NodeProto, name: &str, default: i64) -> i64 {
    attribute(node, name).and_then(|a| a.i).unwrap_or(default)
}

pub(super) fn float_attr(node: &NodeProto, name: &str, default: f32) -> f32 {
    attribute(node, name).and_then(|a| a.f).unwrap_or(default)
}

pub(super) fn text_attr(node: &NodeProto, name: &str, default: &str) -> String {
    attribute(node, name)
        .and_then(|a| a.s.as_ref())
        .map_or_else(|| default.into(), |s| String::from_utf8_lossy(s).into())
}

pub(super) fn ints_attr(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attribute(node, name)
        .filter(|a| a.r#type == Some(AttributeType::Ints as i32) || !a.ints.is_empty())
        .map(|a| a.ints.clone())
}

/// `[k, k]`-style attributes that nnc's square layers take as one number.
pub(super) fn square(node: &NodeProto, what: &str, values: Option<Vec<i64>>, default: i64) -> Result<usize, String> {
    let values = values.unwrap_or_else(|| vec![default, default]);
    match values.as_slice() {
        [a, rest @ ..] if *a >= 0 && rest.iter().all(|b| b == a) => Ok(*a as usize),
        _ => Err(unsupported_detail(node, &format!("its {what} {values:?} differ along the axes; nnc's are square"))),
    }
}

/// `[h, w]`-style attributes of a 2-D window (pads `[top, left, bottom,
/// right]`, which nnc needs symmetric), per axis.
pub(super) fn per_axis(
    node: &NodeProto,
    what: &str,
    values: Option<Vec<i64>>,
    default: i64,
) -> Result<[usize; 2], String> {
    let values = values.unwrap_or_else(|| vec![default, default]);
    match values[..] {
        [h, w] | [h, w, ..] if h >= 0 && w >= 0 && (values.len() == 2 || values[2..] == [h, w]) => {
            Ok([h as usize, w as usize])
        }
        _ => Err(unsupported_detail(
            node,
            &format!("its {what} {values:?} are not one per axis (pads: the same on both sides)"),
        )),
    }
}
