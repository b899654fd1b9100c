//! Data-parallel training's collectives: one [`Collective`] for the process, set once at start-up.
//!
//! A run started by `mpirun -np N` is N ranks (docs/ARCHITECTURE.md, "Data-parallel"): every rank
//! holds the whole model, computes the gradient of its slice of each global batch, and the
//! gradients are summed across ranks ([`Collective::all_reduce_sum_f32`]) before every rank takes
//! the same optimiser step. A run started any other way is one rank ([`Solo`]), and nothing here
//! costs it anything.
//!
//! The process-wide world mirrors `torch.distributed`'s default group: trainers ask [`world`]
//! instead of threading a handle through every call, because every rank runs the same code in
//! the same order and each collective call site is a point all ranks reach together.

mod launch;
#[cfg(feature = "mpi")]
mod mpi_backend;
#[cfg(feature = "nccl")]
mod nccl_backend;

pub use launch::{init, launched_ranks, World};

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("{0}")]
    Launch(String),
    #[error("rank {rank}: {what}")]
    Collective { rank: usize, what: String },
    #[error("ranks disagree: {0}")]
    Diverged(String),
}

pub type Result<T> = std::result::Result<T, DistError>;

/// The operations data-parallel training needs, over every rank of the run. Every rank calls
/// the same operations in the same order; a call returns once every rank has made it.
pub trait Collective: Send + Sync {
    /// `"solo"`, `"mpi"`.
    fn backend(&self) -> &'static str;
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Replaces `buf` on every rank by the element-wise sum of every rank's `buf` (same length
    /// everywhere). Every rank gets the same bits.
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()>;
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Every rank's bytes, in rank order, on every rank.
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Makes `bytes` on every rank a copy of `root`'s.
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()>;
    fn barrier(&self) -> Result<()>;

    /// Rank 0 alone writes files (metrics, samples, checkpoints, the final model).
    fn is_writer(&self) -> bool {
        self.rank() == 0
    }
}

/// One process: every collective is the identity.
#[derive(Debug, Default)]
pub struct Solo;

impl Collective for Solo {
    fn backend(&self) -> &'static str {
        "solo"
    }
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum_f32(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![mine.to_vec()])
    }
    fn broadcast_bytes(&self, _bytes: &mut Vec<u8>, _root: usize) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// Nanoseconds spent in gradient all-reduces since the last [`take_all_reduce_seconds`].
static ALL_REDUCE_NANOS: AtomicU64 = AtomicU64::new(0);

/// Sums `grads` across ranks ([`Collective::all_reduce_sum_f32`]), timing it for the step's
/// `dist/all_reduce_seconds` metric.
pub fn all_reduce_timed(c: &dyn Collective, grads: &mut [f32]) -> Result<()> {
    let t0 = Instant::now();
    let out = c.all_reduce_sum_f32(grads);
    ALL_REDUCE_NANOS.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
    out
}

/// Seconds [`all_reduce_timed`] took since the last call (waiting for slower ranks included).
pub fn take_all_reduce_seconds() -> f64 {
    ALL_REDUCE_NANOS.swap(0, Ordering::Relaxed) as f64 * 1e-9
}

static WORLD: OnceLock<Box<dyn Collective>> = OnceLock::new();
static SOLO: Solo = Solo;

/// The run's collective: what [`init`] set up, or [`Solo`].
pub fn world() -> &'static dyn Collective {
    WORLD.get().map_or(&SOLO as &dyn Collective, |w| w.as_ref())
}

/// Installs `c` as the process's world (once; [`init`] does it for `mpirun` launches).
pub fn set_world(c: Box<dyn Collective>) -> Result<()> {
    WORLD.set(c).map_err(|_| DistError::Launch("the process's collective is already set".into()))
}

