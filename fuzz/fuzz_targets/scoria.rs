//! libFuzzer entry point for every target of `scoria::fuzzing`; `SCORIA_FUZZ_TARGET` names
//! the one to run (scripts/fuzz sets it).
#![no_main]

use std::sync::OnceLock;

fn target() -> fn(&[u8]) {
    static RUN: OnceLock<fn(&[u8])> = OnceLock::new();
    *RUN.get_or_init(|| {
        // libfuzzer-sys's hook aborts on every panic. A panic that scoria contains (one in a
        // third-party model importer, refused as a load error: engine::import::contain) is
        // not a crash; any other still is.
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !scoria::engine::import::panic_is_contained() {
                abort(info);
            }
        }));
        let name = std::env::var("SCORIA_FUZZ_TARGET").unwrap_or_default();
        match scoria::fuzzing::target(&name) {
            Some(t) => t.run,
            None => {
                let names: Vec<&str> = scoria::fuzzing::TARGETS.iter().map(|t| t.name).collect();
                eprintln!(
                    "scoria-fuzz: set SCORIA_FUZZ_TARGET to one of: {}",
                    names.join(", ")
                );
                std::process::exit(2);
            }
        }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| target()(data));
