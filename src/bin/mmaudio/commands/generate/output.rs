//! Output files: what each extension gets, and how a file is written so that a failed,
//! killed or interrupted run never leaves a broken file under the output's name (nor
//! destroys an existing one): the pipeline writes `NAME.partial` in the same folder, which
//! is renamed to `NAME` (atomically, on the same file system) only once it is complete.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// What the output file gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The soundtrack alone (`wavenc`, `flacenc`).
    Audio { encoder: &'static str },
    /// The input's video stream copied + the soundtrack.
    Mux {
        muxer: &'static str,
        /// `aac`, `flac` or `opus`.
        audio: &'static str,
    },
}

impl Output {
    /// Whether the soundtrack is encoded with a lossy codec that takes a bitrate.
    pub fn lossy(&self) -> bool {
        matches!(
            self,
            Output::Mux {
                audio: "aac" | "opus",
                ..
            }
        )
    }
}

/// The output extensions, for messages.
pub const EXTENSIONS: &str = ".wav, .flac, .mp4, .m4v, .mov, .mkv or .webm";

pub fn output_kind(path: &Path) -> Result<Output> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    Ok(match ext.as_str() {
        "wav" => Output::Audio { encoder: "wavenc" },
        "flac" => Output::Audio { encoder: "flacenc" },
        "mp4" | "m4v" => Output::Mux {
            muxer: "mp4mux",
            audio: "aac",
        },
        "mov" => Output::Mux {
            muxer: "qtmux",
            audio: "aac",
        },
        "mkv" => Output::Mux {
            muxer: "matroskamux",
            audio: "flac",
        },
        "webm" => Output::Mux {
            muxer: "webmmux",
            audio: "opus",
        },
        _ => bail!(
            "unknown output type `{}`: use .wav or .flac (the soundtrack alone) or .mp4, .mov, \
             .mkv or .webm (the input's video with the new soundtrack)",
            path.display()
        ),
    })
}

/// Where the output is written until it is complete: `NAME.partial` next to it.
pub fn partial_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

/// A file being written under its partial name. Dropped without [`Partial::commit`], the
/// partial file is removed.
#[derive(Debug)]
pub struct Partial {
    out: PathBuf,
    tmp: PathBuf,
    done: bool,
}

impl Partial {
    /// Start writing `out`: removes a stale partial file of an earlier, killed run.
    pub fn new(out: &Path) -> Result<Self> {
        let tmp = partial_path(out);
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing the stale {}", tmp.display()));
            }
        }
        Ok(Self {
            out: out.to_path_buf(),
            tmp,
            done: false,
        })
    }

    /// The path the pipeline writes.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The file is complete: flush it to disk and give it its name (replacing an existing
    /// file atomically).
    pub fn commit(mut self) -> Result<()> {
        let f = std::fs::File::open(&self.tmp)
            .with_context(|| format!("the pipeline did not write {}", self.tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("flushing {}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.out).with_context(|| {
            format!("renaming {} to {}", self.tmp.display(), self.out.display())
        })?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_types() {
        assert_eq!(
            output_kind(Path::new("a/b.WAV")).unwrap(),
            Output::Audio { encoder: "wavenc" }
        );
        assert_eq!(
            output_kind(Path::new("x.mkv")).unwrap(),
            Output::Mux {
                muxer: "matroskamux",
                audio: "flac"
            }
        );
        assert!(output_kind(Path::new("x.mp4")).unwrap().lossy());
        assert!(!output_kind(Path::new("x.mkv")).unwrap().lossy());
        let e = output_kind(Path::new("x.avi")).unwrap_err().to_string();
        assert!(e.contains("x.avi") && e.contains(".wav"), "{e}");
        assert!(output_kind(Path::new("noext")).is_err());
    }

    #[test]
    fn partial_file_is_renamed_on_commit_and_removed_otherwise() {
        let dir = std::env::temp_dir().join(format!("mmaudio-partial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("a.wav");
        assert_eq!(partial_path(&out), dir.join("a.wav.partial"));
        std::fs::write(&out, b"old").unwrap();

        // dropped: the partial file goes, the existing output stays
        let p = Partial::new(&out).unwrap();
        std::fs::write(p.path(), b"half").unwrap();
        drop(p);
        assert!(!partial_path(&out).exists());
        assert_eq!(std::fs::read(&out).unwrap(), b"old");

        // a stale partial file of a killed run is removed at the start
        std::fs::write(partial_path(&out), b"stale").unwrap();
        let p = Partial::new(&out).unwrap();
        assert!(!partial_path(&out).exists());
        std::fs::write(p.path(), b"new").unwrap();
        p.commit().unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
        assert!(!partial_path(&out).exists());

        // commit without a file written fails and leaves the output alone
        let p = Partial::new(&out).unwrap();
        assert!(p.commit().is_err());
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
