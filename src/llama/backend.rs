//! Process-wide llama.cpp backend initialisation and log filtering.

use std::ffi::{c_char, c_void, CStr};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Once;

use llama_cpp_sys_2 as sys;

static INIT: Once = Once::new();
static VERBOSE: AtomicBool = AtomicBool::new(false);
/// Level of the last message that was not a continuation, so that `GGML_LOG_LEVEL_CONT`
/// fragments follow the decision made for the message they continue.
static LAST_LEVEL: AtomicU32 = AtomicU32::new(sys::GGML_LOG_LEVEL_INFO);

/// Initialise llama.cpp's backends once for this process and install deopt's log filter.
///
/// Every constructor in this module calls it, so callers only need it to make the moment of
/// initialisation explicit. Idempotent and thread-safe. The backend is never freed (it lives
/// as long as the process).
///
/// Log messages are kept off stderr unless the environment variable `DEOPT_LLAMA_LOG` is `1`
/// (or [`set_log_verbose`] turned them on): messages below error level are dropped, errors are
/// kept (the last few) for [`last_error`], so deopt's own one-line error can quote them.
pub fn init_backend() {
    INIT.call_once(|| {
        if std::env::var("DEOPT_LLAMA_LOG").is_ok_and(|v| v == "1") {
            VERBOSE.store(true, Ordering::Relaxed);
        }
        // SAFETY: `log_callback` is a plain `extern "C"` function valid for the whole process and
        // ignores its user data, so a null user pointer is fine. Setting it before
        // `llama_backend_init` filters the messages printed during initialisation too.
        unsafe { sys::llama_log_set(Some(log_callback), std::ptr::null_mut()) };
        // SAFETY: called exactly once per process (guarded by `INIT`); takes no arguments.
        unsafe { sys::llama_backend_init() };
    });
}

/// Whether llama.cpp has a device to offload layers to: false in a CPU build, and in a CUDA
/// build on a machine whose driver shows it no GPU (it then runs on the CPU).
pub fn gpu_offload_available() -> bool {
    init_backend();
    // SAFETY: takes no arguments; it only reads the backend registry (loading it if empty).
    unsafe { sys::llama_supports_gpu_offload() }
}

/// Show (`true`) or hide (`false`) llama.cpp's log messages below error level.
///
/// Errors are always shown. Overrides `DEOPT_LLAMA_LOG` from then on.
pub fn set_log_verbose(verbose: bool) {
    init_backend();
    VERBOSE.store(verbose, Ordering::Relaxed);
}

/// llama.cpp's error messages of this process not shown on stderr, the latest last (at most
/// [`KEPT_ERRORS`]).
static ERRORS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
/// How many error messages [`ERRORS`] keeps.
const KEPT_ERRORS: usize = 8;

/// The last error message llama.cpp logged (and deopt kept off stderr), as one trimmed line.
pub fn last_error() -> Option<String> {
    let kept = ERRORS.lock().ok()?;
    kept.iter().rev().map(|m| m.trim()).find(|m| !m.is_empty()).map(|m| m.replace('\n', " "))
}

/// Receives every llama.cpp and ggml log message. Must never unwind into C.
unsafe extern "C" fn log_callback(level: sys::ggml_log_level, text: *const c_char, _: *mut c_void) {
    let level = if level == sys::GGML_LOG_LEVEL_CONT {
        LAST_LEVEL.load(Ordering::Relaxed)
    } else {
        LAST_LEVEL.store(level, Ordering::Relaxed);
        level
    };
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a valid NUL-terminated string that lives for the duration of
    // this call; null was excluded above.
    let bytes = unsafe { CStr::from_ptr(text) }.to_bytes();
    if !VERBOSE.load(Ordering::Relaxed) {
        if level >= sys::GGML_LOG_LEVEL_ERROR {
            if let Ok(mut kept) = ERRORS.lock() {
                let text = String::from_utf8_lossy(bytes);
                match kept.last_mut() {
                    Some(last) if !last.ends_with('\n') => last.push_str(&text),
                    _ => kept.push(text.into_owned()),
                }
                if kept.len() > KEPT_ERRORS {
                    kept.remove(0);
                }
            }
        }
        return;
    }
    // Errors writing to stderr cannot be reported anywhere; ignoring them keeps this panic-free.
    let _ = std::io::stderr().lock().write_all(bytes);
}
