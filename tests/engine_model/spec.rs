//! What a case of the engine model is, apart from its seed: which of its
//! steps run, how many devices take part, how large its deep and wide
//! trees are, and whether it is cut short by a crash placed after a given
//! replica call of a given step's sync. A random case is a seed and
//! nothing else; a shrunk or kept case narrows these, and replays from the
//! environment variables [`Spec::replay_line`] prints.
//!
//! Every step draws from its own generator, seeded from the case's seed
//! and the step's index, so a step left out does not change what the
//! others do (only what they find: an edit picks among the files there
//! are).

/// The devices a case can have, by name.
pub const DEVICE_NAMES: [&str; 3] = ["devA", "devB", "devC"];

/// One case: a seed, and what narrows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Spec {
    pub seed: u64,
    /// How many devices (1 to 3); `None`: three.
    pub devices: Option<usize>,
    /// The indices of the steps that run, in order; `None`: every step
    /// the seed draws.
    pub steps: Option<Vec<usize>>,
    /// A crash forced after `calls` counted replica calls (on either side)
    /// of the sync at step `step`, which then ends the case (settle and
    /// check).
    pub crash: Option<Crash>,
    /// The depth of the deep tree (0: none); `None`: as the seed draws.
    pub deep: Option<usize>,
    /// The width of the wide folder (0: none); `None`: as the seed draws.
    pub wide: Option<usize>,
}

/// A crash after the `calls`-th counted replica call (local or remote) of
/// the sync at `step`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crash {
    pub step: usize,
    pub calls: u32,
}

impl Spec {
    pub fn random(seed: u64) -> Spec {
        Spec {
            seed,
            ..Spec::default()
        }
    }

    pub fn device_count(&self) -> usize {
        self.devices.unwrap_or(DEVICE_NAMES.len())
    }

    /// The generator of step `index`: independent of every other step's.
    pub fn step_rng(&self, index: usize) -> fastrand::Rng {
        let mixed = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        fastrand::Rng::with_seed(self.seed ^ mixed.rotate_left(17))
    }

    /// The generator of what step `index` does to the local side (its
    /// faults, and edits timed by its calls): apart from the step's own,
    /// so that adding them changed no other draw of any case.
    pub fn local_rng(&self, index: usize) -> fastrand::Rng {
        fastrand::Rng::with_seed(self.step_rng(index).u64(..) ^ 0x10CA_15DE_FA17_0000)
    }

    /// Reads a case from `PRISM_MODEL_SEED` and the narrowing variables,
    /// when any of those is set: `PRISM_MODEL_DEVICES`, `PRISM_MODEL_STEPS`
    /// (step indices, comma-separated), `PRISM_MODEL_CRASH` (`STEP:CALLS`),
    /// `PRISM_MODEL_DEEP`, `PRISM_MODEL_WIDE`.
    pub fn from_env(seed: u64) -> Option<Spec> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let number = |name: &str| {
            var(name).map(|v| {
                v.parse::<usize>()
                    .unwrap_or_else(|_| panic!("{name} must be a number"))
            })
        };
        let spec = Spec {
            seed,
            devices: number("PRISM_MODEL_DEVICES"),
            steps: var("PRISM_MODEL_STEPS").map(|v| {
                v.split(',')
                    .map(|s| s.trim().parse().expect("PRISM_MODEL_STEPS: step indices"))
                    .collect()
            }),
            crash: var("PRISM_MODEL_CRASH").map(|v| {
                let (step, calls) = v.split_once(':').expect("PRISM_MODEL_CRASH=STEP:CALLS");
                Crash {
                    step: step.parse().expect("PRISM_MODEL_CRASH: a step"),
                    calls: calls.parse().expect("PRISM_MODEL_CRASH: a call count"),
                }
            }),
            deep: number("PRISM_MODEL_DEEP"),
            wide: number("PRISM_MODEL_WIDE"),
        };
        (spec != Spec::random(seed)).then_some(spec)
    }

    /// The environment that replays this case alone.
    pub fn replay_env(&self) -> String {
        let mut vars = vec![format!("PRISM_MODEL_SEED={}", self.seed)];
        if let Some(n) = self.devices {
            vars.push(format!("PRISM_MODEL_DEVICES={n}"));
        }
        if let Some(steps) = &self.steps {
            let list: Vec<String> = steps.iter().map(usize::to_string).collect();
            vars.push(format!("PRISM_MODEL_STEPS={}", list.join(",")));
        }
        if let Some(crash) = self.crash {
            vars.push(format!("PRISM_MODEL_CRASH={}:{}", crash.step, crash.calls));
        }
        if let Some(deep) = self.deep {
            vars.push(format!("PRISM_MODEL_DEEP={deep}"));
        }
        if let Some(wide) = self.wide {
            vars.push(format!("PRISM_MODEL_WIDE={wide}"));
        }
        vars.push("PRISM_MODEL_CASES=1".into());
        vars.join(" ")
    }

    /// The command that replays this case alone.
    pub fn replay_line(&self) -> String {
        format!(
            "{} cargo test --test engine_model random_multi_device",
            self.replay_env()
        )
    }

    /// This case as an entry of the kept regressions.
    pub fn as_kept(&self) -> String {
        let steps = match &self.steps {
            Some(steps) => format!("Some(&{steps:?})"),
            None => "None".into(),
        };
        let crash = match self.crash {
            Some(c) => format!("Some(({}, {}))", c.step, c.calls),
            None => "None".into(),
        };
        format!(
            "Kept {{ seed: {}, devices: {:?}, steps: {steps}, crash: {crash}, deep: {:?}, wide: {:?}, why: \"…\" }}",
            self.seed, self.devices, self.deep, self.wide
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_draws_the_same_whatever_other_steps_run() {
        let spec = Spec::random(42);
        let a: Vec<u64> = (0..5).map(|i| spec.step_rng(i).u64(..)).collect();
        let b: Vec<u64> = (0..5).rev().map(|i| spec.step_rng(i).u64(..)).collect();
        assert_eq!(a, b.into_iter().rev().collect::<Vec<_>>());
        assert_ne!(a[0], a[1]);
    }
}
