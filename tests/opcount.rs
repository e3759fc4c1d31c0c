//! The operation counter (`mmaudio::opcount`) and the op budget of the generic paths (what
//! a GPU runs: one kernel launch per operation or more).
//!
//! `cargo test --release --test opcount -- --nocapture`

use candle_core::{DType, Device, Tensor};
use mmaudio::opcount::{CountingAlloc, count};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn ops<R>(f: impl FnOnce() -> R) -> u64 {
    count(f).expect("counting works").1.ops
}

/// Operations that make data count one each; views count nothing.
#[test]
fn counts_storages_not_views() {
    let dev = Device::Cpu;
    let a = Tensor::randn(0f32, 1., (4, 6), &dev).unwrap();
    let b = Tensor::randn(0f32, 1., (4, 6), &dev).unwrap();
    assert_eq!(ops(|| (&a + &b).unwrap()), 1);
    assert_eq!(ops(|| a.narrow(0, 1, 2).unwrap()), 0);
    assert_eq!(ops(|| a.reshape((2, 12)).unwrap()), 0);
    assert_eq!(ops(|| a.t().unwrap()), 0);
    assert_eq!(ops(|| a.t().unwrap().contiguous().unwrap()), 1);
    assert_eq!(ops(|| a.contiguous().unwrap()), 0);
    assert_eq!(ops(|| a.to_dtype(DType::F32).unwrap()), 0);
    assert_eq!(ops(|| a.to_dtype(DType::BF16).unwrap()), 1);
    assert_eq!(ops(|| Tensor::cat(&[&a, &b, &a], 0).unwrap()), 1);
    assert_eq!(ops(|| a.matmul(&b.t().unwrap()).unwrap()), 1);
    assert_eq!(ops(|| Tensor::zeros(5, DType::F32, &dev).unwrap()), 1);
    assert_eq!(
        ops(|| a.broadcast_add(&b.narrow(0, 0, 1).unwrap()).unwrap()),
        1
    );
    assert_eq!(
        ops(|| (&a * 2.0).unwrap().exp().unwrap().sum_all().unwrap()),
        3
    );
    let w = Tensor::ones(6, DType::F32, &dev).unwrap();
    assert_eq!(
        ops(|| candle_nn::ops::layer_norm(&a, &w, &w, 1e-5).unwrap()),
        1
    );
    assert_eq!(ops(|| candle_nn::ops::softmax_last_dim(&a).unwrap()), 1);
    // nothing: nothing
    assert_eq!(ops(|| ()), 0);
    // many: exactly
    assert_eq!(
        ops(|| {
            let mut x = a.clone();
            for _ in 0..100 {
                x = (&x + &b).unwrap();
            }
            x
        }),
        100
    );
}

