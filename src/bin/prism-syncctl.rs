//! `prism-syncctl`: the control client. All of it lives in `prism_sync::ctl`.

fn main() {
    std::process::exit(prism_sync::ctl::run());
}
