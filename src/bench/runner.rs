//! Runs every selected workload on every implementation: mounts a fresh upper/work dir per
//! repetition (raw: hands over a flattened copy), times the workload, unmounts, removes.
//! A failing implementation or workload is recorded and skipped; a stop (Ctrl-C) ends the run
//! after unmounting and removing everything it made.
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::bench::config::{Config, Fault, WorkloadId};
use crate::bench::dataset::{Case, Datasets};
use crate::bench::impls::{Implementation, Stack};
use crate::bench::progress::Progress;
use crate::bench::report::{Failure, ImplInfo, ImplStatus, Sample};
use crate::bench::scratch::{self, Ctl, ScratchDir};
use crate::bench::tree;
use crate::bench::workloads::{self, Env, Measure};
use crate::{Error, Result};

pub struct Outcome {
    pub implementations: Vec<ImplInfo>,
    pub samples: Vec<Sample>,
    pub failures: Vec<Failure>,
    pub interrupted: bool,
}

pub struct Runner<'a> {
    pub cfg: &'a Config,
    pub ctl: Ctl,
    pub cold: bool,
    pub scratch: &'a ScratchDir,
    pub progress: &'a mut Progress,
}

fn io<T>(op: &'static str, path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| Error::io(op, path, e))
}

/// A flattened copy of some layers, the `raw` implementation's tree.
struct RawCopy {
    layers: Vec<PathBuf>,
    view: tree::Tree,
    dir: ScratchDir,
    /// Changed by a repetition in a way that needs a new copy.
    dirty: bool,
}

impl RawCopy {
    fn tree(&self) -> PathBuf {
        self.dir.path().join("m")
    }
}

