//! The list of files a run works on: one input, several, folders, or a JSON Lines manifest;
//! where each output goes; and which share of the list this process takes when the work
//! is spread over machines (`--shard-index/--shard-count`, or the variables Kubernetes
//! Indexed Jobs and Slurm job arrays set).

use anyhow::{Context, Result, anyhow, bail};
use mmaudio::Variant;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One file to generate a soundtrack for. `None` fields take the command line's values.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// `None`: text-only (no input video).
    pub input: Option<PathBuf>,
    pub output: PathBuf,
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    pub seed: Option<u64>,
    pub variant: Option<Variant>,
    /// Line of the manifest (1-based), for messages.
    pub line: Option<usize>,
}

impl Job {
    fn new(input: Option<PathBuf>, output: PathBuf) -> Self {
        Self {
            input,
            output,
            prompt: None,
            negative_prompt: None,
            seed: None,
            variant: None,
            line: None,
        }
    }

    /// Input name for messages.
    pub fn name(&self) -> String {
        match &self.input {
            Some(i) => i.display().to_string(),
            None => "text-only".into(),
        }
    }
}

/// One line of a manifest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestLine {
    input: PathBuf,
    #[serde(default)]
    output: Option<PathBuf>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default, alias = "negative-prompt")]
    negative_prompt: Option<String>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    variant: Option<String>,
}

/// Extensions taken from a folder (video containers GStreamer demuxes).
pub const VIDEO_EXTENSIONS: &[&str] = &[
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "mts", "m2ts", "ogv", "flv",
    "wmv", "3gp",
];

/// How outputs are named when the command line does not name them.
#[derive(Debug, Clone)]
pub struct Naming {
    /// `--output-dir`: outputs are `DIR/<input stem>.<ext>`; without it they go next to
    /// the input as `<input stem>.mmaudio.<ext>`.
    pub output_dir: Option<PathBuf>,
    /// Extension of the outputs (`wav` unless `--output-ext` says otherwise).
    pub ext: String,
}

impl Naming {
    pub fn output_for(&self, input: &Path) -> PathBuf {
        let stem = input
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        match &self.output_dir {
            Some(dir) => dir.join(format!("{stem}.{}", self.ext)),
            None => input.with_file_name(format!("{stem}.mmaudio.{}", self.ext)),
        }
    }
}

/// The video files of a folder (not its subfolders), sorted by name.
pub fn folder_inputs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        if path.is_file() && VIDEO_EXTENSIONS.contains(&ext.as_str()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Jobs for input paths given on the command line (files, or folders of videos).
pub fn from_inputs(inputs: &[PathBuf], naming: &Naming) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let files = folder_inputs(input)?;
            if files.is_empty() {
                bail!(
                    "folder {} holds no video file ({})",
                    input.display(),
                    VIDEO_EXTENSIONS.join(", ")
                );
            }
            jobs.extend(
                files
                    .into_iter()
                    .map(|f| Job::new(Some(f.clone()), naming.output_for(&f))),
            );
        } else if input.exists() {
            jobs.push(Job::new(Some(input.clone()), naming.output_for(input)));
        } else {
            bail!("input file {} does not exist", input.display());
        }
    }
    Ok(jobs)
}

