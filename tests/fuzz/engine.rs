//! The fuzz driver: runs a target's seeds, then mutated copies of its
//! corpus, each case under `catch_unwind` and the counting allocator, and
//! fails with the inputs that panicked or went over their memory budget.
//!
//! There is no coverage instrumentation on stable Rust, so the corpus is
//! steered by what the target *did*: each case returns a coarse label of
//! its outcome (which error, what shape of success), and an input whose
//! label is new joins the corpus. That keeps inputs that reached a new
//! error or a new kind of answer, which is where the next mutation is most
//! likely to find something.
//!
//! Settings come from the environment so the same test runs in CI (a few
//! thousand cases) and by hand (millions, see `tests/fuzz/run.sh`):
//! `PRISM_FUZZ_CASES`, `PRISM_FUZZ_SEED`, `PRISM_FUZZ_CRASH_DIR`,
//! `PRISM_FUZZ_TRACE` and `PRISM_FUZZ_REPLAY` (see docs/fuzzing.md).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use fastrand::Rng;

use crate::{alloc, mutate};

/// What CI runs per target when `PRISM_FUZZ_CASES` is not set.
pub const DEFAULT_CASES: u64 = 4_000;

/// Inputs kept besides the seeds; a new one then replaces a random one.
const CORPUS_CAP: usize = 2_048;

/// Distinct failures kept (each with its input) before the run stops.
const MAX_FAILURES: usize = 8;

/// One thing to fuzz.
pub struct Target {
    pub name: &'static str,
    /// Valid (or nearly valid) inputs the corpus starts from.
    pub seeds: Vec<Vec<u8>>,
    /// Tokens of the format that mutations insert and overwrite with.
    pub dictionary: &'static [&'static [u8]],
    /// The longest input a mutation may produce.
    pub max_len: usize,
    /// The most a case may allocate at its peak, for an input of this
    /// many bytes.
    pub memory_budget: fn(usize) -> usize,
    /// Runs one input. Panics when a property breaks; returns a coarse
    /// label of the outcome (see [`label`]).
    pub run: fn(&[u8]) -> u64,
}

/// A label from anything hashable: `label(("err", "TooDeep"))`.
pub fn label(outcome: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    outcome.hash(&mut hasher);
    hasher.finish()
}

/// The words of a message that come from the program, for a label: the
/// first `n` plain lowercase words outside quotes that the input does not
/// contain. Quoted values, and values echoed as written (a scheme, a host,
/// a path) are input, so one kind of error gets one label whatever input
/// caused it, and the corpus keeps one input per behaviour rather than
/// per value. (A program word that the input happens to contain drops out
/// too, which splits a kind of error into a few labels at most.)
pub fn words(message: &str, input: &[u8], n: usize) -> Vec<String> {
    unquoted(message)
        .split_whitespace()
        .filter(|word| word.bytes().all(|b| b.is_ascii_lowercase()))
        .filter(|word| !input.windows(word.len()).any(|w| w == word.as_bytes()))
        .take(n)
        .map(str::to_owned)
        .collect()
}

/// `message` with every quoted part (in `"`, `'` or backquotes, with
/// backslash escapes) replaced by `…`.
fn unquoted(message: &str) -> String {
    let mut out = String::new();
    let mut quote = None;
    let mut escaped = false;
    for c in message.chars() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(close) if c == close => quote = None,
            Some(_) => {}
            None if matches!(c, '`' | '"' | '\'') => {
                quote = Some(c);
                out.push('…');
            }
            None => out.push(c),
        }
    }
    out
}

/// The seed files of a target: every file in `tests/fuzz/seeds/NAME/`,
/// in name order; a `*.lines` file gives one seed per non-empty line.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/seeds")
        .join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the seeds in {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let mut seeds = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        if file.extension().is_some_and(|ext| ext == "lines") {
            seeds.extend(
                bytes
                    .split(|&b| b == b'\n')
                    .filter(|line| !line.is_empty())
                    .map(<[u8]>::to_vec),
            );
        } else {
            seeds.push(bytes);
        }
    }
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

struct Settings {
    cases: u64,
    seed: u64,
    crash_dir: PathBuf,
    trace: bool,
    replay: Option<PathBuf>,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let number = |name: &str, default: u64| {
            var(name).map_or(default, |v| {
                v.replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
            })
        };
        Settings {
            cases: number("PRISM_FUZZ_CASES", DEFAULT_CASES),
            seed: number("PRISM_FUZZ_SEED", 1),
            crash_dir: var("PRISM_FUZZ_CRASH_DIR")
                .map_or_else(|| std::env::temp_dir().join("prism-fuzz"), PathBuf::from),
            trace: var("PRISM_FUZZ_TRACE").is_some(),
            replay: var("PRISM_FUZZ_REPLAY").map(PathBuf::from),
        }
    }
}

/// A case that broke: a panic or a budget overrun. Failures with the same
/// `key` (the place of the panic) count once.
struct Failure {
    key: String,
    what: String,
    input: Vec<u8>,
}

/// What one run saw.
#[derive(Default)]
struct Stats {
    cases: u64,
    failures: Vec<Failure>,
    /// The case with the largest peak allocation: (peak, input length).
    largest_peak: (usize, usize),
    slowest: Duration,
}

