//! Thousands of mutated versions of every bundled model go through the
//! checker: none may panic, and every diagnostic's span lies inside the file.

use nnc::pipeline::check_source;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const MUTATIONS_PER_MODEL: usize = 300;

/// `NNC_FUZZ_SCALE=N` runs N times as many mutations (a long campaign).
fn scale() -> usize {
    std::env::var("NNC_FUZZ_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}

fn tokens(source: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in source.char_indices() {
        match (c.is_alphanumeric() || c == '_' || c == '.', start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i));
                start = None;
                if !c.is_whitespace() {
                    out.push((i, i + c.len_utf8()));
                }
            }
            (false, None) if !c.is_whitespace() => out.push((i, i + c.len_utf8())),
            _ => {}
        }
    }
    out
}

fn mutate(source: &str, rng: &mut ChaCha8Rng) -> String {
    let toks = tokens(source);
    let pick = |rng: &mut ChaCha8Rng| toks[rng.random_range(0..toks.len())];
    match rng.random_range(0..7) {
        0 => source[..source.floor_char_boundary(rng.random_range(0..source.len()))].to_string(),
        1 => {
            let (s, e) = pick(rng);
            format!("{}{}", &source[..s], &source[e..])
        }
        2 => {
            let (a, b) = (pick(rng), pick(rng));
            let ((s1, e1), (s2, e2)) = if a.0 < b.0 { (a, b) } else { (b, a) };
            if e1 > s2 {
                return source.to_string();
            }
            format!("{}{}{}{}{}", &source[..s1], &source[s2..e2], &source[e1..s2], &source[s1..e1], &source[e2..])
        }
        3 => {
            let pos = source.floor_char_boundary(rng.random_range(0..source.len()));
            let junk: String = (0..rng.random_range(1..5)).map(|_| rng.random_range(32u8..127) as char).collect();
            format!("{}{}{}", &source[..pos], junk, &source[pos..])
        }
        4 => {
            let (s, e) = pick(rng);
            let huge = ["1e400", "-0", "99999999999999999999", "0.0", "-7", "1e-400", "NaN", "4294967297"];
            format!("{}{}{}", &source[..s], huge[rng.random_range(0..huge.len())], &source[e..])
        }
        5 => {
            let pos = source.floor_char_boundary(rng.random_range(0..source.len()));
            let depth = rng.random_range(10..200);
            format!("{}{}{}", &source[..pos], "[(".repeat(depth), &source[pos..])
        }
        _ => {
            let (s, e) = pick(rng);
            let (s2, e2) = pick(rng);
            format!("{}{}{}", &source[..s], &source[s2..e2], &source[e..])
        }
    }
}

#[test]
fn mutated_models_never_panic_and_spans_stay_inside() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut checked_count = 0;
    let mut with_errors = 0;
    for entry in std::fs::read_dir(dir).expect("models/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|x| x != "nn") {
            continue;
        }
        let original = std::fs::read_to_string(&path).expect("readable");
        for _ in 0..MUTATIONS_PER_MODEL * scale() {
            let source = mutate(&original, &mut rng);
            let checked = check_source("mutant.nn", &source);
            checked_count += 1;
            if checked.has_errors() {
                with_errors += 1;
            }
            for d in &checked.diags {
                for label in std::iter::once(&d.primary).chain(&d.secondary) {
                    assert!(
                        label.span.start <= label.span.end && label.span.end <= source.len(),
                        "span {:?} outside a file of {} bytes: {}\n{source}",
                        label.span,
                        source.len(),
                        d.message
                    );
                }
                // Rendering must not panic either.
                let _ = nnc::diag::render(std::slice::from_ref(d), "mutant.nn", &source, false, 80);
            }
        }
    }
    assert!(checked_count >= 13 * MUTATIONS_PER_MODEL);
    // Most mutations break something; a checker that accepts everything is wrong.
    assert!(with_errors > checked_count / 2, "{with_errors} of {checked_count}");
}

