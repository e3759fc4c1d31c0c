//! Corrupt and mismatched model files, for every loader (flow network, VAE, both vocoders,
//! CLIP, Synchformer) and for `mmaudio.json`: a truncated file, a tensor of the wrong shape,
//! a tensor of the wrong dtype and a missing tensor must each fail the real loader
//! (`mmaudio::model::load`, what the element and the CLI call) with an error that names the
//! file and, for tensor problems, the tensor. Built on tiny models from `make-test-model`.

use candle_core::{DType, Device, Tensor};
use mmaudio::generator::LoadOptions;
use mmaudio::model_dir::{Component, MANIFEST, ModelDir, ResolvedFile};
use mmaudio::weights::{WeightFile, write_pth};
use mmaudio::{Mode, Variant};
use std::path::{Path, PathBuf};

fn variant(mode: Mode) -> Variant {
    match mode {
        Mode::Khz16 => Variant::Small16k,
        Mode::Khz44 => Variant::Small44k,
    }
}

fn fresh_model(mode: Mode, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mmaudio-corrupt-{tag}-{:?}-{}",
        mode,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    mmaudio::test_model::write_test_model(&dir, mode, 11).unwrap();
    dir
}

/// The loader's error, or a panic if it loads.
fn load_error(dir: &Path, mode: Mode) -> String {
    let opts = LoadOptions {
        model_dir: dir.to_path_buf(),
        variant: Some(variant(mode)),
        device: "cpu".into(),
        precision: "f32".into(),
    };
    match mmaudio::model::load(&opts, &mut |_| {}) {
        Ok(_) => panic!(
            "the model in {} loaded despite the corruption",
            dir.display()
        ),
        Err(e) => e.to_string(),
    }
}

fn file_of(dir: &Path, mode: Mode, c: Component) -> ResolvedFile {
    ModelDir::open(dir)
        .unwrap()
        .resolve_all(variant(mode))
        .unwrap()
        .into_iter()
        .find(|f| f.component == c)
        .unwrap()
}

/// Rewrite a weight file in its own format after `edit`.
fn rewrite(f: &ResolvedFile, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let wf = WeightFile::open_with_key(&f.path, f.key.as_deref()).unwrap();
    let mut items: Vec<(String, Tensor)> = wf
        .keys()
        .into_iter()
        .map(|k| {
            let t = wf
                .load(&k, wf.stored_dtype(&k).unwrap(), &Device::Cpu)
                .unwrap();
            (k, t)
        })
        .collect();
    drop(wf);
    edit(&mut items);
    if f.path.extension().is_some_and(|e| e == "safetensors") {
        let map: std::collections::HashMap<String, Tensor> = items.into_iter().collect();
        candle_core::safetensors::save(&map, &f.path).unwrap();
    } else {
        write_pth(&f.path, &items, f.key.as_deref()).unwrap();
    }
}

/// A 2-D-or-more float tensor of the file: the one the corruption is applied to.
fn victim(items: &[(String, Tensor)]) -> String {
    items
        .iter()
        .filter(|(k, t)| t.rank() >= 2 && t.dtype() == DType::F32 && !k.ends_with(".filter"))
        .map(|(k, _)| k.clone())
        .next()
        .expect("a weight matrix")
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn assert_names(e: &str, file: &Path, tensor: Option<&str>, what: &str) {
    assert!(
        e.contains(&name(file)),
        "{what}: the error does not name the file {}: {e}",
        name(file)
    );
    if let Some(t) = tensor {
        assert!(
            e.contains(t),
            "{what}: the error does not name the tensor {t}: {e}"
        );
    }
}

const COMPONENTS: [Component; 5] = [
    Component::Net,
    Component::Vae,
    Component::Vocoder,
    Component::Clip,
    Component::Synchformer,
];

/// Truncated file, wrong shape, wrong dtype, missing tensor — for every component of both
/// modes (the 16 kHz and the 44.1 kHz vocoders are different loaders).
#[test]
fn corrupt_weight_files_name_file_and_tensor() {
    for mode in [Mode::Khz16, Mode::Khz44] {
        let pristine = fresh_model(mode, "pristine");
        mmaudio::model::load(
            &LoadOptions {
                model_dir: pristine.clone(),
                variant: Some(variant(mode)),
                device: "cpu".into(),
                precision: "f32".into(),
            },
            &mut |_| {},
        )
        .expect("the pristine test model loads");
        for c in COMPONENTS {
            let what = |k: &str| format!("{mode:?} {c:?} {k}");
            // truncated
            let dir = fresh_model(mode, "trunc");
            let f = file_of(&dir, mode, c);
            let bytes = std::fs::read(&f.path).unwrap();
            std::fs::write(&f.path, &bytes[..bytes.len() * 2 / 3]).unwrap();
            let e = load_error(&dir, mode);
            eprintln!("{}: {e}", what("truncated"));
            assert_names(&e, &f.path, None, &what("truncated"));

            // wrong shape
            let dir = fresh_model(mode, "shape");
            let f = file_of(&dir, mode, c);
            let mut key = String::new();
            rewrite(&f, |items| {
                key = victim(items);
                let i = items.iter().position(|(k, _)| *k == key).unwrap();
                let t = &items[i].1;
                let mut dims = t.dims().to_vec();
                dims[0] += 1;
                items[i].1 = Tensor::zeros(dims, DType::F32, &Device::Cpu).unwrap();
            });
            let e = load_error(&dir, mode);
            eprintln!("{}: {e}", what("wrong shape"));
            assert_names(&e, &f.path, Some(&key), &what("wrong shape"));

            // wrong dtype (an integer tensor where a float weight belongs)
            let dir = fresh_model(mode, "dtype");
            let f = file_of(&dir, mode, c);
            let mut key = String::new();
            rewrite(&f, |items| {
                key = victim(items);
                let i = items.iter().position(|(k, _)| *k == key).unwrap();
                items[i].1 = items[i].1.to_dtype(DType::I64).unwrap();
            });
            let e = load_error(&dir, mode);
            eprintln!("{}: {e}", what("wrong dtype"));
            assert_names(&e, &f.path, Some(&key), &what("wrong dtype"));
            assert!(
                e.contains("i64") || e.contains("I64"),
                "{}: {e}",
                what("wrong dtype")
            );

            // missing tensor
            let dir = fresh_model(mode, "missing");
            let f = file_of(&dir, mode, c);
            let mut key = String::new();
            rewrite(&f, |items| {
                key = victim(items);
                items.retain(|(k, _)| *k != key);
            });
            let e = load_error(&dir, mode);
            eprintln!("{}: {e}", what("missing tensor"));
            assert_names(&e, &f.path, Some(&key), &what("missing tensor"));
            let _ = std::fs::remove_dir_all(&dir);
        }
        for tag in ["pristine", "trunc", "shape", "dtype"] {
            let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!(
                "mmaudio-corrupt-{tag}-{:?}-{}",
                mode,
                std::process::id()
            )));
        }
    }
}

