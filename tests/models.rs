//! Every bundled model checks with zero diagnostics, and `summary` matches
//! published parameter counts.

use nnc::pipeline::check_source;
use nnc::summary::summarize;

fn model_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/models"))
        .expect("models/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "nn"))
        .collect();
    files.sort();
    files
}

fn summary_of(file: &str) -> nnc::summary::Summary {
    let path = format!("{}/models/{file}", env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(&path).expect("model is readable");
    let checked = check_source(file, &source);
    assert!(checked.diags.is_empty(), "{file}: {:?}", checked.diags);
    summarize(&checked.models[0])
}

#[test]
fn every_model_checks_clean() {
    let files = model_files();
    assert!(files.len() >= 13, "expected the 13 bundled models, found {}", files.len());
    for path in files {
        let source = std::fs::read_to_string(&path).expect("model is readable");
        let checked = check_source(&path.display().to_string(), &source);
        assert!(checked.diags.is_empty(), "{}: {:#?}", path.display(), checked.diags);
        assert!(!checked.models.is_empty());
        assert!(source.starts_with("//"), "{} should open with a comment saying what it is", path.display());
    }
}

#[test]
fn mnist_mlp_has_101770_parameters() {
    assert_eq!(summary_of("mnist_mlp.nn").total_params, 101_770);
}

#[test]
fn lenet_has_61706_parameters() {
    assert_eq!(summary_of("lenet.nn").total_params, 61_706);
}

#[test]
fn vgg16_has_138357544_parameters_and_15_5_g_multiply_adds() {
    let s = summary_of("vgg16.nn");
    assert_eq!(s.total_params, 138_357_544);
    // Published: ≈15.5 G multiply-adds for one 224×224 image.
    assert!((15.3e9..15.6e9).contains(&(s.total_macs as f64)), "{}", s.total_macs);
}

/// The course's comparison on a 300×300 image: a dense layer of 4 neurons
/// has 360,004 weights, four 5×5 convolution filters only 104.
#[test]
fn dense_versus_conv_on_a_300_by_300_image() {
    let dense = "model d { input img: [1, 300, 300]  target y: real[4]
        img |> flatten |> dense(4) => p  loss = mse(p, y) }";
    let conv = "model c { input img: [1, 300, 300]  target y: real[4, 296, 296]
        img |> conv2d(4, kernel = 5) => p  loss = mse(p, y) }";
    for (source, expected) in [(dense, 360_004), (conv, 104)] {
        let checked = check_source("course.nn", source);
        assert!(checked.diags.is_empty(), "{:?}", checked.diags);
        assert_eq!(summarize(&checked.models[0]).total_params, expected);
    }
}

#[test]
fn summary_rows_show_shapes_in_order() {
    let s = summary_of("lenet.nn");
    let shapes: Vec<Vec<usize>> = s.rows.iter().map(|r| r.output.clone()).collect();
    assert_eq!(shapes[1], vec![6, 28, 28]);
    assert_eq!(shapes[3], vec![6, 14, 14]);
    assert_eq!(shapes[4], vec![16, 10, 10]);
    assert_eq!(shapes[7], vec![400]);
    assert_eq!(s.rows[1].macs, 6 * 28 * 28 * 25);
}

#[test]
fn blocks_and_repeat_expand_like_the_written_out_model() {
    let short = "block cr(c) { conv2d(c, kernel = 3, padding = 1) |> relu }
        model a { input x: [3, 8, 8] target y: class(2)
          x |> repeat(2) { cr(4) } |> flatten |> dense(2) => p  loss = cross_entropy(p, y) }";
    let long = "model b { input x: [3, 8, 8] target y: class(2)
          x |> conv2d(4, kernel = 3, padding = 1) |> relu |> conv2d(4, kernel = 3, padding = 1) |> relu
            |> flatten |> dense(2) => p  loss = cross_entropy(p, y) }";
    let a = summarize(&check_source("a.nn", short).models[0]);
    let b = summarize(&check_source("b.nn", long).models[0]);
    assert_eq!(a.total_params, b.total_params);
    assert_eq!(a.rows.len(), b.rows.len());
}

/// `padding = same` pads d·(k − 1)/2 on each side: height and width stay,
/// for plain and dilated odd kernels; the model is written as if the number
/// had been given.
#[test]
fn padding_same_keeps_height_and_width() {
    let source = "model s { input img: [3, 11, 9]  target y: real[2]
        img |> conv2d(4, kernel = 3, padding = same) |> relu
            |> conv2d(5, kernel = 5, dilation = 2, padding = same) |> flatten |> dense(2) => p
        loss = mse(p, y) }";
    let checked = check_source("same.nn", source);
    assert!(checked.diags.is_empty(), "{:?}", checked.diags);
    let model = &checked.models[0];
    let shapes: Vec<Vec<usize>> = summarize(model).rows.iter().map(|r| r.output.clone()).collect();
    assert_eq!(shapes[1], vec![4, 11, 9]);
    assert_eq!(shapes[3], vec![5, 11, 9]);
    let paddings: Vec<usize> = model
        .nodes
        .iter()
        .filter_map(|n| match n.layer {
            nnc::check::Layer::Conv2d { rows, cols, .. } if rows.padding == cols.padding => Some(rows.padding),
            _ => None,
        })
        .collect();
    assert_eq!(paddings, vec![1, 4]);
}