#[test]
fn deep_nesting_fails_cleanly() {
    for depth in [100, 10_000, 1_000_000] {
        let source = format!("model m {{ input x: {}1{} }}", "[".repeat(depth), "]".repeat(depth));
        let checked = check_source("deep.nn", &source);
        assert_eq!(checked.diags[0].code, "nnc::syntax::too_deep");
    }
}

#[test]
fn long_flat_input_is_fine() {
    let body = "x |> relu => x0\n".to_string()
        + &(1..2000).map(|i| format!("x{} |> relu => x{i}\n", i - 1)).collect::<String>();
    let source = format!("model m {{ input x: [4] target y: real[4]\n{body} loss = mse(x1999, y) }}");
    let checked = check_source("long.nn", &source);
    assert!(checked.diags.is_empty(), "{:?}", checked.diags.first());
    assert_eq!(checked.models[0].nodes.len(), 2000);
}

/// A byte-level mutation: flip, cut, duplicate, or splice in a hostile value.
fn mutate_bytes(bytes: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.is_empty() {
        return out;
    }
    let at = rng.random_range(0..out.len());
    match rng.random_range(0..5) {
        0 => out[at] ^= 1 << rng.random_range(0..8),
        1 => out.truncate(at),
        2 => {
            let end = (at + rng.random_range(1..64)).min(out.len());
            let piece = out[at..end].to_vec();
            out.splice(at..at, piece);
        }
        3 => {
            let hostile: [&[u8]; 6] = [b"1e400", b"NaN", b",,,", b"\n", b"\xff\xfe", b"-1"];
            out.splice(at..at, hostile[rng.random_range(0..hostile.len())].iter().copied());
        }
        _ => out[at] = rng.random_range(0..=255),
    }
    out
}

/// Mutated CSV, IDX and checkpoint files are errors or data, never a panic;
/// each loader sees 2,000 of them (times `NNC_FUZZ_SCALE`).
#[test]
fn mutated_data_files_never_panic() {
    use nnc::data::{self, RowSpec, TargetSpecOfRow};
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let spec = RowSpec {
        features: 3,
        targets: vec![TargetSpecOfRow::Class(4)],
        vocab: None,
        label_names: vec![],
        feature_names: vec![],
    };
    let csv = b"a,b,c,label\n1,2,3,0\n4,5.5,-6,3\n0.1,1e3,7,1\n";
    for _ in 0..2_000 * scale() {
        let _ = data::parse_csv(&mutate_bytes(csv, &mut rng), "m.csv", &spec, &Default::default());
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut idx = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3];
    idx.extend([1, 2, 3, 4, 5, 6]);
    let labels = [0u8, 0, 8, 1, 0, 0, 0, 2, 1, 3];
    let (images_path, labels_path) = (dir.path().join("i.idx"), dir.path().join("l.idx"));
    std::fs::write(&labels_path, labels).expect("write");
    for _ in 0..2_000 * scale() {
        std::fs::write(&images_path, mutate_bytes(&idx, &mut rng)).expect("write");
        let source = nnc::check::DataSource::Idx {
            images: "i.idx".into(),
            labels: "l.idx".into(),
            test_images: None,
            test_labels: None,
        };
        let _ = data::load(&source, dir.path(), &spec);
    }
    let checked = check_source(
        "m.nn",
        "model m { input x: [4] target y: class(3)
        x |> dense(3) => p  loss = cross_entropy(p, y)  train { batch = 2 } }",
    );
    let model = &checked.models[0];
    let trainer = nnc::train::Trainer::new(model, model.train.clone(), nnc::train::Backend::Interp).expect("trainer");
    let bytes =
        nnc::checkpoint::to_bytes(&trainer, &nnc::checkpoint::Origin::unnamed("source", &nnc::data::Scaler::None))
            .expect("bytes");
    for _ in 0..2_000 * scale() {
        let _ = nnc::checkpoint::from_bytes(&mutate_bytes(&bytes, &mut rng));
    }
}