/// Parse a JSON Lines manifest: one object per line with `input` (required), `output`,
/// `prompt`, `negative_prompt`, `seed` and `variant`. Relative inputs are relative to the
/// manifest's folder; relative outputs to `--output-dir` if given, else to the manifest's
/// folder. Empty lines and lines starting with `#` are skipped. Any error names the line.
pub fn from_manifest(text: &str, manifest: &Path, naming: &Naming) -> Result<Vec<Job>> {
    let base = manifest.parent().unwrap_or(Path::new(""));
    let mut jobs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let at = || format!("{} line {n}", manifest.display());
        let entry: ManifestLine = serde_json::from_str(trimmed).with_context(|| {
            format!(
                "{}: expected a JSON object with \"input\" and optionally \"output\", \
                 \"prompt\", \"negative_prompt\", \"seed\", \"variant\"",
                at()
            )
        })?;
        let input = base.join(&entry.input);
        let output = match entry.output {
            Some(o) => match &naming.output_dir {
                Some(dir) => dir.join(o),
                None => base.join(o),
            },
            None => naming.output_for(&input),
        };
        let variant = match entry.variant {
            Some(v) => Some(
                v.parse::<Variant>()
                    .map_err(|e| anyhow!("{}: variant: {e}", at()))?,
            ),
            None => None,
        };
        jobs.push(Job {
            input: Some(input),
            output,
            prompt: entry.prompt,
            negative_prompt: entry.negative_prompt,
            seed: entry.seed,
            variant,
            line: Some(n),
        });
    }
    if jobs.is_empty() {
        bail!("manifest {} lists no file", manifest.display());
    }
    Ok(jobs)
}

/// Refuse lists where two jobs write the same file or a job would overwrite an input.
pub fn check_outputs(jobs: &[Job]) -> Result<()> {
    let key = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let inputs: HashMap<PathBuf, &Job> = jobs
        .iter()
        .filter_map(|j| j.input.as_ref().map(|i| (key(i), j)))
        .collect();
    let mut outputs: HashMap<PathBuf, &Job> = HashMap::new();
    for job in jobs {
        let out = key(&job.output);
        if let Some(other) = inputs.get(&out) {
            bail!(
                "the output {} of {} would overwrite the input {}",
                job.output.display(),
                job.name(),
                other.name()
            );
        }
        if let Some(other) = outputs.insert(out, job) {
            bail!(
                "{} and {} would both be written to {} (name the outputs in a manifest, or \
                 keep inputs with the same name in different runs)",
                other.name(),
                job.name(),
                job.output.display()
            );
        }
    }
    Ok(())
}

/// This process's share of the job list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
    /// Where index and count came from (for messages and the summary).
    pub source: &'static str,
}

impl Shard {
    pub const ALL: Shard = Shard {
        index: 0,
        count: 1,
        source: "none",
    };

    /// Whether job number `i` (0-based, in list order) is this shard's: jobs are dealt
    /// round-robin, so shards are disjoint, together complete, within one job of the
    /// same size, and the same for every process reading the same list.
    pub fn takes(&self, i: usize) -> bool {
        i % self.count == self.index
    }

