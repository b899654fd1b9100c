//! Which arithmetic the matrix products use, and which matrix units this CPU offers.
//!
//! `Bf16` rounds the operands of the large products to bfloat16 and accumulates in fp32 (on the
//! AMX tiles where the CPU has them); everything else — master weights, gradients, moments,
//! norms, softmax, logprobs, losses — stays fp32 in either mode (docs/ARCHITECTURE.md, "Precision").
//!
//! The setting is one per process: the products run inside candle ops that carry no context, on
//! rayon workers as well as on the calling thread, so a per-thread setting would not reach them.
//! Library code defaults to fp32; the CLI chooses at start-up.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    Fp32,
    Bf16,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" | "f32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision {other:?}: expected \"bf16\" or \"fp32\"")),
        }
    }
}

static PROCESS: AtomicU8 = AtomicU8::new(0);

/// The precision every matrix product in this process uses from now on.
pub fn set(p: Precision) {
    PROCESS.store(p as u8, Ordering::SeqCst);
}

/// Runs `f` with the process in precision `p`, then restores the previous setting. Callers of
/// `with` take turns (a lock), so tests comparing precisions in one process do not mix; code
/// that calls neither `with` nor [`set`] meanwhile still sees the setting of the moment.
pub fn with<R>(p: Precision, f: impl FnOnce() -> R) -> R {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let before = current();
    set(p);
    let restore = Restore(before);
    let r = f();
    drop(restore);
    r
}

/// Puts the setting back even when `f` panics (a failing test must not leave bf16 on).
struct Restore(Precision);

impl Drop for Restore {
    fn drop(&mut self) {
        set(self.0);
    }
}

pub fn current() -> Precision {
    match PROCESS.load(Ordering::Relaxed) {
        0 => Precision::Fp32,
        _ => Precision::Bf16,
    }
}

/// The matrix units found at run time (and usable: the kernel granted the tile state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatrixUnits {
    /// AMX tiles with bf16 dot products (`tdpbf16ps`).
    pub amx_bf16: bool,
    /// AVX512-BF16 (`vdpbf16ps`); reported, not used by a kernel yet.
    pub avx512_bf16: bool,
}

impl MatrixUnits {
    /// What start-up lines print: "AMX-BF16", "AVX512-BF16" or "none".
    pub fn describe(&self) -> &'static str {
        match (self.amx_bf16, self.avx512_bf16) {
            (true, _) => "AMX-BF16",
            (false, true) => "AVX512-BF16 (no kernel for it yet: bf16 would run emulated)",
            (false, false) => "none",
        }
    }
}

/// Environment variable that hides the matrix units, as if the CPU had none (tests the fp32
/// fallback on a machine that has them).
pub const NO_AMX_ENV: &str = "RLHF_NO_AMX";

/// Detected once per process. `RLHF_NO_AMX=1` reports no units.
pub fn units() -> MatrixUnits {
    static UNITS: OnceLock<MatrixUnits> = OnceLock::new();
    *UNITS.get_or_init(|| {
        if std::env::var_os(NO_AMX_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
            return MatrixUnits { amx_bf16: false, avx512_bf16: false };
        }
        detect()
    })
}

/// The precision a run gets when it does not choose: bf16 where a matrix unit runs it faster
/// than fp32, fp32 elsewhere.
pub fn default_for_cpu() -> Precision {
    if units().amx_bf16 {
        Precision::Bf16
    } else {
        Precision::Fp32
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> MatrixUnits {
    use std::arch::x86_64::__cpuid_count;
    let max_leaf = __cpuid_count(0, 0).eax;
    if max_leaf < 7 {
        return MatrixUnits { amx_bf16: false, avx512_bf16: false };
    }
    let leaf7 = __cpuid_count(7, 0);
    let leaf7_1 = __cpuid_count(7, 1);
    let amx_tile = leaf7.edx & (1 << 24) != 0;
    let amx_bf16 = leaf7.edx & (1 << 22) != 0;
    let avx512_bf16 = leaf7_1.eax & (1 << 5) != 0 && std::is_x86_feature_detected!("avx512f");
    MatrixUnits { amx_bf16: amx_tile && amx_bf16 && request_tile_state(), avx512_bf16 }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> MatrixUnits {
    MatrixUnits { amx_bf16: false, avx512_bf16: false }
}

/// Linux hands out the 8 KiB AMX tile state only to processes that ask for it
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); without it the first tile
/// instruction faults. The grant covers every thread of the process.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_state() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a plain syscall with integer arguments; it changes no memory of ours.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn request_tile_state() -> bool {
    false
}
