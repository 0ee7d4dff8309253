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
use crate::bench::workloads::{self, Env, Input, Measure};
use crate::{Error, Result};

pub struct Outcome {
    pub implementations: Vec<ImplInfo>,
    pub samples: Vec<Sample>,
    pub failures: Vec<Failure>,
    pub interrupted: bool,
}

pub struct Runner<'a> {
    cfg: &'a Config,
    ctl: Ctl,
    cold: bool,
    scratch: &'a ScratchDir,
    progress: &'a mut Progress,
    /// Flattened copies for `raw`, kept for the run.
    raw: Vec<RawCopy>,
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

impl<'a> Runner<'a> {
    pub fn new(
        cfg: &'a Config,
        ctl: Ctl,
        cold: bool,
        scratch: &'a ScratchDir,
        progress: &'a mut Progress,
    ) -> Self {
        Runner {
            cfg,
            ctl,
            cold,
            scratch,
            progress,
            raw: Vec::new(),
        }
    }

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
                    upper: None,
                };
                let measures = if imp.is_raw() {
                    self.raw_rep(w, case, &env)?
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

    /// One repetition on a flattened copy. Copies are kept for the whole run, keyed by their
    /// layers, and put back after each repetition: a subtree removed by rm-rf is copied again,
    /// an extracted tarball removed; only the parallel workload's scattered changes need a new
    /// copy. Copying is setup: only the stop flag limits it, not the repetition's time limit.
    fn raw_rep(&mut self, w: WorkloadId, case: &Case, env: &Env) -> Result<Vec<Measure>> {
        let idx = match self.raw.iter().position(|r| r.layers == case.layers) {
            Some(i) if !self.raw[i].dirty => i,
            found => {
                if let Some(i) = found {
                    self.raw.remove(i).dir.remove()?;
                }
                let t = Instant::now();
                let setup = self.ctl.clone();
                let copy = self.flatten(&case.layers, &setup)?;
                log::debug!("raw {}: flattened copy in {:?}", w.name(), t.elapsed());
                self.raw.push(copy);
                self.raw.len() - 1
            }
        };
        let tree = self.raw[idx].tree();
        self.inject(w, &tree)?;
        nix::unistd::sync();
        let m = workloads::run(&tree, &case.input, env);
        let r = &mut self.raw[idx];
        match &case.input {
            Input::RmRf { subtree, .. } if m.is_ok() => {
                tree::restore_subtree(&r.layers, &r.view, subtree, &tree, &self.ctl)?
            }
            Input::Untar { .. } if m.is_ok() => {
                let x = tree.join(workloads::untar_dir(env.rep));
                std::fs::remove_dir_all(&x).map_err(|e| Error::io("remove", &x, e))?
            }
            _ => r.dirty = m.is_err() || w.destructive(),
        }
        m
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
        let t = Instant::now();
        let mounted = imp.mount(&stack, &d.join("mount.log"))?;
        let mount_time = t.elapsed().as_secs_f64();
        // Earlier repetitions' dirty data is written back before anything is timed.
        nix::unistd::sync();
        let env = Env {
            upper: Some(&upper),
            ..*env
        };
        let r = self
            .inject(w, &mnt)
            .and_then(|()| workloads::run(mounted.path(), &case.input, &env));
        let u = mounted.unmount();
        let mut measures = r?;
        u?;
        rep_dir.remove()?;
        if matches!(w, WorkloadId::Lookup | WorkloadId::StatStorm) {
            // The stacks these build are the deep (lookup) and the big (stat-storm) ones.
            measures.push(Measure {
                metric: "mount, time until usable",
                cache: crate::bench::report::Cache::Warm,
                seconds: mount_time,
                ops: 1,
                bytes: None,
            });
        }
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