impl Runner<'_> {
    /// Runs everything. Errors only for what makes the whole run impossible.
    pub fn run(&mut self, impls: &[Implementation]) -> Result<Outcome> {
        let mut out = Outcome {
            implementations: Vec::new(),
            samples: Vec::new(),
            failures: Vec::new(),
            interrupted: false,
        };
        let mut active = Vec::new();
        for imp in impls {
            self.progress.show(&format!("checking {}", imp.name), "");
            let status = match self.probe(imp) {
                Ok(()) => {
                    active.push(imp);
                    ImplStatus::Ran
                }
                Err(e) if scratch::is_interrupted(&e) => {
                    out.interrupted = true;
                    return Ok(out);
                }
                Err(e) => ImplStatus::Skipped {
                    reason: e.to_string(),
                },
            };
            out.implementations.push(ImplInfo {
                name: imp.name.clone(),
                command: imp.command_text(),
                version: imp.version(),
                status,
            });
        }
        let mut data = Datasets::new(self.cfg, self.scratch.path(), self.ctl.clone(), self.cold);
        for (i, &w) in self.cfg.workloads.iter().enumerate() {
            let step = format!("[{}/{}] {}", i + 1, self.cfg.workloads.len(), w.name());
            self.progress.show(&format!("{step}: generating data"), "");
            let cases = match data.cases(w) {
                Ok(c) => c,
                Err(e) if scratch::is_interrupted(&e) => {
                    out.interrupted = true;
                    return Ok(out);
                }
                Err(e) => {
                    out.failures.push(Failure {
                        implementation: "(all)".into(),
                        workload: w.name().into(),
                        error: format!("preparing the data: {e}"),
                    });
                    continue;
                }
            };
            for imp in &active {
                let r = self.run_workload(imp, w, &cases, &step, &mut out.samples);
                match r {
                    Ok(()) => {}
                    Err(e) if scratch::is_interrupted(&e) || self.ctl.stopped() => {
                        out.interrupted = true;
                        return Ok(out);
                    }
                    Err(e) => out.failures.push(Failure {
                        implementation: imp.name.clone(),
                        workload: w.name().into(),
                        error: e.to_string(),
                    }),
                }
            }
        }
        Ok(out)
    }

    /// Mounts a two-layer stack and checks it merges and accepts a write.
    fn probe(&mut self, imp: &Implementation) -> Result<()> {
        if let Some(reason) = imp.unavailable() {
            return Err(Error::Usage(reason));
        }
        if imp.is_raw() {
            return Ok(());
        }
        let dir = ScratchDir::create(self.scratch.path(), "probe")?;
        let d = dir.path();
        let layers = [d.join("l1"), d.join("l0")];
        for (l, name) in layers.iter().zip(["top", "bottom"]) {
            io("create directory", l, std::fs::create_dir_all(l.join("p")))?;
            io("write", l, std::fs::write(l.join("p").join(name), name))?;
        }
        let (upper, work, mnt) = (d.join("u"), d.join("w"), d.join("m"));
        for p in [&upper, &work, &mnt] {
            io("create directory", p, std::fs::create_dir(p))?;
        }
        let stack = Stack {
            lowers: &layers,
            upper: &upper,
            work: &work,
            mnt: &mnt,
        };
        let m = imp.mount(&stack, &d.join("mount.log"))?;
        let check = || -> Result<()> {
            for name in ["top", "bottom"] {
                let p = mnt.join("p").join(name);
                let got = io("read", &p, std::fs::read_to_string(&p))?;
                if got != name {
                    return Err(Error::Format(format!("{}: read {got:?}", p.display())));
                }
            }
            let p = mnt.join("p/new");
            io("write", &p, std::fs::write(&p, "new"))
        };
        let r = check();
        m.unmount()?;
        r?;
        if !upper.join("p/new").is_file() {
            return Err(Error::Format(format!(
                "a file written through the mount is not in the upper dir {}",
                upper.display()
            )));
        }
        dir.remove()
    }

    fn run_workload(
        &mut self,
        imp: &Implementation,
        w: WorkloadId,
        cases: &[Case],
        step: &str,
        samples: &mut Vec<Sample>,
    ) -> Result<()> {
        let start = Instant::now();
        let mut raw: Option<RawCopy> = None;
        let reps = self.cfg.reps.max(1);
        for rep in 1..=reps {
            if rep > 1 && start.elapsed() > self.cfg.budget {
                break;
            }
            for case in cases {
                self.progress.show(
                    &format!("{step} on {}", imp.name),
                    &format!("{} rep {rep}/{reps}", case.label),
                );
                let ctl = self.ctl.with_limit(self.cfg.rep_limit());
                let env = Env {
                    ctl: &ctl,
                    cold: self.cold,
                    rep,
                };
                let measures = if imp.is_raw() {
                    if raw
                        .as_ref()
                        .is_none_or(|r| r.dirty || r.layers != case.layers)
                    {
                        let t = Instant::now();
                        drop(raw.take());
                        raw = Some(self.flatten(&case.layers, &ctl)?);
                        log::debug!(
                            "{} {}: flattened copy in {:?}",
                            imp.name,
                            w.name(),
                            t.elapsed()
                        );
                    }
                    let r = raw
                        .as_mut()
                        .ok_or_else(|| Error::Usage("no flattened copy".into()))?;
                    self.inject(w, &r.tree())?;
                    nix::unistd::sync();
                    let m = workloads::run(&r.tree(), &case.input, &env)?;
                    match &case.input {
                        workloads::Input::RmRf { subtree, .. } => {
                            tree::restore_subtree(&r.layers, &r.view, subtree, &r.tree(), &ctl)?
                        }
                        _ => r.dirty = w.destructive(),
                    }
                    m
                } else {
                    self.mounted_rep(imp, w, case, &env)?
                };
                log::debug!("{} {} {} rep {rep}: done", imp.name, w.name(), case.label);
                samples.extend(
                    measures
                        .into_iter()
                        .map(|m| to_sample(imp, w, case, rep, m)),
                );
            }
        }
        Ok(())
    }

    fn flatten(&mut self, layers: &[PathBuf], ctl: &Ctl) -> Result<RawCopy> {
        let dir = ScratchDir::create(self.scratch.path(), "raw")?;
        let dest = dir.path().join("m");
        io("create directory", &dest, std::fs::create_dir(&dest))?;
        let view = tree::merged_view(layers, ctl)?;
        tree::flatten(layers, &view, &dest, ctl)?;
        Ok(RawCopy {
            layers: layers.to_vec(),
            view,
            dir,
            dirty: false,
        })
    }

    /// One repetition on a fresh upper/work dir and mount.
    fn mounted_rep(
        &mut self,
        imp: &Implementation,
        w: WorkloadId,
        case: &Case,
        env: &Env,
    ) -> Result<Vec<Measure>> {
        let rep_dir = ScratchDir::create(self.scratch.path(), "r")?;
        let d = rep_dir.path();
        let (upper, work, mnt) = (d.join("u"), d.join("w"), d.join("m"));
        for p in [&upper, &work, &mnt] {
            io("create directory", p, std::fs::create_dir(p))?;
        }
        let stack = Stack {
            lowers: &case.layers,
            upper: &upper,
            work: &work,
            mnt: &mnt,
        };
        let mounted = imp.mount(&stack, &d.join("mount.log"))?;
        // Earlier repetitions' dirty data is written back before anything is timed.
        nix::unistd::sync();
        let r = self
            .inject(w, &mnt)
            .and_then(|()| workloads::run(mounted.path(), &case.input, env));
        let u = mounted.unmount();
        let measures = r?;
        u?;
        rep_dir.remove()?;
        Ok(measures)
    }

    /// Test hook: fail or stop after mounting.
    fn inject(&self, w: WorkloadId, at: &Path) -> Result<()> {
        match self.cfg.fault {
            Some(Fault::FailAfterMount(f)) if f == w => Err(Error::Usage(format!(
                "injected failure with {} mounted",
                at.display()
            ))),
            Some(Fault::StopAfterMount(f)) if f == w => {
                self.ctl
                    .stop
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn to_sample(imp: &Implementation, w: WorkloadId, case: &Case, rep: u32, m: Measure) -> Sample {
    Sample {
        implementation: imp.name.clone(),
        workload: w.name().into(),
        metric: m.metric.into(),
        case: case.label.clone(),
        x: case.x,
        cache: m.cache,
        rep,
        seconds: m.seconds,
        ops: m.ops,
        bytes: m.bytes,
    }
}
