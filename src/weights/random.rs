//! Random weights with the official key names and shapes, for benchmarks at real size and
//! for the small test models (`mmaudio make-test-model`).
//!
//! [`RandomWeights`] is a `VarBuilder` backend: every tensor a model constructor asks for is
//! drawn on demand, so any model of the crate can be built at any size without a file.
//! Values follow a rule chosen so that every parameter matters (the official initialisers
//! zero the adaLN and output layers, which would make a random model trivial): matrices
//! `N(0, 1)/√fan_in`, vectors named `*weight` `1 + 0.1·N`, other vectors `0.1·N`.

use crate::error::Result;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Deterministic random weights: each tensor is drawn from a generator seeded by `seed` and
/// the tensor's name, so the same seed builds the same model. With recording on, the drawn
/// tensors are kept and [`recorded`](Self::recorded) returns them (to write checkpoints).
/// [`RandomWeights::on_device`] draws directly on the target device instead (much faster
/// for multi-GB models on a GPU; values then depend on the device's generator).
#[derive(Debug)]
pub struct RandomWeights {
    seed: u64,
    record: Option<Mutex<Vec<(String, Tensor)>>>,
    on_device: bool,
}

impl RandomWeights {
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            seed,
            record: None,
            on_device: false,
        })
    }

    pub fn recording(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            seed,
            record: Some(Default::default()),
            on_device: false,
        })
    }

    /// Draw on the device the model is built on (for benchmarks).
    pub fn on_device(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            seed,
            record: None,
            on_device: true,
        })
    }

    /// A `VarBuilder` that draws every requested tensor.
    pub fn var_builder(self: &Arc<Self>, dtype: DType, dev: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(RandomBackend(self.clone())), dtype, dev.clone())
    }

    /// The tensors drawn so far (float32, CPU), in request order.
    pub fn recorded(&self) -> Vec<(String, Tensor)> {
        self.record
            .as_ref()
            .map(|r| r.lock().unwrap().clone())
            .unwrap_or_default()
    }

    fn scale(name: &str, dims: &[usize]) -> (f64, f64) {
        if dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            (0.0, 1.0 / (fan_in.max(1) as f64).sqrt())
        } else if name.ends_with("weight") {
            (1.0, 0.1)
        } else {
            (0.0, 0.1)
        }
    }

    fn draw(
        &self,
        name: &str,
        dims: &[usize],
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let (mean, std) = Self::scale(name, dims);
        if self.on_device && !dev.is_cpu() {
            return Tensor::randn(mean as f32, std as f32, dims, dev)?.to_dtype(dtype);
        }
        // FNV-1a of the name, mixed with the seed
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        });
        let mut rng = crate::rng::Rng::new(h ^ self.seed.rotate_left(17));
        let t = ((rng.randn(dims, &Device::Cpu)? * std)? + mean)?;
        if let Some(r) = &self.record {
            r.lock().unwrap().push((name.to_string(), t.clone()));
        }
        t.to_dtype(dtype)?.to_device(dev)
    }
}

struct RandomBackend(Arc<RandomWeights>);

impl candle_nn::var_builder::SimpleBackend for RandomBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.draw(name, s.dims(), dtype, dev)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights: `{name}` requested without a shape")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// A full random state dict (f32, CPU) for the parameters `build` asks for.
pub fn random_state_dict(
    seed: u64,
    build: impl FnOnce(VarBuilder) -> Result<()>,
) -> Result<HashMap<String, Tensor>> {
    let rw = RandomWeights::recording(seed);
    build(rw.var_builder(DType::F32, &Device::Cpu))?;
    Ok(rw.recorded().into_iter().collect())
}