    /// The shard from the command line, else from the environment: `MMAUDIO_SHARD_INDEX`
    /// / `MMAUDIO_SHARD_COUNT`; a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX` (the count
    /// from `--shard-count` or `MMAUDIO_SHARD_COUNT`, which the Job sets to its
    /// `completions`); a Slurm job array's `SLURM_ARRAY_TASK_ID` with
    /// `SLURM_ARRAY_TASK_COUNT` (index `(ID − SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP`).
    pub fn resolve(
        index: Option<usize>,
        count: Option<usize>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Shard> {
        let num = |name: &str| -> Result<Option<usize>> {
            match env(name) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .map(Some)
                    .map_err(|_| anyhow!("{name}={v:?} is not a non-negative integer")),
            }
        };
        let check = |s: Shard| -> Result<Shard> {
            if s.count == 0 {
                bail!("shard count 0 (from {}): give at least 1", s.source);
            }
            if s.index >= s.count {
                bail!(
                    "shard index {} is not below the shard count {} (from {})",
                    s.index,
                    s.count,
                    s.source
                );
            }
            Ok(s)
        };
        match (index, count) {
            (Some(index), Some(count)) => {
                return check(Shard {
                    index,
                    count,
                    source: "--shard-index/--shard-count",
                });
            }
            (Some(_), None) | (None, Some(_)) if env("JOB_COMPLETION_INDEX").is_none() => {
                bail!("give --shard-index and --shard-count together")
            }
            _ => {}
        }
        if let Some(index) = num("MMAUDIO_SHARD_INDEX")? {
            let count = count
                .or(num("MMAUDIO_SHARD_COUNT")?)
                .ok_or_else(|| anyhow!("MMAUDIO_SHARD_INDEX is set but not MMAUDIO_SHARD_COUNT"))?;
            return check(Shard {
                index,
                count,
                source: "MMAUDIO_SHARD_INDEX/MMAUDIO_SHARD_COUNT",
            });
        }
        if let Some(index) = num("JOB_COMPLETION_INDEX")? {
            let count = count.or(num("MMAUDIO_SHARD_COUNT")?).ok_or_else(|| {
                anyhow!(
                    "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but the number of \
                     shards is not known: set MMAUDIO_SHARD_COUNT to the Job's completions, or \
                     give --shard-count"
                )
            })?;
            return check(Shard {
                index,
                count,
                source: "JOB_COMPLETION_INDEX (Kubernetes)",
            });
        }
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let count = match count {
                Some(c) => c,
                None => num("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                    anyhow!(
                        "SLURM_ARRAY_TASK_ID is set but not SLURM_ARRAY_TASK_COUNT: give \
                         --shard-count"
                    )
                })?,
            };
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
            if id < min || (id - min) % step != 0 {
                bail!(
                    "SLURM_ARRAY_TASK_ID={id} is not on the array's grid (min {min}, step {step})"
                );
            }
            return check(Shard {
                index: (id - min) / step,
                count,
                source: "SLURM_ARRAY_TASK_ID (Slurm)",
            });
        }
        Ok(Shard::ALL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming(dir: Option<&str>, ext: &str) -> Naming {
        Naming {
            output_dir: dir.map(PathBuf::from),
            ext: ext.into(),
        }
    }

    #[test]
    fn manifest_lines_resolve_against_the_manifest_and_output_dir() {
        let text = r#"
# comment
{"input": "a.mp4", "prompt": "rain", "seed": 7}
{"input": "/abs/b.mov", "output": "b-foley.mkv", "negative_prompt": "music", "variant": "small_16k"}

{"input": "sub/c.mp4", "negative-prompt": "speech", "output": "/x/c.wav"}
"#;
        let jobs = from_manifest(text, Path::new("/data/m.jsonl"), &naming(None, "wav")).unwrap();
        assert_eq!(jobs.len(), 3);
        assert_eq!(jobs[0].input.as_deref(), Some(Path::new("/data/a.mp4")));
        assert_eq!(jobs[0].output, PathBuf::from("/data/a.mmaudio.wav"));
        assert_eq!(jobs[0].prompt.as_deref(), Some("rain"));
        assert_eq!(jobs[0].seed, Some(7));
        assert_eq!(jobs[0].line, Some(3));
        assert_eq!(jobs[1].input.as_deref(), Some(Path::new("/abs/b.mov")));
        assert_eq!(jobs[1].output, PathBuf::from("/data/b-foley.mkv"));
        assert_eq!(jobs[1].variant, Some(Variant::Small16k));
        assert_eq!(jobs[1].negative_prompt.as_deref(), Some("music"));
        assert_eq!(jobs[2].negative_prompt.as_deref(), Some("speech"));
        assert_eq!(jobs[2].output, PathBuf::from("/x/c.wav"));
        assert_eq!(jobs[2].line, Some(6));

        let jobs = from_manifest(
            text,
            Path::new("/data/m.jsonl"),
            &naming(Some("/out"), "mp4"),
        )
        .unwrap();
        assert_eq!(jobs[0].output, PathBuf::from("/out/a.mp4"));
        assert_eq!(jobs[1].output, PathBuf::from("/out/b-foley.mkv"));
    }

    #[test]
    fn manifest_errors_name_the_line() {
        let m = Path::new("m.jsonl");
        let n = naming(None, "wav");
        let e = format!(
            "{:#}",
            from_manifest("{\"input\": \"a.mp4\"}\n{\"inptu\": \"b.mp4\"}\n", m, &n).unwrap_err()
        );
        assert!(e.contains("m.jsonl line 2") && e.contains("inptu"), "{e}");
        let e = format!("{:#}", from_manifest("not json\n", m, &n).unwrap_err());
        assert!(e.contains("line 1"), "{e}");
        let e = format!(
            "{:#}",
            from_manifest("{\"input\": \"a.mp4\", \"variant\": \"huge\"}", m, &n).unwrap_err()
        );
        assert!(e.contains("line 1") && e.contains("variant"), "{e}");
        assert!(from_manifest("\n# nothing\n", m, &n).is_err());
    }

    #[test]
    fn duplicate_outputs_and_overwritten_inputs_are_refused() {
        let n = naming(Some("/out"), "wav");
        let jobs = vec![
            Job::new(Some("/a/x.mp4".into()), n.output_for(Path::new("/a/x.mp4"))),
            Job::new(Some("/b/x.mov".into()), n.output_for(Path::new("/b/x.mov"))),
        ];
        let e = check_outputs(&jobs).unwrap_err().to_string();
        assert!(e.contains("/out/x.wav"), "{e}");
        let n = naming(Some("/a"), "mp4");
        let jobs = vec![Job::new(
            Some("/a/x.mp4".into()),
            n.output_for(Path::new("/a/x.mp4")),
        )];
        assert!(
            check_outputs(&jobs)
                .unwrap_err()
                .to_string()
                .contains("overwrite the input")
        );
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn shards_come_from_flags_kubernetes_or_slurm() {
        let none = env(&[]);
        assert_eq!(Shard::resolve(None, None, &none).unwrap(), Shard::ALL);
        let s = Shard::resolve(Some(2), Some(3), &none).unwrap();
        assert_eq!((s.index, s.count), (2, 3));
        assert!(Shard::resolve(Some(3), Some(3), &none).is_err());
        assert!(Shard::resolve(Some(1), None, &none).is_err());

        let k8s = env(&[("JOB_COMPLETION_INDEX", "4"), ("MMAUDIO_SHARD_COUNT", "5")]);
        let s = Shard::resolve(None, None, &k8s).unwrap();
        assert_eq!((s.index, s.count), (4, 5));
        assert!(s.source.contains("Kubernetes"));
        let k8s_no_count = env(&[("JOB_COMPLETION_INDEX", "1")]);
        let e = Shard::resolve(None, None, &k8s_no_count)
            .unwrap_err()
            .to_string();
        assert!(e.contains("MMAUDIO_SHARD_COUNT"), "{e}");
        let s = Shard::resolve(None, Some(2), &k8s_no_count).unwrap();
        assert_eq!((s.index, s.count), (1, 2));

        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_MIN", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        let s = Shard::resolve(None, None, &slurm).unwrap();
        assert_eq!((s.index, s.count), (2, 3));
        let stepped = env(&[
            ("SLURM_ARRAY_TASK_ID", "8"),
            ("SLURM_ARRAY_TASK_STEP", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        assert_eq!(Shard::resolve(None, None, &stepped).unwrap().index, 2);
        // the command line wins over the environment
        let s = Shard::resolve(Some(0), Some(2), &slurm).unwrap();
        assert_eq!((s.index, s.count), (0, 2));
        let bad = env(&[("MMAUDIO_SHARD_INDEX", "x"), ("MMAUDIO_SHARD_COUNT", "2")]);
        assert!(Shard::resolve(None, None, &bad).is_err());
    }

    #[test]
    fn shards_are_disjoint_complete_and_balanced() {
        for count in 1..6 {
            let mut seen = vec![0; 23];
            for index in 0..count {
                let s = Shard {
                    index,
                    count,
                    source: "test",
                };
                let mine: Vec<usize> = (0..23).filter(|&i| s.takes(i)).collect();
                assert!(mine.len() == 23 / count || mine.len() == 23 / count + 1);
                for i in mine {
                    seen[i] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "count {count}: {seen:?}");
        }
    }
}