/// Rank `rank`'s part of `n` items split into `size` contiguous, balanced ranges (sizes differ
/// by at most one; the first ranks take the larger ones).
pub fn shard(n: usize, rank: usize, size: usize) -> Range<usize> {
    let size = size.max(1);
    (rank * n / size)..((rank + 1) * n / size)
}

/// `value` as bytes for another rank (bincode: exact bits, NaN and infinities included).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    bincode::serialize(value).map_err(|e| DistError::Collective { rank: world().rank(), what: e.to_string() })
}

/// The value [`encode`] made.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    bincode::deserialize(bytes).map_err(|e| DistError::Collective { rank: world().rank(), what: e.to_string() })
}

/// Every rank's `value`, in rank order, on every rank (serialised with bincode, bit-exact: small
/// host-side records only — rows, scores, statistics, never weights).
pub fn all_gather<T: Serialize + DeserializeOwned>(c: &dyn Collective, value: &T) -> Result<Vec<T>> {
    let rank = c.rank();
    let bytes = bincode::serialize(value).map_err(|e| DistError::Collective { rank, what: e.to_string() })?;
    c.all_gather_bytes(&bytes)?
        .iter()
        .enumerate()
        .map(|(from, b)| {
            bincode::deserialize(b)
                .map_err(|e| DistError::Collective { rank, what: format!("a record from rank {from}: {e}") })
        })
        .collect()
}

/// `f` over this rank's [`shard`] of `n` items, the ranks' results concatenated in rank order
/// (so in item order) on every rank: work on items that are independent of one another
/// (sampling prompts, scoring rows, logprob passes) split across ranks. `f` may return any
/// number of results per item (a prompt's group of samples). One rank calls `f(0..n)`.
pub fn shard_map<T, E>(
    c: &dyn Collective,
    n: usize,
    f: impl FnOnce(Range<usize>) -> std::result::Result<Vec<T>, E>,
) -> std::result::Result<Vec<T>, E>
where
    T: Serialize + DeserializeOwned,
    E: From<DistError>,
{
    if c.size() == 1 {
        return f(0..n);
    }
    let mine = f(shard(n, c.rank(), c.size()))?;
    Ok(all_gather(c, &mine)?.into_iter().flatten().collect())
}

/// Fails unless every rank holds the same `digest` (of its parameters, say): ranks that drifted
/// apart would go on training different models without a word.
pub fn check_agreement(c: &dyn Collective, what: &str, digest: u64) -> Result<()> {
    if c.size() == 1 {
        return Ok(());
    }
    let all = all_gather(c, &digest)?;
    match all.iter().position(|&d| d != all[0]) {
        None => Ok(()),
        Some(r) => Err(DistError::Diverged(format!(
            "{what} of rank {r} differs from rank 0's ({:016x} vs {:016x})",
            all[r], all[0]
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_item_once_in_order() {
        for n in 0..20 {
            for size in 1..6 {
                let ranges: Vec<Range<usize>> = (0..size).map(|r| shard(n, r, size)).collect();
                let flat: Vec<usize> = ranges.iter().flat_map(|r| r.clone()).collect();
                assert_eq!(flat, (0..n).collect::<Vec<_>>(), "n={n} size={size}");
                let lens: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
                assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1, "{lens:?}");
            }
        }
    }

    #[test]
    fn one_rank_is_the_identity() {
        let solo = Solo;
        let mut x = [1.5f32, -2.0];
        solo.all_reduce_sum_f32(&mut x).unwrap();
        assert_eq!(x, [1.5, -2.0]);
        assert_eq!(all_gather(&solo, &vec![3u32, 4]).unwrap(), vec![vec![3, 4]]);
        let got: Vec<usize> = shard_map::<_, DistError>(&solo, 5, |r| Ok(r.map(|i| i * 10).collect())).unwrap();
        assert_eq!(got, vec![0, 10, 20, 30, 40]);
        check_agreement(&solo, "parameters", 7).unwrap();
        assert!(world().is_writer() && world().size() == 1, "no init: one rank");
    }
}
