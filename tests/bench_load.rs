//! `nnc bench` on a machine another process keeps busy: the load is
//! reported, and with `--foreign-max` the disturbed repeats run again.
//! A test binary of its own: tests running beside it would be load too.

use std::time::{Duration, Instant};

mod common;

use common::nnc;

/// Keeps one core busy in this process (another process to `nnc`) for `busy`.
fn spin_for(busy: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < busy {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    })
}

/// `nnc bench --json` with `extra` flags while a core is kept busy.
fn bench_beside_a_busy_core(extra: &[&str]) -> serde_json::Value {
    let spinner = spin_for(Duration::from_millis(2500));
    let mut args = vec!["bench", "models/digits_mlp.nn", "--seconds", "0.5", "--json"];
    args.extend(extra);
    let (code, out, err) = nnc(&args);
    spinner.join().expect("spins");
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("valid JSON")
}

#[test]
fn a_busy_neighbour_is_reported_and_its_repeats_run_again() {
    // Without a limit every repeat is kept, and the busy core shows.
    let v = bench_beside_a_busy_core(&[]);
    assert_eq!(v["discarded_repeats"].as_u64(), Some(0), "{v}");
    let foreign = v["foreign_cores"].as_f64().unwrap_or_else(|| panic!("foreign_cores in {v}"));
    assert!(foreign >= 0.5, "a core kept busy throughout training: {v}");
    // With one, the repeats it disturbed run again once it has stopped.
    let v = bench_beside_a_busy_core(&["--foreign-max", "0.5"]);
    assert!(v["discarded_repeats"].as_u64().is_some_and(|n| n >= 1), "{v}");
    let foreign = v["foreign_cores"].as_f64().unwrap_or_else(|| panic!("foreign_cores in {v}"));
    assert!(foreign < 0.5, "the kept repeats ran on a quiet machine: {v}");
    assert!(v["train_samples_per_s"].as_f64().is_some_and(|r| r > 0.0), "{v}");
}
