//! Seeded weight initialisation: He for relu-family layers, Xavier otherwise,
//! zeros for biases, ones for batch-normalisation scales. The same seed gives the same weights on every machine.

use num_traits::Float;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::{Init, ParamInfo, numel};

pub fn init_params<T: Float>(params: &[ParamInfo], seed: u64) -> Vec<Vec<T>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    params
        .iter()
        .map(|p| {
            let n = numel(&p.shape);
            (0..n)
                .map(|i| {
                    let x = match p.init {
                        Init::Zeros => 0.0,
                        Init::Ones => 1.0,
                        Init::Range { start, end, value } => {
                            if (start..end).contains(&i) {
                                value
                            } else {
                                0.0
                            }
                        }
                        Init::Normal { std } => {
                            let z: f64 = rng.sample(StandardNormal);
                            z * std
                        }
                        Init::He { fan_in } => {
                            let z: f64 = rng.sample(StandardNormal);
                            z * (2.0 / fan_in as f64).sqrt()
                        }
                        Init::Xavier { fan_in, fan_out } => {
                            let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
                            rng.random_range(-limit..limit)
                        }
                    };
                    T::from(x).unwrap_or_else(T::zero)
                })
                .collect()
        })
        .collect()
}