/// Runs `target` for the configured number of cases and fails, naming
/// every input that broke it, if any did.
pub fn fuzz(target: Target) {
    install_panic_hook();
    let settings = Settings::from_env();
    if let Some(file) = &settings.replay {
        return replay(&target, file);
    }
    let mut rng = Rng::with_seed(settings.seed ^ label(target.name));
    let mut corpus = target.seeds.clone();
    let mut outcomes = HashSet::new();
    let mut stats = Stats::default();
    let started = Instant::now();
    let mut last_report = started;
    while stats.cases < settings.cases && stats.failures.len() < MAX_FAILURES {
        let index = stats.cases as usize;
        let input = match target.seeds.get(index) {
            Some(seed) => seed.clone(),
            None => {
                let mut input = corpus[rng.usize(..corpus.len())].clone();
                let other = &corpus[rng.usize(..corpus.len())];
                mutate::havoc(
                    &mut rng,
                    &mut input,
                    other,
                    target.dictionary,
                    target.max_len,
                );
                input
            }
        };
        if settings.trace {
            write_input(
                &settings.crash_dir,
                &format!("{}-current", target.name),
                &input,
            );
        }
        stats.cases += 1;
        match run_case(&target, &input, &mut stats) {
            Ok(outcome) => {
                if outcomes.insert(outcome) && index >= target.seeds.len() {
                    if corpus.len() < target.seeds.len() + CORPUS_CAP {
                        corpus.push(input);
                    } else {
                        let victim = target.seeds.len() + rng.usize(..CORPUS_CAP);
                        corpus[victim] = input;
                    }
                }
            }
            Err((key, what)) => {
                if !stats.failures.iter().any(|f| f.key == key) {
                    let file = write_input(&settings.crash_dir, target.name, &input);
                    println!(
                        "fuzz {}: FAILURE {what}\n  input ({} bytes, saved to {}): {}",
                        target.name,
                        input.len(),
                        file.display(),
                        show(&input)
                    );
                    stats.failures.push(Failure { key, what, input });
                }
            }
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "fuzz {}: {} cases, {:.0} cases/s, {} in corpus, {} outcomes",
                target.name,
                stats.cases,
                stats.cases as f64 / secs,
                corpus.len(),
                outcomes.len()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz {}: {} cases in {:.1} s ({:.0} cases/s, seed {}); {} in corpus, {} distinct \
         outcomes; largest peak allocation {} bytes (input of {} bytes); slowest case {:.1} ms; \
         {} failures",
        target.name,
        stats.cases,
        secs,
        stats.cases as f64 / secs.max(1e-9),
        settings.seed,
        corpus.len(),
        outcomes.len(),
        stats.largest_peak.0,
        stats.largest_peak.1,
        stats.slowest.as_secs_f64() * 1e3,
        stats.failures.len()
    );
    let report: Vec<String> = stats
        .failures
        .iter()
        .map(|f| format!("{}\n  input: {}", f.what, show(&f.input)))
        .collect();
    assert!(
        report.is_empty(),
        "fuzz {} failed (replay one with PRISM_FUZZ_REPLAY=FILE; files in {}):\n{}",
        target.name,
        settings.crash_dir.display(),
        report.join("\n")
    );
}

/// Runs one input; `Err` says how it broke: `(key, description)`.
fn run_case(target: &Target, input: &[u8], stats: &mut Stats) -> Result<u64, (String, String)> {
    let baseline = alloc::start();
    let started = Instant::now();
    IN_CASE.with(|flag| flag.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    IN_CASE.with(|flag| flag.set(false));
    let elapsed = started.elapsed();
    let peak = alloc::peak_since(baseline);
    stats.slowest = stats.slowest.max(elapsed);
    if peak > stats.largest_peak.0 {
        stats.largest_peak = (peak, input.len());
    }
    let outcome = result.map_err(|_| {
        let (place, message) = PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default();
        (place.clone(), format!("panic at {place}: {message}"))
    })?;
    let budget = (target.memory_budget)(input.len());
    if peak > budget {
        return Err((
            "memory".to_owned(),
            format!(
                "memory: a {}-byte input allocated {peak} bytes at its peak, over its budget \
                 of {budget}",
                input.len()
            ),
        ));
    }
    Ok(outcome)
}

fn replay(target: &Target, file: &Path) {
    let input = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut stats = Stats::default();
    let result = run_case(target, &input, &mut stats);
    println!(
        "fuzz {}: replayed {} ({} bytes): {result:?}; peak allocation {} bytes; {:.1} ms",
        target.name,
        file.display(),
        input.len(),
        stats.largest_peak.0,
        stats.slowest.as_secs_f64() * 1e3
    );
    assert!(result.is_ok(), "{}: {result:?}", file.display());
}

fn write_input(dir: &Path, name: &str, input: &[u8]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let file = if name.ends_with("-current") {
        dir.join(format!("{name}.bin"))
    } else {
        let hash = blake3::hash(input).to_hex();
        dir.join(format!("{name}-{}.bin", &hash[..12]))
    };
    std::fs::write(&file, input).unwrap();
    file
}

/// The input as a Rust byte string (cut after 2 KiB), to paste into a test.
fn show(input: &[u8]) -> String {
    let shown: String = input
        .iter()
        .take(2048)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    let more = if input.len() > 2048 { "…" } else { "" };
    format!("b\"{shown}\"{more}")
}

thread_local! {
    static IN_CASE: Cell<bool> = const { Cell::new(false) };
    /// The place and message of the last panic inside a case.
    static PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// Inside a case a panic is recorded (message and place) rather than
/// printed; anywhere else it goes to the default hook, so the harness's
/// own assertion is shown as usual.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_CASE.with(Cell::get) {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let place = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let message: String = message.chars().take(300).collect();
                PANIC.with(|p| *p.borrow_mut() = Some((place, message)));
            } else {
                default(info);
            }
        }));
    });
}
