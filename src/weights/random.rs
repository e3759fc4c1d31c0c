//! Random state dicts with the official key names and shapes, for benchmarks at real size
//! and for the small test models (`mmaudio make-test-model`).
//!
//! A model constructor is run once against a recording `VarMap` to learn every parameter's
//! name and official shape; each is then filled by a seeded rule chosen so that every
//! parameter matters (no zeroed adaLN/output layers as the official initialiser leaves them):
//! matrices `N(0, 1/fan_in)`, norm weights `1 + 0.1·N`, other vectors `0.05·N`.

use crate::error::Result;
use crate::rng::Rng;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;

/// Run `build` against a recording var builder and return `name → shape` of every parameter.
pub fn record_shapes(
    build: impl FnOnce(VarBuilder) -> Result<()>,
) -> Result<Vec<(String, Vec<usize>)>> {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    build(vb)?;
    let data = vm.data().lock().unwrap();
    let mut v: Vec<(String, Vec<usize>)> = data
        .iter()
        .map(|(k, var)| (k.clone(), var.dims().to_vec()))
        .collect();
    v.sort();
    Ok(v)
}

/// Fill a random value for a parameter by the rule above.
pub fn random_tensor(rng: &mut Rng, name: &str, shape: &[usize]) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut v = rng.normal_vec(n);
    let leaf = name.rsplit('.').next().unwrap_or(name);
    if shape.len() >= 2 {
        let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
        let s = 1.0 / (fan_in as f32).sqrt();
        v.iter_mut().for_each(|x| *x *= s);
    } else if leaf == "weight" && name.contains("norm") {
        v.iter_mut().for_each(|x| *x = 1.0 + 0.1 * *x);
    } else {
        v.iter_mut().for_each(|x| *x *= 0.05);
    }
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// A full random state dict for the parameters `build` registers.
pub fn random_state_dict(
    seed: u64,
    build: impl FnOnce(VarBuilder) -> Result<()>,
) -> Result<HashMap<String, Tensor>> {
    let shapes = record_shapes(build)?;
    let mut rng = Rng::new(seed);
    let mut out = HashMap::new();
    for (name, shape) in shapes {
        let t = random_tensor(&mut rng, &name, &shape)?;
        out.insert(name, t);
    }
    Ok(out)
}