/// The generic building blocks of the network and of the vocoders' activations issue the
/// few operations their docs promise.
#[test]
fn generic_blocks_issue_few_ops() {
    use mmaudio::ops::{CenteredNorm, Im2colCache, im2col_time_generic, ln_modulate_generic};
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (2, 50, 32), &dev).unwrap();
    // im2col: the copy into the layer's padded buffer + one gather, once the buffer and the
    // index exist
    let cache = Im2colCache::default();
    im2col_time_generic(&x, 3, 1, &cache).unwrap();
    assert_eq!(ops(|| im2col_time_generic(&x, 3, 1, &cache).unwrap()), 2);
    assert_eq!(ops(|| im2col_time_generic(&x, 7, 3, &cache).unwrap()), 4);
    let y = Tensor::randn(0f32, 1., (2, 50, 32), &dev).unwrap();
    let cols = im2col_time_generic(&y, 7, 3, &cache).unwrap();
    assert_eq!(
        cols.to_vec3::<f32>().unwrap(),
        mmaudio::ops::im2col_time(&y, 7, 3)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap(),
        "the padded buffer is refilled per call"
    );
    assert_eq!(ops(|| im2col_time_generic(&x, 7, 3, &cache).unwrap()), 2);
    // LayerNorm: mean (one matmul), subtract, candle's kernel
    let norm = CenteredNorm::new(32, 1e-5, DType::F32, &dev).unwrap();
    assert_eq!(ops(|| norm.forward(&x).unwrap()), 3);
    let m = Tensor::randn(0f32, 1., (2, 1, 6 * 32), &dev).unwrap();
    assert_eq!(
        ops(|| ln_modulate_generic(&x, &m, 0, 1, &norm, true).unwrap()),
        5
    );
    assert_eq!(
        ops(|| ln_modulate_generic(&x, &m, 0, 1, &norm, false).unwrap()),
        6
    );

    // the anti-aliased activation: two gathers, two GEMMs with an add each, Snake's five
    // element-wise ops, the final crop; nothing per call once the length is known
    use mmaudio::vocoder::ops::{AntiAliasAct, SnakeParams, kaiser_sinc_filter};
    let c = 8;
    let f = Tensor::from_vec(kaiser_sinc_filter(0.25, 0.3, 12), (1, 1, 12), &dev).unwrap();
    let alpha = Tensor::ones(c, DType::F32, &dev).unwrap();
    let act = AntiAliasAct::new(
        SnakeParams {
            alpha: alpha.clone(),
            inv_beta: alpha,
        },
        f.clone(),
        f,
    )
    .unwrap();
    let s = Tensor::randn(0f32, 1., (1, c, 1000), &dev).unwrap();
    act.forward_polyphase(&s).unwrap();
    assert_eq!(ops(|| act.forward_polyphase(&s).unwrap()), 12);
}

/// Whole sampler steps of the network on the generic path: the count per step at the depth
/// of small_16k and large_44k_v2 (narrow widths: the count does not depend on them), with a
/// budget per block that catches any op added per call.
#[test]
fn network_step_op_budget() {
    use mmaudio::net::MmAudioNet;
    use mmaudio::sampler::{EulerSampler, FeatureSet, SeqLens, generate_latents};
    mmaudio::device::set_fast_cpu_kernels(false);
    let dev = Device::Cpu;
    for variant in [mmaudio::Variant::Small16k, mmaudio::Variant::Large44kV2] {
        let mut cfg = variant.net_config();
        // narrow, same structure (heads of 64 channels, more than one: a single head would
        // make some head regroupings free)
        cfg.hidden_dim = 128;
        cfg.num_heads = 2;
        cfg.clip_dim = 16;
        cfg.sync_dim = 16;
        cfg.text_dim = 16;
        let vb =
            mmaudio::weights::random::RandomWeights::on_device(3).var_builder(DType::F32, &dev);
        let net = MmAudioNet::new(vb, &cfg).unwrap();
        let lens = SeqLens::from(variant.mode().sequence(8.0));
        let randn = |s: &[usize]| Tensor::randn(0f32, 1., s, &dev).unwrap();
        let feats = FeatureSet {
            clip: Some(randn(&[1, lens.clip, cfg.clip_dim])),
            sync: Some(randn(&[1, lens.sync, cfg.sync_dim])),
            text: Some(randn(&[1, cfg.text_seq_len, cfg.text_dim])),
            negative_text: None,
        };
        let x0 = randn(&[1, lens.latent, cfg.latent_dim]);
        let run = |steps: usize| {
            let s = EulerSampler::new(steps, 4.5);
            generate_latents(&net, &s, &feats, lens, &x0, None, None).unwrap();
            ops(|| generate_latents(&net, &s, &feats, lens, &x0, None, None).unwrap())
        };
        let (one, two) = (run(1), run(2));
        let per_step = two - one;
        let joint = cfg.joint_depth() as u64;
        let fused = cfg.fused_depth as u64;
        eprintln!(
            "{variant}: {per_step} ops per step ({joint} joint, {fused} fused blocks), {} per window besides",
            one - per_step
        );
        // see BENCHMARKS.md (GPU path): per joint block ≈ 100, per fused block ≈ 36
        assert!(
            per_step <= 100 * joint + 36 * fused + 40,
            "{variant}: {per_step} ops per step"
        );
    }
    mmaudio::device::set_fast_cpu_kernels(true);
}
