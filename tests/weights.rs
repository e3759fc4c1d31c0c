//! Weight loading: official PyTorch `.pth` files (made by `torch.save`), our `.pth` writer,
//! safetensors, and the error messages users see for missing, corrupt, mis-shaped and
//! wrong-variant files.

use candle_core::{DType, Device, Tensor};
use mmaudio::NetConfig;
use mmaudio::net::{MmAudioNet, random_weights};
use mmaudio::weights::{WeightFile, write_pth};
use std::collections::HashMap;
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mmaudio-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn vals(wf: &WeightFile, k: &str) -> Vec<f32> {
    wf.load(k, DType::F32, &Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `tests/data/torch_saved*.pth` were written by `torch.save` (torch 2.15) from small tensors
/// with known values: f32, f16, bf16, a transposed (strided) view and an int64 scalar.
#[test]
fn reads_torch_saved_pth() {
    let wf = WeightFile::open(data("torch_saved.pth")).unwrap();
    assert_eq!(wf.shape("a.weight"), Some(&[3usize, 4][..]));
    assert_eq!(
        vals(&wf, "a.weight"),
        (0..12).map(|v| v as f32).collect::<Vec<_>>()
    );
    assert_eq!(vals(&wf, "a.bias"), vec![0.0, 0.5, 1.0]);
    assert_eq!(wf.stored_dtype("half"), Some(DType::F16));
    assert_eq!(vals(&wf, "half"), vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.25]);
    assert_eq!(wf.stored_dtype("bf"), Some(DType::BF16));
    assert_eq!(vals(&wf, "bf"), vec![-1.5, -0.5, 0.5, 1.5]);
    // arange(6).reshape(2, 3).t()  -> [[0, 3], [1, 4], [2, 5]]
    assert_eq!(wf.shape("transposed"), Some(&[3usize, 2][..]));
    assert_eq!(vals(&wf, "transposed"), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);

    let nested =
        WeightFile::open_with_key(data("torch_saved_nested.pth"), Some("generator")).unwrap();
    assert_eq!(vals(&nested, "a.bias"), vec![0.0, 0.5, 1.0]);
    let err = WeightFile::open_with_key(data("torch_saved_nested.pth"), Some("nope"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("torch_saved_nested.pth"), "{err}");
}

#[test]
fn pth_writer_round_trip() {
    let dir = tmpdir("pth");
    let dev = Device::Cpu;
    let tensors = vec![
        (
            "x.weight".to_string(),
            Tensor::arange(0f32, 24., &dev)
                .unwrap()
                .reshape((2, 3, 4))
                .unwrap(),
        ),
        (
            "x.bias".to_string(),
            Tensor::new(&[1.5f32, -2.0], &dev).unwrap(),
        ),
        (
            "h".to_string(),
            Tensor::new(&[0.5f32, 3.0], &dev)
                .unwrap()
                .to_dtype(DType::F16)
                .unwrap(),
        ),
        (
            "b".to_string(),
            Tensor::new(&[0.25f32], &dev)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap(),
        ),
        (
            "big".to_string(),
            Tensor::zeros(70_000, DType::F32, &dev).unwrap(),
        ),
    ];
    for top in [None, Some("generator")] {
        let p = dir.join(format!("rt-{}.pth", top.unwrap_or("flat")));
        write_pth(&p, &tensors, top).unwrap();
        let wf = WeightFile::open_with_key(&p, top).unwrap();
        assert_eq!(wf.keys().len(), tensors.len());
        for (k, t) in &tensors {
            assert_eq!(wf.shape(k).unwrap(), t.dims(), "{k}");
            assert_eq!(wf.stored_dtype(k), Some(t.dtype()), "{k}");
            let got: Vec<f32> = vals(&wf, k);
            let want: Vec<f32> = t
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(got, want, "{k}");
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

fn tiny_cfg() -> NetConfig {
    NetConfig {
        latent_dim: 8,
        clip_dim: 32,
        sync_dim: 24,
        text_dim: 16,
        hidden_dim: 64,
        depth: 3,
        fused_depth: 1,
        num_heads: 1,
        mlp_ratio: 4.0,
        text_seq_len: 77,
        v2: false,
    }
}

fn save_st(path: &std::path::Path, sd: &HashMap<String, Tensor>) {
    candle_core::safetensors::save(sd, path).unwrap();
}

/// The same random network loads from safetensors (f32 and f16) and from `.pth`, and gives
/// the same velocity.
#[test]
fn net_loads_from_all_formats() {
    let dir = tmpdir("net");
    let cfg = tiny_cfg();
    let sd = random_weights(&cfg, 3).unwrap();
    let st = dir.join("net.safetensors");
    save_st(&st, &sd);
    let mut items: Vec<(String, Tensor)> = sd.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let pth = dir.join("net.pth");
    write_pth(&pth, &items, None).unwrap();
    let half: HashMap<String, Tensor> = sd
        .iter()
        .map(|(k, v)| (k.clone(), v.to_dtype(DType::F16).unwrap()))
        .collect();
    let st16 = dir.join("net16.safetensors");
    save_st(&st16, &half);

    let dev = Device::Cpu;
    let n = 20;
    let mut rng = mmaudio::rng::Rng::new(5);
    let clip = rng.randn(&[1, 8, cfg.clip_dim], &dev).unwrap();
    let sync = rng.randn(&[1, 16, cfg.sync_dim], &dev).unwrap();
    let text = rng.randn(&[1, 77, cfg.text_dim], &dev).unwrap();
    let x = rng.randn(&[1, n, cfg.latent_dim], &dev).unwrap();
    let flow = |p: &std::path::Path| -> Vec<f32> {
        let net = MmAudioNet::load_file(p, &cfg, DType::F32, &dev).unwrap();
        net.forward(&x, &clip, &sync, &text, &[0.25])
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let a = flow(&st);
    let b = flow(&pth);
    assert_eq!(a, b, ".pth and safetensors must load identical weights");
    let c = flow(&st16);
    let max = a
        .iter()
        .zip(&c)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        max > 0.0 && max < 5e-2,
        "f16-stored weights loaded as f32: max diff {max}"
    );
    // load in bf16 and run
    let net = MmAudioNet::load_file(&st, &cfg, DType::BF16, &dev).unwrap();
    let y = net.forward(&x, &clip, &sync, &text, &[0.25]).unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn clear_errors_for_bad_files() {
    let dir = tmpdir("err");
    let cfg = tiny_cfg();
    let dev = Device::Cpu;
    let sd = random_weights(&cfg, 4).unwrap();

    // missing file
    let missing = dir.join("nope.pth");
    let e = MmAudioNet::load_file(&missing, &cfg, DType::F32, &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("nope.pth") && e.contains("not found"), "{e}");

    // missing tensor: named with file and key
    let mut sd_missing = sd.clone();
    sd_missing.remove("fused_blocks.0.attn.qkv.weight");
    let p = dir.join("missing.safetensors");
    save_st(&p, &sd_missing);
    let e = MmAudioNet::load_file(&p, &cfg, DType::F32, &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("missing.safetensors") && e.contains("fused_blocks.0.attn.qkv.weight"),
        "{e}"
    );

    // mis-shaped tensor: key, expected and actual shape
    let mut sd_bad = sd.clone();
    sd_bad.insert(
        "clip_cond_proj.weight".into(),
        Tensor::zeros((64, 63), DType::F32, &dev).unwrap(),
    );
    let p = dir.join("badshape.safetensors");
    save_st(&p, &sd_bad);
    let e = MmAudioNet::load_file(&p, &cfg, DType::F32, &dev)
        .err()
        .unwrap()
        .to_string();
    eprintln!("example error: {e}");
    assert!(
        e.contains("badshape.safetensors") && e.contains("clip_cond_proj.weight"),
        "{e}"
    );
    assert!(e.contains("[64, 63]") && e.contains("[64, 64]"), "{e}");

    // extra tensors (e.g. a deeper checkpoint): rejected like load_state_dict(strict=True)
    let mut sd_extra = sd.clone();
    sd_extra.insert(
        "bogus.weight".into(),
        Tensor::zeros(3, DType::F32, &dev).unwrap(),
    );
    let p = dir.join("extra.safetensors");
    save_st(&p, &sd_extra);
    let e = MmAudioNet::load_file(&p, &cfg, DType::F32, &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("extra.safetensors") && e.contains("bogus.weight"),
        "{e}"
    );
    // ...but the non-persistent buffers old checkpoints carry are accepted
    let mut sd_buf = sd.clone();
    sd_buf.insert(
        "t_embed.freqs".into(),
        Tensor::zeros(128, DType::F32, &dev).unwrap(),
    );
    let p = dir.join("buffers.safetensors");
    save_st(&p, &sd_buf);
    MmAudioNet::load_file(&p, &cfg, DType::F32, &dev).unwrap();

    // wrong variant: a file of another configuration names what it looks like
    let other = NetConfig {
        depth: 4,
        fused_depth: 2,
        ..cfg.clone()
    };
    let p = dir.join("other.safetensors");
    save_st(&p, &random_weights(&other, 1).unwrap());
    let e = MmAudioNet::load_file(&p, &cfg, DType::F32, &dev)
        .err()
        .unwrap()
        .to_string();
    eprintln!("example error: {e}");
    assert!(
        e.contains("other.safetensors") && e.contains("depth 4") && e.contains("depth 3"),
        "{e}"
    );

    // truncated and garbage files
    let good = dir.join("good.safetensors");
    save_st(&good, &sd);
    let bytes = std::fs::read(&good).unwrap();
    let trunc = dir.join("trunc.safetensors");
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    let e = MmAudioNet::load_file(&trunc, &cfg, DType::F32, &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("trunc.safetensors"), "{e}");
    let garbage = dir.join("garbage.pth");
    std::fs::write(&garbage, b"this is not a checkpoint at all").unwrap();
    let e = MmAudioNet::load_file(&garbage, &cfg, DType::F32, &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("garbage.pth") && e.contains("neither"), "{e}");
    let mut items: Vec<(String, Tensor)> = sd.into_iter().collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let pth = dir.join("trunc.pth");
    write_pth(&pth, &items, None).unwrap();
    let bytes = std::fs::read(&pth).unwrap();
    std::fs::write(&pth, &bytes[..bytes.len() - 100]).unwrap();
    let e = MmAudioNet::load_file(&pth, &cfg, DType::F32, &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("trunc.pth"), "{e}");
    std::fs::remove_dir_all(dir).ok();
}
