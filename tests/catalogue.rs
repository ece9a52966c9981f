//! The layer catalogue: every keyword in it has a shape rule, and the layer
//! it resolves to is written with that keyword.

use nnc::check::layers::{LAYERS, LayerKind};
use nnc::pipeline::check_source;

/// An input declaration the layer accepts, and a call of it.
fn example(keyword: &str, kind: LayerKind) -> (&'static str, String) {
    match kind {
        LayerKind::Conv2d => ("[1, 4, 4]", "conv2d(2, kernel = [3, 2])".into()),
        LayerKind::Conv1d => ("[2, 6]", "conv1d(3, kernel = 3)".into()),
        LayerKind::MaxPool | LayerKind::AvgPool => ("[1, 4, 4]", format!("{keyword}(2)")),
        LayerKind::GlobalAvgPool | LayerKind::Upsample => ("[2, 4, 3]", keyword.into()),
        LayerKind::Recurrent(_) => ("seq[3, 2]", format!("{keyword}(2)")),
        LayerKind::Embedding => ("tokens[3]", "embedding(5, 2)".into()),
        LayerKind::Reshape => ("[4]", "reshape([2, 2])".into()),
        LayerKind::Add => ("[4]", "add(x)".into()),
        LayerKind::Concat => ("[4]", "concat(x)".into()),
        LayerKind::Dense | LayerKind::Maxout | LayerKind::Rbm => ("[4]", format!("{keyword}(3)")),
        LayerKind::Dropout => ("[4]", "dropout(0.5)".into()),
        LayerKind::Clip => ("[4]", "clip(min = 0, max = 6)".into()),
        LayerKind::Flatten | LayerKind::BatchNorm | LayerKind::LayerNorm => ("[4]", keyword.into()),
        // The other activations take no required argument.
        kind => {
            assert!(kind.is_activation(), "{keyword} needs an example");
            ("[4]", keyword.into())
        }
    }
}

#[test]
fn every_catalogue_entry_has_a_shape_rule() {
    for spec in LAYERS {
        let (input, call) = example(spec.keyword, spec.kind);
        let source = format!(
            "model m {{ input x: {input}  target t: real[1]
               x |> {call} |> flatten |> dense(1) => y  loss = mse(y, t) }}"
        );
        let checked = check_source("m.nn", &source);
        assert!(!checked.has_errors(), "{source}: {:?}", checked.diags);
        let node = &checked.models[0].nodes[0];
        let written = if spec.keyword == "swish" { "silu" } else { spec.keyword };
        assert_eq!(node.layer.keyword(), written, "{source}");
    }
}

/// The README's language reference is the one the catalogues generate
/// (`nnc::lsp::docs::reference`), word for word. After changing a layer,
/// loss, optimizer, schedule, data source or setting, rewrite it with
/// `NNC_BLESS=1 cargo test --test catalogue`.
#[test]
fn readme_reference_is_generated_from_the_catalogue() {
    const START: &str =
        "<!-- reference: generated from the catalogues; rewrite with `NNC_BLESS=1 cargo test --test catalogue` -->\n";
    const END: &str = "<!-- end of the reference -->";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).expect("README");
    let start = readme.find(START).expect("the README has the reference's start marker") + START.len();
    let end = readme[start..].find(END).expect("the README has the reference's end marker") + start;
    let generated = format!("\n{}", nnc::lsp::docs::reference());
    if std::env::var_os("NNC_BLESS").is_some() {
        let updated = format!("{}{generated}{}", &readme[..start], &readme[end..]);
        std::fs::write(path, updated).expect("README rewritten");
        return;
    }
    assert!(
        readme[start..end] == generated,
        "the README's language reference differs from the catalogues'; run `NNC_BLESS=1 cargo test --test catalogue`"
    );
}