/// `mmaudio.json`: truncated, a configuration that does not match the file (wrong shapes), a
/// value of the wrong type, and a component entry whose file is missing.
#[test]
fn corrupt_manifest_is_named() {
    let mode = Mode::Khz16;
    let manifest = |dir: &Path| dir.join(MANIFEST);
    let read = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(manifest(dir)).unwrap()).unwrap()
    };
    let write = |dir: &Path, v: &serde_json::Value| {
        std::fs::write(manifest(dir), serde_json::to_string_pretty(v).unwrap()).unwrap()
    };

    // truncated
    let dir = fresh_model(mode, "manifest-trunc");
    let text = std::fs::read_to_string(manifest(&dir)).unwrap();
    std::fs::write(manifest(&dir), &text[..text.len() / 2]).unwrap();
    let e = load_error(&dir, mode);
    eprintln!("truncated manifest: {e}");
    assert!(e.contains(MANIFEST), "{e}");

    // configuration that does not fit the weights: the network's hidden width doubled
    let dir = fresh_model(mode, "manifest-shape");
    let mut v = read(&dir);
    let h = v["net"]["config"]["hidden_dim"].as_u64().unwrap();
    v["net"]["config"]["hidden_dim"] = (2 * h).into();
    v["net"]["config"]["num_heads"] =
        (2 * v["net"]["config"]["num_heads"].as_u64().unwrap()).into();
    write(&dir, &v);
    let e = load_error(&dir, mode);
    eprintln!("manifest config vs weights: {e}");
    let net = file_of(&dir, mode, Component::Net);
    assert_names(&e, &net.path, None, "manifest config vs weights");
    assert!(
        e.contains(&format!("{}", 2 * h)) && e.contains(&format!("{h}")),
        "{e}"
    );

    // wrong type of a value
    let dir = fresh_model(mode, "manifest-type");
    let mut v = read(&dir);
    v["vae"]["config"]["hidden_dim"] = "wide".into();
    write(&dir, &v);
    let e = load_error(&dir, mode);
    eprintln!("manifest value type: {e}");
    assert!(
        e.contains(MANIFEST) && e.contains("VAE") && e.contains("hidden_dim"),
        "{e}"
    );

    // an entry naming a file that is not there
    let dir = fresh_model(mode, "manifest-missing");
    let mut v = read(&dir);
    v["vocoder"]["file"] = "ext_weights/no_such_vocoder.pth".into();
    write(&dir, &v);
    let e = load_error(&dir, mode);
    eprintln!("manifest missing file: {e}");
    assert!(e.contains("no_such_vocoder.pth"), "{e}");

    for tag in [
        "manifest-trunc",
        "manifest-shape",
        "manifest-type",
        "manifest-missing",
    ] {
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!(
            "mmaudio-corrupt-{tag}-{:?}-{}",
            mode,
            std::process::id()
        )));
    }
}
