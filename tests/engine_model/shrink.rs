//! Shrinking a failing case of the engine model to a small one that still
//! fails: fewer devices, no deep or wide tree (or smaller ones), and the
//! fewest steps (delta debugging over the step list). It knows nothing of
//! engines; it calls `fails` on candidate cases and keeps those that fail.

use super::spec::Spec;

/// At most this many candidate cases are tried.
const MAX_TRIES: usize = 400;

/// The smallest case this finds that still fails, from `failing` (which
/// does, with its tree sizes filled in) and its full step list
/// `all_steps`.
pub fn shrink(failing: &Spec, all_steps: Vec<usize>, fails: &mut dyn FnMut(&Spec) -> bool) -> Spec {
    let mut tries = 0;
    let mut attempt = |candidate: &Spec, tries: &mut usize| {
        *tries += 1;
        *tries <= MAX_TRIES && fails(candidate)
    };
    let mut best = failing.clone();
    if best.steps.is_none() {
        best.steps = Some(all_steps);
    }
    // Fewer devices first: it changes which device each step picks, so the
    // steps are shrunk after (and the devices tried again once they are).
    best = fewer_devices(best, &mut |c: &Spec| attempt(c, &mut tries));
    best = shrink_trees(best, &mut |c: &Spec| attempt(c, &mut tries));
    for _ in 0..2 {
        let steps = best.steps.clone().unwrap_or_default();
        let required: Vec<usize> = best.crash.map(|c| c.step).into_iter().collect();
        let kept = ddmin(steps, &required, &mut |steps: &[usize]| {
            let candidate = Spec {
                steps: Some(steps.to_vec()),
                ..best.clone()
            };
            attempt(&candidate, &mut tries)
        });
        best.steps = Some(kept);
        let before = best.device_count();
        best = fewer_devices(best, &mut |c: &Spec| attempt(c, &mut tries));
        if best.device_count() == before {
            break;
        }
    }
    // With fewer steps, the trees may shrink further.
    shrink_trees(best, &mut |c: &Spec| attempt(c, &mut tries))
}

/// The fewest devices with which the case still fails.
fn fewer_devices(best: Spec, attempt: &mut dyn FnMut(&Spec) -> bool) -> Spec {
    for devices in 1..best.device_count() {
        let candidate = Spec {
            devices: Some(devices),
            ..best.clone()
        };
        if attempt(&candidate) {
            return candidate;
        }
    }
    best
}

/// No deep or wide tree if the case fails without, else halves them while
/// it still fails. The sizes are those the failing case had (never
/// `None`: the caller fills in what the seed drew).
fn shrink_trees(mut best: Spec, attempt: &mut dyn FnMut(&Spec) -> bool) -> Spec {
    for field in [TreeSize::Deep, TreeSize::Wide] {
        while let Some(size) = field.get(&best).filter(|&n| n > 0) {
            let zero = field.set(&best, 0);
            if attempt(&zero) {
                best = zero;
                break;
            }
            let half = field.set(&best, size / 2);
            if size <= 4 || !attempt(&half) {
                break;
            }
            best = half;
        }
    }
    best
}

#[derive(Clone, Copy)]
enum TreeSize {
    Deep,
    Wide,
}

impl TreeSize {
    fn get(self, spec: &Spec) -> Option<usize> {
        match self {
            TreeSize::Deep => spec.deep,
            TreeSize::Wide => spec.wide,
        }
    }

    fn set(self, spec: &Spec, size: usize) -> Spec {
        let mut out = spec.clone();
        match self {
            TreeSize::Deep => out.deep = Some(size),
            TreeSize::Wide => out.wide = Some(size),
        }
        out
    }
}

/// Delta debugging (Zeller's ddmin): a 1-minimal sublist of `items` for
/// which `fails` holds, never dropping the `required` items.
pub fn ddmin(
    items: Vec<usize>,
    required: &[usize],
    fails: &mut dyn FnMut(&[usize]) -> bool,
) -> Vec<usize> {
    let mut current = items;
    let mut chunks = 2;
    while current.len() >= 2 {
        let size = current.len().div_ceil(chunks);
        let mut reduced = false;
        for start in (0..current.len()).step_by(size) {
            let end = (start + size).min(current.len());
            // The complement of one chunk, with the required items kept.
            let candidate: Vec<usize> = current
                .iter()
                .enumerate()
                .filter(|(i, item)| !(start..end).contains(i) || required.contains(item))
                .map(|(_, item)| *item)
                .collect();
            if candidate.len() < current.len() && fails(&candidate) {
                current = candidate;
                chunks = (chunks - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if chunks >= current.len() {
                break;
            }
            chunks = (chunks * 2).min(current.len());
        }
    }
    current
}

#[test]
fn ddmin_finds_the_steps_that_make_a_case_fail() {
    let mut calls = 0;
    let kept = ddmin((0..30).collect(), &[], &mut |steps| {
        calls += 1;
        steps.contains(&4) && steps.contains(&17) && steps.contains(&18)
    });
    assert_eq!(kept, vec![4, 17, 18]);
    assert!(calls < 120, "{calls} tries");
}

#[test]
fn ddmin_keeps_the_crash_step_and_the_order() {
    let kept = ddmin((0..12).collect(), &[9], &mut |steps| {
        let five = steps.iter().position(|&s| s == 5);
        let two = steps.iter().position(|&s| s == 2);
        matches!((two, five), (Some(a), Some(b)) if a < b)
    });
    assert_eq!(kept, vec![2, 5, 9]);
}

#[test]
fn shrinking_drops_devices_trees_and_steps_a_failure_does_not_need() {
    let failing = Spec {
        seed: 7,
        deep: Some(160),
        wide: Some(2000),
        ..Spec::default()
    };
    // Fails whenever step 3 runs with a deep tree at least 20 levels deep.
    let shrunk = shrink(&failing, (0..25).collect(), &mut |spec| {
        spec.steps.as_ref().is_some_and(|s| s.contains(&3)) && spec.deep.unwrap_or(0) >= 20
    });
    assert_eq!(shrunk.devices, Some(1));
    assert_eq!(shrunk.steps, Some(vec![3]));
    assert_eq!(shrunk.wide, Some(0));
    assert_eq!(shrunk.deep, Some(20));
}
