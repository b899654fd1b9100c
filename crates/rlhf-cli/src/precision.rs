//! The arithmetic of a run's matrix products, chosen once at start-up and printed.

use rlhf_model::ops::precision::{self, Precision};
use rlhf_train::PrecisionChoice;

/// `--precision` on the commands that take it: `bf16`, `fp32` or `auto`.
pub fn parse(s: &str) -> Result<PrecisionChoice, String> {
    s.parse()
}

/// Sets the process's precision (`auto`: bf16 where the CPU has a bf16 matrix unit, else fp32)
/// and says on stderr what was chosen and why.
pub fn apply(choice: PrecisionChoice) -> Precision {
    let units = precision::units();
    let p = match choice {
        PrecisionChoice::Auto => precision::default_for_cpu(),
        PrecisionChoice::Bf16 => Precision::Bf16,
        PrecisionChoice::Fp32 => Precision::Fp32,
    };
    precision::set(p);
    let why = match choice {
        PrecisionChoice::Auto => "auto",
        _ => "asked for",
    };
    eprintln!("precision: {p} ({why}; matrix unit: {})", units.describe());
    if p == Precision::Bf16 && !units.amx_bf16 {
        eprintln!(
            "warning: bf16 without AMX runs emulated (bf16-rounded operands on the fp32 kernels): slower than fp32"
        );
    }
    p
}
